"""Makes small .tflite models for the harness tests and the harness benchmark, with tf_keras and
the TFLite converter (float32, no quantization). The tests use the committed
tests/fixtures/bench_tiny.tflite made by `--tiny`; the benchmark makes its own in a temp folder.

    python benchmarks/harness_make_models.py --tiny tests/fixtures/bench_tiny.tflite
    python benchmarks/harness_make_models.py OUT_DIR        # small / medium / large convnets
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SIZES = {  # name -> (input side, channels per block, blocks)
    "tiny": (16, 8, 2),
    "small": (32, 16, 3),
    "medium": (64, 32, 4),
    "large": (96, 48, 5),
}


def make(name: str, path: Path) -> Path:
    from edgeprune._tf import keras, tf

    side, ch, blocks = SIZES[name]
    keras.utils.set_random_seed(0)
    inp = keras.Input((side, side, 3), batch_size=1)
    x = inp
    for b in range(blocks):
        x = keras.layers.Conv2D(ch * (b + 1), 3, padding="same", activation="relu")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        if b < blocks - 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10)(x)
    model = keras.Model(inp, out)
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", help="output folder, or the output file with --tiny")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    if a.tiny:
        print(make("tiny", Path(a.out)), Path(a.out).stat().st_size)
    else:
        for n in ("small", "medium", "large"):
            out = make(n, Path(a.out) / f"{n}.tflite")
            print(out, out.stat().st_size)


if __name__ == "__main__":
    main()

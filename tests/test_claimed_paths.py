"""Paths the README claims, run for real through the CLI on the tiny CNN trained on Fashion-MNIST:
float16 and dynamic-range exports (`quantize --mode`), with the dtypes `inspect --json` reads from
the flatbuffer and the accuracy measured again here through LiteRT; a SavedModel folder as the
input of `export` and `eval`; and an image folder (one subfolder per class of PNGs) as `--data`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import core_fixtures as cf

pytestmark = pytest.mark.slow

TEST_LIMIT = 300
TRAIN_LIMIT = 64
WROTE = re.compile(r"wrote (?P<path>\S+): (?P<bytes>[\d,]+) bytes \(gzip (?P<gzip>[\d,]+)\)"
                   r"(, accuracy through LiteRT (?P<acc>[\d.]+)%)?(, max \|diff\| vs Keras (?P<diff>\S+))?")


def _wrote(stdout: str) -> dict:
    """The one `wrote ...` line the export commands print."""
    (line,) = stdout.strip().splitlines()
    m = WROTE.fullmatch(line)
    assert m, line
    return m.groupdict()


def _litert_probs(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(np.float32))
    it.invoke()
    return it.get_tensor(out["index"]).copy()


def _inspect(cli_run, path: Path) -> dict:
    r = cli_run("inspect", path, "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _weights(info: dict) -> list[dict]:
    """Constant float or quantized tensors: kernels, biases, folded BN (not the int32 shape operands)."""
    return [t for t in info["tensors"] if t["is_constant"] and t["dtype"] not in ("INT32", "INT64")]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from edgeprune._tf import keras

    path = tiny_model_dir / "tiny.keras"
    return path, keras.models.load_model(path, compile=False)


@pytest.fixture(scope="module")
def cli_data():
    """The test images the CLI draws for --train-limit TRAIN_LIMIT --test-limit TEST_LIMIT."""
    from edgeprune.data import fit_to_model, load_fashion_mnist

    return fit_to_model(load_fashion_mnist(), cf.INPUT, 10, "0_1", train_limit=TRAIN_LIMIT,
                        test_limit=TEST_LIMIT)


def test_float16_export_stores_every_weight_as_float16_and_keeps_the_accuracy(tiny, cli_data, cli_run,
                                                                             tmp_path):
    path, model = tiny
    out = tmp_path / "f16.tflite"
    r = cli_run("quantize", path, "--mode", "float16", "--out", out, "--train-limit", TRAIN_LIMIT,
                "--test-limit", TEST_LIMIT, "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    wrote = _wrote(r.stdout)
    assert wrote["path"] == str(out) and int(wrote["bytes"].replace(",", "")) == out.stat().st_size

    info = _inspect(cli_run, out)
    weights = _weights(info)
    assert len(weights) >= 10 and {t["dtype"] for t in weights} == {"FLOAT16"}
    for t in weights:
        assert t["bytes"] == 2 * int(np.prod(t["shape"])), t["name"]  # two bytes per value
        assert t["quantization"] is None
    kernels = {t["name"] for t in weights if len(t["shape"]) >= 2}
    for layer in ("stem", "conv_a", "dw", "conv_b", "classifier"):
        assert any(f"tiny/{layer}/" in n for n in kernels), (layer, kernels)
    assert info["op_counts"]["DEQUANTIZE"] == len(weights)  # each is widened to float32 once at run time
    assert info["inputs"][0]["dtype"] == info["outputs"][0]["dtype"] == "FLOAT32"

    probs = _litert_probs(out, cli_data.x_test)
    acc = cf.np_accuracy(probs, cli_data.y_test)
    assert float(wrote["acc"]) == pytest.approx(100 * acc, abs=0.05)  # the CLI measured these images
    keras_probs = model(cli_data.x_test, training=False).numpy()
    assert np.max(np.abs(probs - keras_probs)) < 5e-3
    assert np.mean(probs.argmax(-1) == keras_probs.argmax(-1)) >= 0.99
    assert abs(acc - cf.np_accuracy(keras_probs, cli_data.y_test)) <= 0.01
    assert acc > 0.5


def test_dynamic_range_export_stores_large_kernels_as_int8_with_float_io(tiny, cli_data, cli_run, tmp_path):
    path, model = tiny
    out = tmp_path / "dyn.tflite"
    r = cli_run("quantize", path, "--mode", "dynamic", "--out", out, "--train-limit", TRAIN_LIMIT,
                "--test-limit", TEST_LIMIT, "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    wrote = _wrote(r.stdout)

    info = _inspect(cli_run, out)
    weights = _weights(info)
    int8 = [t for t in weights if t["dtype"] == "INT8"]
    # the converter quantizes weights of at least 1024 values; here that is conv_a's 16x3x3x8 kernel
    assert [(t["shape"], t["quantization"]["channels"]) for t in int8] == [([16, 3, 3, 8], 16)]
    assert "tiny/conv_a/" in int8[0]["name"] and int8[0]["bytes"] == 16 * 3 * 3 * 8
    assert int8[0]["quantization"]["zero_point_min"] == int8[0]["quantization"]["zero_point_max"] == 0
    rest = [t for t in weights if t["dtype"] != "INT8"]
    assert rest and {t["dtype"] for t in rest} == {"FLOAT32"}
    assert all(int(np.prod(t["shape"])) < 1024 for t in rest)
    assert "DEQUANTIZE" not in info["op_counts"] and "QUANTIZE" not in info["op_counts"]  # hybrid kernels
    assert info["inputs"][0]["dtype"] == info["outputs"][0]["dtype"] == "FLOAT32"

    probs = _litert_probs(out, cli_data.x_test)
    acc = cf.np_accuracy(probs, cli_data.y_test)
    assert float(wrote["acc"]) == pytest.approx(100 * acc, abs=0.05)
    keras_probs = model(cli_data.x_test, training=False).numpy()
    assert np.mean(probs.argmax(-1) == keras_probs.argmax(-1)) >= 0.95
    assert abs(acc - cf.np_accuracy(keras_probs, cli_data.y_test)) <= 0.03
    assert acc > 0.5


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def test_a_savedmodel_folder_exports_and_evaluates(tiny, cli_run, tmp_path):
    from edgeprune.data import fit_to_model, load_fashion_mnist

    _, model = tiny
    sm = tmp_path / "tiny_savedmodel"
    model.save(sm, save_format="tf")
    assert (sm / "saved_model.pb").is_file()
    before = _digest(sm)
    out = tmp_path / "from_sm.tflite"

    r = cli_run("export", sm, "--out", out, "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    wrote = _wrote(r.stdout)
    assert wrote["path"] == str(out) and float(wrote["diff"]) <= 1e-4
    ds = fit_to_model(load_fashion_mnist(), cf.INPUT, 10, "0_1", test_limit=TEST_LIMIT)
    probs = _litert_probs(out, ds.x_test)
    np.testing.assert_allclose(probs, model(ds.x_test, training=False).numpy(), atol=1e-4)

    r = cli_run("eval", sm, "--test-limit", TEST_LIMIT, "--json", "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    keras_acc = cf.np_accuracy(model(ds.x_test, training=False).numpy(), ds.y_test)
    assert res["samples"] == TEST_LIMIT and res["params"] == model.count_params() == 2442
    assert res["accuracy"] == pytest.approx(keras_acc, abs=1e-9) and keras_acc > 0.5

    r = cli_run("eval", out, "--test-limit", TEST_LIMIT, "--json", "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["samples"] == TEST_LIMIT and res["bytes"] == out.stat().st_size
    assert res["accuracy"] == pytest.approx(cf.np_accuracy(probs, ds.y_test), abs=1e-9)
    assert _digest(sm) == before  # the input folder is untouched


N_IMAGES = 400


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Fashion-MNIST test images as PNGs, one subfolder per class named so that the sorted names give
    the dataset's label order. Every fourth image is RGB and 40x40, so that loading must convert the
    channels and resize."""
    from PIL import Image

    from edgeprune.data import load_fashion_mnist

    raw = load_fashion_mnist()
    root = tmp_path_factory.mktemp("images") / "fashion"
    pick = np.random.default_rng(7).choice(len(raw.x_test), N_IMAGES, replace=False)
    for n, i in enumerate(pick):
        label = int(raw.y_test[i])
        d = root / f"{label:02d}_{re.sub(r'[^a-z]+', '_', raw.class_names[label].lower())}"
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(raw.x_test[i][..., 0])
        if n % 4 == 0:
            img = img.convert("RGB").resize((40, 40), Image.BILINEAR)
        img.save(d / f"{n:04d}.png")
    assert len(list(root.iterdir())) == 10
    return root


def test_an_image_folder_is_data_for_eval_and_int8_calibration(tiny, image_folder, cli_run, tmp_path):
    path, _ = tiny
    n_test = round(N_IMAGES * 0.2)
    r = cli_run("eval", path, "--data", image_folder, "--json", "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    keras_res = json.loads(r.stdout)
    assert keras_res["samples"] == n_test
    assert keras_res["accuracy"] > 0.5  # chance is 0.1: labels follow the folders, channels and sizes fit

    out = tmp_path / "q.tflite"
    r = cli_run("quantize", path, "--mode", "int8", "--data", image_folder, "--out", out, "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    wrote = _wrote(r.stdout)
    info = _inspect(cli_run, out)
    assert {t["dtype"] for t in _weights(info) if len(t["shape"]) >= 2} == {"INT8"}
    assert info["inputs"][0]["dtype"] == "FLOAT32"

    r = cli_run("eval", out, "--data", image_folder, "--json", "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    tfl_res = json.loads(r.stdout)
    assert tfl_res["samples"] == n_test
    assert 100 * tfl_res["accuracy"] == pytest.approx(float(wrote["acc"]), abs=0.05)  # the same split
    assert abs(tfl_res["accuracy"] - keras_res["accuracy"]) <= 0.05

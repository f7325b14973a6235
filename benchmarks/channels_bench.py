"""What structured channel pruning buys: MobileNetV2 on Fashion-MNIST (accuracy through TFLite, bytes,
host latency) and MobileNetV2 at 224x224 (size, latency, params, MACs). Writes the channels section
of BENCHMARKS.md to benchmarks/results/channels.md and the raw numbers to runs/bench/channels.json.

    python benchmarks/channels_bench.py                     # full: 3 epochs, 1 fine-tune epoch each
    python benchmarks/channels_bench.py --quick             # a smaller training set, fewer epochs

Variants, each fine-tuned the same way after the float32 baseline is trained: TF-MOT 50 % + int8,
channel pruning 30 % and 50 % + int8, and the latency-aware mode aimed at a quarter of the float32
baseline's 1-thread latency (+ int8)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from android_bench.litert_runner import measure  # noqa: E402
from edgeprune import progress  # noqa: E402
from edgeprune._tf import keras, tf  # noqa: E402
from edgeprune.channels import ChannelConfig, ChannelGraph, prune_channels  # noqa: E402
from edgeprune.channels.count import Counter  # noqa: E402
from edgeprune.data import fit_to_model, load_fashion_mnist, representative_set  # noqa: E402
from edgeprune.errors import PruningError  # noqa: E402
from edgeprune.export import TFLiteModel, convert, gzip_size  # noqa: E402
from edgeprune.models import build_builtin  # noqa: E402
from edgeprune.train import compile_classifier, fit, keras_accuracy  # noqa: E402


class StderrReporter(progress.Reporter):
    def log(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)


def latency(content: bytes, threads: int, runs: int, min_secs: float) -> dict:
    fd, path = tempfile.mkstemp(suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        r = measure(path, threads=threads, runs=runs, warmup=5, min_secs=min_secs)
    finally:
        os.unlink(path)
    s = r["summary"]
    return {"threads": threads, "median_ms": s["median_us"] / 1000, "p5_ms": s["p5_us"] / 1000,
            "p95_ms": s["p95_us"] / 1000, "count": s["count"]}


def describe(name, content, model, result, ds, args, extra=None):
    args.artifacts.mkdir(parents=True, exist_ok=True)
    path = args.artifacts / ("".join(c if c.isalnum() else "_" for c in name).strip("_") + ".tflite")
    path.write_bytes(content)  # kept so latency can be re-measured on a quiet machine or a device
    row = {"name": name, "file": str(path), "bytes": len(content), "gzip_bytes": gzip_size(content),
           "params": model.count_params(),
           "macs": Counter(ChannelGraph(model)).count().macs if result is None else result.macs_after,
           "latency": [latency(content, t, args.runs, args.min_secs) for t in (1, 2)]}
    if ds is not None:
        pred = TFLiteModel(content).predict(ds.x_test)
        row["tflite_accuracy"] = float(np.mean(pred.argmax(axis=1) == ds.y_test))
    if result is not None:
        row.update(channels_before=result.plan.channels_before, channels_after=result.plan.channels_after,
                   params_before=result.params_before, macs_before=result.macs_before)
    row.update(extra or {})
    print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'latency'})} "
          f"lat1={row['latency'][0]['median_ms']:.3f} ms", file=sys.stderr, flush=True)
    return row


def fine_tuner(ds, args):
    def run(model, epochs):
        compile_classifier(model, args.lr)
        fit(model, ds.x_train, ds.y_train, epochs, args.batch, "fine-tune")
        return model
    return run


def fashion(args) -> dict:
    raw = load_fashion_mnist()
    base = build_builtin("mobilenet_v2", input_shape=(32, 32, 1), classes=10, alpha=0.35)
    ds = fit_to_model(raw, (32, 32, 1), 10, train_limit=args.train_limit, test_limit=args.test_limit)
    compile_classifier(base, args.lr)
    t = time.time()
    fit(base, ds.x_train, ds.y_train, args.epochs, args.batch, "baseline")
    print(f"baseline trained in {time.time() - t:.0f} s, keras accuracy {keras_accuracy(base, ds.x_test, ds.y_test):.4f}",
          file=sys.stderr)
    rep = representative_set(ds, 200)
    calib = (ds.x_train[:512], ds.y_train[:512])
    rows = []
    f32 = convert(base, "float32")
    rows.append(describe("float32 baseline", f32, base, None, ds, args))
    base_ms = rows[0]["latency"][0]["median_ms"]
    rows.append(describe("baseline int8", convert(base, "int8", rep), base, None, ds, args))

    from edgeprune.sparsity import prune as tfmot_prune

    if not args.only_latency_aware:
        clone = keras.models.clone_model(base)
        clone.set_weights(base.get_weights())
        sparse, report = tfmot_prune(clone, "unstructured", ds.x_train, ds.y_train, target=0.5,
                                     epochs=args.ft_epochs, batch_size=args.batch, learning_rate=args.lr)
        rows.append(describe("TF-MOT 50 % + int8", convert(sparse, "int8", rep), sparse, None, ds, args))
    for ratio in () if args.only_latency_aware else (0.3, 0.5):
        clone = keras.models.clone_model(base)
        clone.set_weights(base.get_weights())
        result = prune_channels(clone, ChannelConfig(ratio=ratio, criterion="l2", round_to=8), data=calib,
                                fine_tune=fine_tuner(ds, args), fine_tune_epochs=args.ft_epochs)
        rows.append(describe(f"channels {ratio:.0%} + int8", convert(result.model, "int8", rep), result.model,
                             result, ds, args))
    notes = []
    if not args.skip_latency_aware:
        target = base_ms * args.latency_fraction
        cfg = ChannelConfig(latency_ms=target, criterion="l2", round_to=8, latency_mode="int8", max_ratio=0.9)
        t = time.time()
        try:
            result = prune_channels(base, cfg, data=(ds.x_train[:256], ds.y_train[:256]),
                                    fine_tune=fine_tuner(ds, args), fine_tune_epochs=args.ft_epochs)
        except PruningError as e:
            notes.append(f"latency-aware mode aimed at {target:.3f} ms ({args.latency_fraction:g} of the float32 "
                         f"baseline at 1 thread) failed after {time.time() - t:.0f} s: {e}")
        else:
            rows.append(describe(f"latency-aware {target:.3f} ms + int8", convert(result.model, "int8", rep),
                                 result.model, result, ds, args,
                                 {"latency_target_ms": target, "search_s": time.time() - t,
                                  "search_latency_ms": [result.latency_ms_before, result.latency_ms_after],
                                  "search_steps": len(result.steps)}))
    return {"rows": rows, "train": len(ds.x_train), "test": len(ds.x_test), "epochs": args.epochs,
            "ft_epochs": args.ft_epochs, "notes": notes}


def at_224(args) -> dict:
    base = build_builtin("mobilenet_v2", input_shape=(224, 224, 3), classes=1000, alpha=1.0)
    rng = np.random.default_rng(0)
    rep = rng.uniform(0, 1, size=(8, 224, 224, 3)).astype("float32")
    rows = [describe("float32 baseline", convert(base, "float32"), base, None, None, args),
            describe("baseline int8", convert(base, "int8", rep), base, None, None, args)]
    for ratio in (0.3, 0.5):
        result = prune_channels(base, ChannelConfig(ratio=ratio, criterion="l2", round_to=8))
        rows.append(describe(f"channels {ratio:.0%} float32", convert(result.model, "float32"), result.model,
                             result, None, args))
        rows.append(describe(f"channels {ratio:.0%} + int8", convert(result.model, "int8", rep), result.model,
                             result, None, args))
    return {"rows": rows}


def table(rows, with_accuracy: bool) -> str:
    head = ["variant", "bytes", "params", "MACs", "ms @1t (p5-p95)", "x @1t", "ms @2t", "x @2t"]
    if with_accuracy:
        head.insert(1, "TFLite accuracy")
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    b1, b2 = rows[0]["latency"][0]["median_ms"], rows[0]["latency"][1]["median_ms"]
    for r in rows:
        l1, l2 = r["latency"]
        cells = [r["name"], f"{r['bytes']:,}", f"{r['params']:,}", f"{r['macs']:,}" if r.get("macs") else "-",
                 f"{l1['median_ms']:.3f} ({l1['p5_ms']:.3f}-{l1['p95_ms']:.3f})", f"{b1 / l1['median_ms']:.2f}",
                 f"{l2['median_ms']:.3f}", f"{b2 / l2['median_ms']:.2f}"]
        if with_accuracy:
            cells.insert(1, f"{r['tflite_accuracy']:.2%}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def render(results: dict, command: str, note: str = "") -> str:
    out = ["## Structured channel pruning (edgeprune.channels)", "",
           f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
           f"TensorFlow {tf.__version__}, Python {platform.python_version()}. Latency: host LiteRT with XNNPACK, "
           f"median of >= {results['args']['runs']} invokes and >= {results['args']['min_secs']} s; `x` is the "
           f"float32 baseline's latency divided by the variant's. MACs are counted by edgeprune.channels for the "
           f"pruned variants. Command: `{command}`.", ""] + ([note, ""] if note else [])
    results = {k: v for k, v in results.items() if k != "command"}
    if "fashion" in results:
        f = results["fashion"]
        out += ["### MobileNetV2 (alpha 0.35, 32x32x1) on Fashion-MNIST", "",
                f"Trained {f['epochs']} epochs on {f['train']:,} images; every pruned variant fine-tuned "
                f"{f['ft_epochs']} epoch(s); accuracy through TFLite on {f['test']:,} test images.", "",
                table(f["rows"], True), ""] + [f"- {n}" for n in f.get("notes", [])] + [""]
    if "at_224" in results:
        out += ["### MobileNetV2 (alpha 1.0) at 224x224, untrained (size and latency only)", "",
                table(results["at_224"]["rows"], False), ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20k training images, 2 epochs, 0.5 fine-tune epoch")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--ft-epochs", type=float, default=1)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--min-secs", type=float, default=1.0)
    ap.add_argument("--skip-latency-aware", action="store_true")
    ap.add_argument("--only-latency-aware", action="store_true", help="Fashion-MNIST: baselines and latency-aware only")
    ap.add_argument("--latency-fraction", type=float, default=0.25,
                    help="latency-aware target as a fraction of the float32 baseline's 1-thread latency")
    ap.add_argument("--skip-224", action="store_true")
    ap.add_argument("--skip-fashion", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/channels.md")
    ap.add_argument("--json", type=Path, default=ROOT / "runs/bench/channels.json")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "runs/bench/channels")
    ap.add_argument("--note", default="", help="a sentence on the measuring conditions, put under the header")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="render --out from earlier --json files (sections taken from each) without running")
    args = ap.parse_args()
    if args.merge:
        results, commands = {}, []
        for path in args.merge:
            part = json.loads(path.read_text())
            results.update({k: v for k, v in part.items() if k != "args"})
            results.setdefault("args", part["args"])
            commands.append(part.get("command", str(path)))
        args.out.write_text(render(results, "`; `".join(commands), args.note))
        print(f"wrote {args.out}", file=sys.stderr)
        return
    if args.quick:
        args.train_limit, args.test_limit = args.train_limit or 20000, args.test_limit or 5000
        args.epochs, args.ft_epochs = min(args.epochs, 2), min(args.ft_epochs, 0.5)
    progress.set_reporter(StderrReporter())
    keras.utils.set_random_seed(0)
    command = "python " + " ".join(["benchmarks/channels_bench.py", *sys.argv[1:]])
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "command": command}
    if not args.skip_fashion:
        results["fashion"] = fashion(args)
    if not args.skip_224:
        results["at_224"] = at_224(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, command, args.note))
    print(f"wrote {args.out} and {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

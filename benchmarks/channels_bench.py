"""What structured channel pruning buys: MobileNetV2 on Fashion-MNIST (accuracy through TFLite, bytes,
host latency) and MobileNetV2 at 224x224 (size, latency, params, MACs). Writes the results model of
each part to benchmarks/results/channels.json and the channels section of BENCHMARKS.md.

    python benchmarks/channels_bench.py                     # full: 3 epochs, 1 fine-tune epoch each
    python benchmarks/channels_bench.py --quick             # a smaller training set, fewer epochs
    python benchmarks/channels_bench.py --render-only       # the section from channels.json
    python benchmarks/channels_bench.py --smoke             # the whole path in minutes, nothing stored

Latency is timed through the bench harness on this host (`local`), paired: every file of a part
loaded in one runner process and timed interleaved in shuffled blocks, so each speed-up is a
paired ratio against the part's float32 baseline with a bootstrap interval. A run stores the
parts it measured (--skip-fashion, --skip-224) and keeps the others' stored results.

Variants, each fine-tuned the same way after the float32 baseline is trained: TF-MOT 50 % + int8,
channel pruning 30 % and 50 % + int8, and the latency-aware mode aimed at a quarter of the float32
baseline's 1-thread latency (+ int8)."""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _shared import (HOST, QUICK_DIR, RESULTS, ROOT, guarded, publish, read_results, read_stored, speedup_cell,
                     stored, timing, timing_text)

from edgeprune import progress  # noqa: E402
from edgeprune._tf import keras, tf  # noqa: E402
from edgeprune.channels import ChannelConfig, ChannelGraph, prune_channels  # noqa: E402
from edgeprune.channels.count import Counter  # noqa: E402
from edgeprune.data import fit_to_model, load_fashion_mnist, representative_set  # noqa: E402
from edgeprune.errors import PruningError  # noqa: E402
from edgeprune.export import TFLiteModel, convert, gzip_size  # noqa: E402
from edgeprune.models import build_builtin  # noqa: E402
from edgeprune.report.tables import ms, table  # noqa: E402
from edgeprune.results import Report, Variant  # noqa: E402
from edgeprune.results.readers import add_bench, finish  # noqa: E402
from edgeprune.train import compile_classifier, fit, keras_accuracy  # noqa: E402

STORE = RESULTS / "channels.json"
SCHEMA, VERSION = "edgeprune.bench.channels", 1
THREADS = [1, 2]


class StderrReporter(progress.Reporter):
    def log(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)


def settings(args, threads=THREADS, paired=True):
    from edgeprune.bench import BenchSettings

    return BenchSettings(threads=list(threads), runs=args.runs, warmup=5, min_secs=args.min_secs, paired=paired)


def baseline_ms(row: dict, args) -> float:
    """The float32 baseline's median at 1 thread, timed alone through the harness: what the
    latency-aware mode's target is a fraction of."""
    from edgeprune.bench import bench_models

    run = bench_models([row["file"]], [HOST], settings(args, [1], paired=False))
    return run.results[0].stats.median_us / 1000


def describe(part, name, content, model, result, ds, args, extra=None):
    """A variant's file (kept under --artifacts, for re-measuring on a quiet machine or a device)
    and what is known of it before timing: bytes, parameters, MACs, accuracy through TFLite."""
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    path = args.artifacts / f"{part}-{slug}.tflite"  # file names are unique across parts
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    row = {"name": name, "file": str(path), "bytes": len(content), "gzip_bytes": gzip_size(content),
           "sha256": hashlib.sha256(content).hexdigest(), "params": model.count_params(),
           "macs": Counter(ChannelGraph(model)).count().macs if result is None else result.macs_after}
    if ds is not None:
        pred = TFLiteModel(content).predict(ds.x_test)
        row["tflite_accuracy"] = float(np.mean(pred.argmax(axis=1) == ds.y_test))
    if result is not None:
        row.update(channels_before=result.plan.channels_before, channels_after=result.plan.channels_after,
                   params_before=result.params_before, macs_before=result.macs_before)
    row.update(extra or {})
    print(f"{name}: {row['bytes']:,} bytes, {row['params']:,} params, accuracy {row.get('tflite_accuracy', '-')}",
          file=sys.stderr, flush=True)
    return row


def measure(part: str, rows: list[dict], args) -> dict:
    """Times every file of a part side by side through the bench harness (the float32 baseline,
    first, is the reference) and returns the part's stored result: the results model of the files
    and their measurements, and how they were timed."""
    from edgeprune.bench import bench_models

    run = bench_models([r["file"] for r in rows], [HOST], settings(args))
    report = Report(sources=[])
    for r in rows:
        report.variants.append(Variant(
            name=r["name"], source=part, file=r["file"], bytes=r["bytes"], gzip_bytes=r["gzip_bytes"],
            sha256=r["sha256"], accuracy=r.get("tflite_accuracy"), params=r["params"],
            details={k: v for k, v in r.items() if k not in ("name", "file", "bytes", "gzip_bytes", "sha256",
                                                             "tflite_accuracy", "params")}))
    add_bench(report, run, part, None)  # joined to the variants above by sha256
    report = finish(report)
    return {"timing": timing("script", run.settings.to_dict(), report), "report": stored(report)}


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
    acc = keras_accuracy(base, ds.x_test, ds.y_test)
    print(f"baseline trained in {time.time() - t:.0f} s, keras accuracy {acc:.4f}", file=sys.stderr)
    rep = representative_set(ds, 200)
    calib = (ds.x_train[:512], ds.y_train[:512])
    rows = []
    f32 = convert(base, "float32")
    rows.append(describe("fashion", "float32 baseline", f32, base, None, ds, args))
    rows.append(describe("fashion", "baseline int8", convert(base, "int8", rep), base, None, ds, args))

    from edgeprune.sparsity import prune as tfmot_prune

    if not args.only_latency_aware:
        clone = keras.models.clone_model(base)
        clone.set_weights(base.get_weights())
        sparse, report = tfmot_prune(clone, "unstructured", ds.x_train, ds.y_train, target=0.5,
                                     epochs=args.ft_epochs, batch_size=args.batch, learning_rate=args.lr)
        rows.append(describe("fashion", "TF-MOT 50 % + int8", convert(sparse, "int8", rep), sparse, None, ds, args))
    for ratio in () if args.only_latency_aware else (0.3, 0.5):
        clone = keras.models.clone_model(base)
        clone.set_weights(base.get_weights())
        result = prune_channels(clone, ChannelConfig(ratio=ratio, criterion="l2", round_to=8), data=calib,
                                fine_tune=fine_tuner(ds, args), fine_tune_epochs=args.ft_epochs)
        rows.append(describe("fashion", f"channels {ratio:.0%} + int8", convert(result.model, "int8", rep),
                             result.model, result, ds, args))
    notes = []
    if not args.skip_latency_aware:
        target = baseline_ms(rows[0], args) * args.latency_fraction
        cfg = ChannelConfig(latency_ms=target, criterion="l2", round_to=8, latency_mode="int8", max_ratio=0.9)
        t = time.time()
        try:
            result = prune_channels(base, cfg, data=(ds.x_train[:256], ds.y_train[:256]),
                                    fine_tune=fine_tuner(ds, args), fine_tune_epochs=args.ft_epochs)
        except PruningError as e:
            notes.append(f"latency-aware mode aimed at {target:.3f} ms ({args.latency_fraction:g} of the float32 "
                         f"baseline at 1 thread) failed after {time.time() - t:.0f} s: {e}")
        else:
            rows.append(describe("fashion", f"latency-aware {target:.3f} ms + int8",
                                 convert(result.model, "int8", rep), result.model, result, ds, args,
                                 {"latency_target_ms": target, "search_s": time.time() - t,
                                  "search_latency_ms": [result.latency_ms_before, result.latency_ms_after],
                                  "search_steps": len(result.steps)}))
    return {**measure("fashion", rows, args), "train": len(ds.x_train), "test": len(ds.x_test),
            "epochs": args.epochs, "ft_epochs": args.ft_epochs, "notes": notes}


def at_224(args) -> dict:
    base = build_builtin("mobilenet_v2", input_shape=(224, 224, 3), classes=1000, alpha=1.0)
    rng = np.random.default_rng(0)
    rep = rng.uniform(0, 1, size=(8, 224, 224, 3)).astype("float32")
    rows = [describe("at_224", "float32 baseline", convert(base, "float32"), base, None, None, args),
            describe("at_224", "baseline int8", convert(base, "int8", rep), base, None, None, args)]
    for ratio in (0.3, 0.5):
        result = prune_channels(base, ChannelConfig(ratio=ratio, criterion="l2", round_to=8))
        rows.append(describe("at_224", f"channels {ratio:.0%} float32", convert(result.model, "float32"),
                             result.model, result, None, args))
        rows.append(describe("at_224", f"channels {ratio:.0%} + int8", convert(result.model, "int8", rep),
                             result.model, result, None, args))
    return measure("at_224", rows, args)


def part_table(part: dict, with_accuracy: bool) -> str:
    report = read_stored(part["report"])
    published = part.get("published_speedups")
    head = ["variant", "bytes", "params", "MACs", "ms @1t (p5-p95)", "x @1t", "ms @2t", "x @2t"]
    if with_accuracy:
        head.insert(1, "TFLite accuracy")
    rows = []
    for v in report.variants:
        l1, l2 = (report.measurement(v.name, HOST, t) for t in THREADS)
        cells = [v.name, f"{v.bytes:,}", f"{v.params:,}", f"{v.details['macs']:,}" if v.details.get("macs") else "-",
                 f"{ms(l1.median_ms)} ({ms(l1.p5_ms)}-{ms(l1.p95_ms)})" if l1 else "-",
                 speedup_cell(report, v, 1, published) if l1 else "-", ms(l2.median_ms) if l2 else "-",
                 speedup_cell(report, v, 2, published) if l2 else "-"]
        if with_accuracy:
            cells.insert(1, f"{v.accuracy:.2%}")
        rows.append(cells)
    return table(head, rows, markdown=True)


def legacy_timing_text(t: dict) -> str:
    """Results kept from before this script timed through the harness (converted once from the
    section, every number kept)."""
    return (f"Latency: host LiteRT with XNNPACK, measured before paired timing: each file timed alone, one after "
            f"the other, median of >= {t['runs']} invokes and >= {t['min_secs']:g} s; x is the float32 baseline's "
            f"median divided by the variant's, measured apart, with no interval (the stored results predate "
            f"paired ratios; the raw numbers behind them are not kept, so these are the section's as published).")


def part_header(part: dict) -> list[str]:
    m, t = part["machine"], part["timing"]
    how = legacy_timing_text(t) if t["kind"] == "unpaired" else timing_text(t, read_stored(part["report"]))
    return [f"Command: `{part['command']}`. Machine: {m['cpu']}, {m['cores']} cores (shared), TensorFlow "
            f"{m['tensorflow']}, Python {m['python']}. {how}", ""]


def render(res: dict) -> str:
    out = ["## Structured channel pruning (edgeprune.channels)", "",
           "`x` is the float32 baseline's latency divided by the variant's (higher is better), at the same input "
           "size. MACs are counted by edgeprune.channels for the pruned variants.", ""]
    out += [res["note"], ""] if res.get("note") else []
    parts = res["parts"]
    if "fashion" in parts:
        f = parts["fashion"]
        out += ["### MobileNetV2 (alpha 0.35, 32x32x1) on Fashion-MNIST", "", *part_header(f),
                f"Trained {f['epochs']:g} epochs on {f['train']:,} images; every pruned variant fine-tuned "
                f"{f['ft_epochs']:g} epoch(s); accuracy through TFLite on {f['test']:,} test images.", "",
                part_table(f, True), ""] + [f"- {n}" for n in f.get("notes", [])] + [""]
    if "at_224" in parts:
        out += ["### MobileNetV2 (alpha 1.0) at 224x224, untrained (size and latency only)", "",
                *part_header(parts["at_224"]), part_table(parts["at_224"], False), ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k training images, 2 epochs, 0.5 fine-tune epoch")
    ap.add_argument("--smoke", action="store_true", help="1,000 images, a fraction of an epoch, short timing, no "
                                                         f"latency-aware search, into {QUICK_DIR}; stores nothing")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--ft-epochs", type=float, default=1)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--runs", type=int, default=50, help="samples per file and thread count, at least")
    ap.add_argument("--min-secs", type=float, default=1.0, help="timed seconds per file and thread count, at least")
    ap.add_argument("--skip-latency-aware", action="store_true")
    ap.add_argument("--only-latency-aware", action="store_true", help="Fashion-MNIST: baselines and latency-aware only")
    ap.add_argument("--latency-fraction", type=float, default=0.25,
                    help="latency-aware target as a fraction of the float32 baseline's 1-thread latency")
    ap.add_argument("--skip-224", action="store_true")
    ap.add_argument("--skip-fashion", action="store_true")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "runs/bench/channels")
    ap.add_argument("--note", default=None, help="a sentence on the measuring conditions, put under the header")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from channels.json")
    args = ap.parse_args()
    if args.render_only:
        publish("channels", None, render(read_results("channels", SCHEMA, VERSION)))
        return 0
    if args.quick:
        args.train_limit, args.test_limit = args.train_limit or 20000, args.test_limit or 5000
        args.epochs, args.ft_epochs = min(args.epochs, 2), min(args.ft_epochs, 0.5)
    if args.smoke:
        args.train_limit, args.test_limit, args.epochs, args.ft_epochs = 1000, 200, 0.2, 0.1
        args.runs, args.min_secs, args.skip_latency_aware, args.artifacts = 10, 0.05, True, QUICK_DIR / "channels"
    progress.set_reporter(StderrReporter())
    keras.utils.set_random_seed(0)
    command = "python " + " ".join(["benchmarks/channels_bench.py", *sys.argv[1:]])
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "tensorflow": tf.__version__, "python": platform.python_version()}
    res = {"schema": SCHEMA, "version": VERSION, "parts": {}}
    if not args.smoke and STORE.is_file():
        res = read_results("channels", SCHEMA, VERSION)  # parts not measured now keep their stored results
    measured = {}
    if not args.skip_fashion:
        measured["fashion"] = fashion(args)
    if not args.skip_224:
        measured["at_224"] = at_224(args)
    for name, part in measured.items():
        res["parts"][name] = {"command": command, "machine": machine, **part}
    if args.note is not None:
        res["note"] = args.note
    elif set(measured) >= set(res["parts"]):
        res.pop("note", None)  # every part measured again: the stored note spoke of the old measurements
    res["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    publish("channels", res, render(res), quick=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))

"""The headline result: MobileNetV2 0.35 on Fashion-MNIST, trained to convergence, against float32,
int8, TF-MOT's best and edgeprune's structural variants, in one table.

    python benchmarks/headline_bench.py                       # run the recipe, then measure (about 1.5 h on 2 cores)
    python benchmarks/headline_bench.py --from-run runs/bench/headline   # measure an existing run again

The recipe (benchmarks/recipes/headline.toml) is run end to end through `edgeprune run`: the
converged baseline (cached), every variant, their .tflite files at 32x32 and the same networks
re-instantiated at 224x224. Accuracy is top-1 through LiteRT on all 10,000 test images. Latency is
measured here at 1 thread with the models interleaved: every model is loaded once, then timed in
short blocks, round after round, in a shuffled order, so that a change of the shared machine's
load hits every model alike and the speed-ups (medians against float32) are ratios measured side
by side. Writes benchmarks/results/headline.json and the headline section of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from android_bench.litert_runner import _random_input, load_interpreter, summarize  # noqa: E402

RECIPE = ROOT / "benchmarks" / "recipes" / "headline.toml"
RESULTS = ROOT / "benchmarks" / "results" / "headline.json"
SECTION = ROOT / "benchmarks" / "results" / "headline.md"
TARGET = {"loss_pt": 1.0, "speedup": 5.0, "bytes_ratio": 10.0}


def run_recipe(out: Path) -> None:
    cmd = [str(ROOT / ".venv" / "bin" / "edgeprune"), "run", str(RECIPE), "--out", str(out), "--force"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def interleaved(paths: dict[str, Path], threads: int, rounds: int, block_secs: float, seed: int = 0) -> tuple[dict, str]:
    """Median latency (us) of every model, timed in blocks of `block_secs`, `rounds` times each,
    in a new random order every round. Returns name -> summary (with the raw samples)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    interps = {}
    for name, path in paths.items():
        interp, runtime, version = load_interpreter(str(path), threads, True)
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], _random_input(detail, rng))
        for _ in range(5):
            interp.invoke()
        interps[name] = interp
    samples = {name: [] for name in paths}
    order = list(paths)
    shuffle = random.Random(seed)
    for r in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            interp = interps[name]
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                interp.invoke()
                now = time.perf_counter()
                samples[name].append((now - t) * 1e6)
                if now - start >= block_secs:
                    break
        print(f"  latency round {r + 1}/{rounds}", flush=True)
    return {name: {**summarize(s), "samples_us": s} for name, s in samples.items()}, f"{runtime} {version}"


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    have = set(flags.split(":", 1)[1].split())
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    return ", ".join(f for f in wanted if f in have) or "none of " + ", ".join(wanted)


def measure(run: Path, rounds: int, block_secs: float) -> dict:
    report = json.loads((run / "report.json").read_text())
    variants = [v for v in report["variants"] if v["status"] == "ok"]
    base = next(v for v in variants if v["name"] == "baseline")
    at = {}
    for v in variants:
        big = next((a for a in v.get("latency_at", []) if a.get("tflite")), None)
        at[v["name"]] = run / big["tflite"] if big else None
    small = {v["name"]: run / v["tflite"] for v in variants}
    print(f"timing {len(small)} models at 32x32, interleaved", flush=True)
    lat32, runtime = interleaved(small, 1, rounds, block_secs)
    big_paths = {k: p for k, p in at.items() if p is not None}
    print(f"timing {len(big_paths)} models at 224x224, interleaved", flush=True)
    lat224, _ = interleaved(big_paths, 1, rounds, block_secs * 4)
    rows = []
    base_acc = base["accuracy"]
    for v in variants:
        name = v["name"]
        s32 = lat32[base["name"]]["median_us"] / lat32[name]["median_us"]
        s224 = (lat224[base["name"]]["median_us"] / lat224[name]["median_us"]) if name in lat224 else None
        rows.append({
            "name": name, "tflite_accuracy": v["accuracy"], "baseline_accuracy": base_acc,
            "loss_pt": round(100 * (base_acc - v["accuracy"]), 2), "bytes": v["bytes"], "float32_bytes": base["bytes"],
            "bytes_ratio": base["bytes"] / v["bytes"], "speedup_32": s32, "speedup_224": s224,
            "median_us_32": lat32[name]["median_us"], "median_us_224": lat224[name]["median_us"] if name in lat224
            else None, "params": v.get("params"), "quantize": v["spec"]["quantize"], "prune": v["spec"]["prune"],
            "blocks_removed": (v.get("blocks") or {}).get("removed", []),
            "channels": (v.get("channels") or {}).get("config", {}).get("ratio") if v.get("channels") else None,
            "fine_tune_epochs": v["spec"].get("fine_tune_epochs"), "distill": v["spec"].get("distill"),
            "spec": {k: v["spec"].get(k) for k in ("lr_schedule", "distill", "channels", "blocks",
                                                    "fine_tune_epochs", "target_sparsity")},
        })
    meets = [r for r in rows if r["loss_pt"] <= TARGET["loss_pt"] and r["speedup_32"] >= TARGET["speedup"]
             and (r["speedup_224"] or 0) >= TARGET["speedup"] and r["bytes_ratio"] >= TARGET["bytes_ratio"]]
    return {
        "schema": "edgeprune.bench.headline", "version": 1, "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT)
                                                                       else run),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": report["machine"]["cpu"], "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
                    "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()},
        "versions": report["versions"], "runtime": runtime, "threads": 1, "rounds": rounds,
        "block_secs": {"32": block_secs, "224": block_secs * 4},
        "baseline": {"epochs": report["baseline"]["epochs"], "keras_accuracy": report["baseline"]["keras_accuracy"],
                     "curve": report["baseline"].get("curve", []), "recipe": report["recipe"]["baseline"]},
        "target": TARGET, "met_by": [r["name"] for r in meets], "variants": rows,
    }


def pareto(rows: list[dict]) -> list[str]:
    """Variants no other beats on accuracy, 32x32 speed-up and bytes at once."""
    def beats(a, b):
        ge = (a["tflite_accuracy"] >= b["tflite_accuracy"] and a["speedup_32"] >= b["speedup_32"]
              and a["bytes"] <= b["bytes"])
        gt = (a["tflite_accuracy"] > b["tflite_accuracy"] or a["speedup_32"] > b["speedup_32"]
              or a["bytes"] < b["bytes"])
        return ge and gt

    return [r["name"] for r in rows if not any(beats(o, r) for o in rows if o is not r)]


def section(res: dict) -> str:
    m, ver = res["machine"], res["versions"]
    b = res["baseline"]
    curve = b["curve"]
    lines = ["## The headline: MobileNetV2 0.35 on Fashion-MNIST, converged, then compressed", "",
             f"`python benchmarks/headline_bench.py` ({res['created']}). Machine: {m['cpu']}, {m['cores']} cores "
             f"({m['cpu_flags']}), load average {', '.join(map(str, m['load_average']))} when timing ended. "
             f"TensorFlow {ver.get('tensorflow')}, tf-keras {ver.get('tf-keras')}, TF-MOT "
             f"{ver.get('tensorflow-model-optimization')}, ai-edge-litert {ver.get('ai-edge-litert')} ({res['runtime']}, "
             f"XNNPACK), Python {m['python']}.", "",
             f"Baseline: {b['epochs']:g} epochs, Adam {b['recipe']['learning_rate']} with "
             f"{b['recipe']['lr_schedule']} decay after {b['recipe']['warmup_epochs']:g} warm-up epoch(s), batch "
             f"{b['recipe']['batch_size']}, augmentation {'on' if b['recipe']['augment'] else 'off'}; Keras test "
             f"accuracy {b['keras_accuracy']:.2%}. Accuracy: top-1 through LiteRT on all 10,000 test images. "
             f"Latency: 1 thread, every model loaded in one process and timed in interleaved blocks "
             f"({res['rounds']} rounds of {res['block_secs']['32']} s per model at 32x32, "
             f"{res['block_secs']['224']} s at 224x224, random order each round); x is the median against "
             f"float32 measured side by side. The 224x224 files are the same networks and weights "
             f"re-instantiated at 224x224x1 (`export --input-shape`).", "",
             "| variant | what | accuracy | loss (pt) | bytes | fewer bytes | x at 32x32 | x at 224x224 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["variants"]:
        what = []
        if r["blocks_removed"]:
            what.append(f"{len(r['blocks_removed'])} blocks removed")
        if r["channels"] is not None:
            ch = r["spec"]["channels"] or {}
            what.append(f"{r['channels']:.0%} channels removed"
                        + (f" ({ch['allocation']})" if ch.get("allocation", "uniform") != "uniform" else "")
                        + (f" in {ch['iterative_steps']} steps" if ch.get("iterative_steps", 1) > 1 else ""))
        if r["prune"] in ("unstructured", "2:4"):
            what.append(f"TF-MOT {r['prune']} {r['spec']['target_sparsity']:.0%}")
        if r["fine_tune_epochs"] and r["prune"] != "none" or r["blocks_removed"]:
            what.append(f"{r['fine_tune_epochs']:g} ep fine-tune per step"
                        + (", KD" if r["distill"] and (r["blocks_removed"] or r["channels"] is not None) else "")
                        + (f", {r['spec']['lr_schedule']} LR" if r["blocks_removed"] or r["channels"] is not None
                           else ""))
        what.append(r["quantize"])
        s224 = f"{r['speedup_224']:.2f}" if r["speedup_224"] else "-"
        lines.append(f"| {r['name']} | {'; '.join(what)} | {r['tflite_accuracy']:.2%} | {r['loss_pt']:+.2f} | "
                     f"{r['bytes']:,} | {r['bytes_ratio']:.1f}x | {r['speedup_32']:.2f} | {s224} |")
    lines.append("")
    if curve:
        lines += ["Baseline learning curve (test accuracy after each epoch): "
                  + ", ".join(f"{c['val_accuracy']:.3f}" for c in curve) + ".", ""]
    t = res["target"]
    if res["met_by"]:
        lines.append(f"Target (loss <= {t['loss_pt']} pt, >= {t['speedup']:g}x at both sizes, >= "
                     f"{t['bytes_ratio']:g}x fewer bytes): **met** by {', '.join(res['met_by'])}.")
    else:
        front = pareto(res["variants"])
        lines.append(f"Target (loss <= {t['loss_pt']} pt, >= {t['speedup']:g}x at both sizes, >= "
                     f"{t['bytes_ratio']:g}x fewer bytes): **not met**. Pareto front (accuracy, 32x32 speed, "
                     f"bytes): {', '.join(front)}.")
    by = {r["name"]: r for r in res["variants"]}
    small = [r for r in res["variants"] if r["bytes_ratio"] >= t["bytes_ratio"]]
    if small:
        best = max(small, key=lambda r: r["tflite_accuracy"])
        lines += ["", f"Most accurate with >= {t['bytes_ratio']:g}x fewer bytes: {best['name']}, "
                     f"{best['tflite_accuracy']:.2%} ({best['loss_pt']:+.2f} pt), {best['speedup_32']:.2f}x at 32x32 "
                     f"and {best['speedup_224'] or 0:.2f}x at 224x224."]
    if "int8" in by:
        i8 = by["int8"]
        lines += ["", f"int8 alone: {i8['speedup_32']:.2f}x at 32x32 and {i8['speedup_224'] or 0:.2f}x at 224x224 on "
                     f"this CPU ({m['cpu_flags']}), {i8['bytes_ratio']:.1f}x fewer bytes, {i8['loss_pt']:+.2f} pt."]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """benchmarks/results/headline.md, then BENCHMARKS.md assembled from every section."""
    SECTION.write_text(text)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--assemble-only"], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", type=Path, help="measure this existing run folder instead of running the recipe")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "headline")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block-secs", type=float, default=0.25)
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from headline.json")
    args = ap.parse_args(argv)
    if args.render_only:
        text = section(json.loads(RESULTS.read_text()))
        write_section(text)
        print(text)
        return 0
    run = args.from_run
    if run is None:
        run = args.out
        run_recipe(run)
    res = measure(run.resolve(), args.rounds, args.block_secs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    text = section(res)
    write_section(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

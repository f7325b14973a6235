"""The headline result: MobileNetV2 0.35 on Fashion-MNIST, trained to convergence, against float32,
int8, TF-MOT's best and edgeprune's structural variants, in one table.

    python benchmarks/headline_bench.py                       # run the recipe (about 1.5 h on 2 cores)
    python benchmarks/headline_bench.py --from-run runs/bench/headline   # time its exports again
    python benchmarks/headline_bench.py --render-only         # the section from headline.json
    python benchmarks/headline_bench.py --quick               # the whole path in minutes, nothing stored

The recipe (benchmarks/recipes/headline.toml) is run end to end through `edgeprune run`: the
converged baseline (cached), every variant, their .tflite files at 32x32 and the same networks
re-instantiated at 224x224. Accuracy is top-1 through LiteRT on all 10,000 test images. Latency is
the run's own: the pipeline times every export through the bench harness, paired (the exports of
one input size in one runner process, interleaved in shuffled blocks), and the speed-ups are its
paired ratios against float32 with bootstrap intervals. `--from-run` times an existing run's
exports again the same way, with more time per model (e.g. on a quieter machine), and shows those.
Writes benchmarks/results/headline.json (the results model, without raw samples) and the headline
section of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _shared import (QUICK_DIR, ROOT, guarded, publish, quick_recipe, read_results, read_stored, remeasure,
                     run_recipe, run_timing, speedup, speedup_cell, stored, timing, timing_text)

from edgeprune.report.tables import table
from edgeprune.results import load

RECIPE = ROOT / "benchmarks" / "recipes" / "headline.toml"
SCHEMA, VERSION = "edgeprune.bench.headline", 2
TARGET = {"loss_pt": 1.0, "speedup": 5.0, "bytes_ratio": 10.0}
QUICK_VARIANTS = ["int8", "tfmot50-pqat", "ch50-plain", "b6-ch50-int8"]
THREADS = 1
OPTIMIZERS = {"adam": "Adam", "sgd": "SGD"}


def collect(run: Path, remeasured: tuple | None, command: str) -> dict:
    """The stored result of a run folder: its Report (merged with a re-measurement when there is
    one) and how it was timed."""
    if remeasured is None:
        report = load([run])
        src = report.run_sources()[0]
        how = timing("pipeline run", run_timing(run), report, src.host.get("load_average"))
    else:
        report, bench = remeasured
        how = timing("remeasured", bench.settings.to_dict(), report)
    where = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
    return {"schema": SCHEMA, "version": VERSION, "run": str(where), "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timing": how, "target": TARGET,
            "report": stored(report)}


def describe(v) -> str:
    """What was done to a variant, from its run record."""
    spec, d = v.details.get("spec", {}), v.details
    removed = (d.get("blocks") or {}).get("removed", [])
    ratio = ((d.get("channels") or {}).get("config") or {}).get("ratio")
    structural = bool(removed) or ratio is not None
    what = [f"{len(removed)} blocks removed"] if removed else []
    if ratio is not None:
        ch = spec.get("channels") or {}
        what.append(f"{ratio:.0%} channels removed"
                    + (f" ({ch['allocation']})" if ch.get("allocation", "uniform") != "uniform" else "")
                    + (f" in {ch['iterative_steps']} steps" if ch.get("iterative_steps", 1) > 1 else ""))
    if v.prune in ("unstructured", "2:4"):
        what.append(f"TF-MOT {v.prune} {spec['target_sparsity']:.0%}")
    if spec.get("fine_tune_epochs") and v.prune != "none" or removed:
        what.append(f"{spec['fine_tune_epochs']:g} ep fine-tune per step"
                    + (", KD" if spec.get("distill") and structural else "")
                    + (f", {spec['lr_schedule']} LR" if structural else ""))
    what.append(v.quantize)
    return "; ".join(what)


def rows(report) -> list[dict]:
    """One row per verified variant at the model's size: accuracy, loss against the baseline,
    bytes, and the point speed-up at each size (0 where it was not measured)."""
    base = report.baseline()
    shapes = report.input_shapes()

    def x(v):
        sp = speedup(report, v, THREADS) if v is not None else None
        return sp[0] if sp else 0.0

    out = []
    for v in report.main_variants():
        if v.status == "ok":
            big = report.resized(v.name, shapes[0]) if shapes else None
            out.append({"v": v, "big": big, "acc": v.accuracy, "loss_pt": 100 * (base.accuracy - v.accuracy),
                        "bytes": v.bytes, "fewer": 1 / report.ratio(v), "x": x(v), "x_big": x(big)})
    return out


def pareto(rs: list[dict]) -> list[str]:
    """Variants no other beats on accuracy, speed-up at the model's size and bytes at once."""
    def beats(a, b):
        ge = a["acc"] >= b["acc"] and a["x"] >= b["x"] and a["bytes"] <= b["bytes"]
        return ge and (a["acc"] > b["acc"] or a["x"] > b["x"] or a["bytes"] < b["bytes"])

    return [r["v"].name for r in rs if not any(beats(o, r) for o in rs if o is not r)]


def legacy_timing_text(t: dict) -> str:
    """Results kept from before this script timed through the harness (converted once, every
    number kept)."""
    return (f"Latency: {t['threads']} thread, measured {t['when']} by this script's own loop, before it timed "
            f"through the bench harness: every model loaded in one process and timed in interleaved blocks "
            f"({t['rounds']} rounds of {t['block_secs']['32']} s per model at 32x32, {t['block_secs']['224']} s "
            f"at 224x224, random order each round), {t['runtime']} with XNNPACK. x is the ratio of the two "
            f"medians measured side by side; that loop kept no block structure to resample, so no interval is "
            f"shown (the stored results predate paired ratios).")


def section(res: dict) -> str:
    report = read_stored(res["report"])
    t, target = res["timing"], res["target"]
    src = report.run_sources()[0]
    m, ver, b, rec = src.host, src.versions, src.baseline, src.recipe["baseline"]
    optimizer = OPTIMIZERS.get(rec.get("optimizer"), "Adam")
    shapes = report.input_shapes()
    big = "x".join(map(str, shapes[0][:2])) if shapes else None
    small = "x".join(map(str, src.model["input_shape"][:2])) if src.model else "32x32"
    flags = t.get("cpu_flags") or m.get("cpu_flags")
    la = t.get("load_average") or m.get("load_average") or []
    lines = ["## The headline: MobileNetV2 0.35 on Fashion-MNIST, converged, then compressed", "",
             f"`{res['command']}` ({res['created']}). Machine: {m['cpu']}, {m['cores']} cores ({flags}), load average "
             f"{', '.join(map(str, la))} when timing ended. TensorFlow {ver.get('tensorflow')}, tf-keras "
             f"{ver.get('tf-keras')}, TF-MOT {ver.get('tensorflow-model-optimization')}, ai-edge-litert "
             f"{ver.get('ai-edge-litert')}, Python {ver.get('python')}.", "",
             f"Baseline: {b['epochs']:g} epochs, {optimizer} {rec['learning_rate']} with {rec['lr_schedule']} "
             f"decay after {rec['warmup_epochs']:g} warm-up epoch(s), batch {rec['batch_size']}, augmentation "
             f"{'on' if rec['augment'] else 'off'}; Keras test accuracy {b['keras_accuracy']:.2%}. Accuracy: top-1 "
             f"through LiteRT on all {src.data['test']:,} test images. "
             + (legacy_timing_text(t) if t["kind"] == "script loop" else timing_text(t, report))
             + (f" The {big} files are the same networks and weights re-instantiated at "
                f"{'x'.join(map(str, shapes[0]))} (`[bench] input_shapes`)." if big else ""), ""]
    rs = rows(report)
    body = [[r["v"].name, describe(r["v"]), f"{r['acc']:.2%}", f"{r['loss_pt']:+.2f}", f"{r['bytes']:,}",
             f"{r['fewer']:.1f}x", speedup_cell(report, r["v"], THREADS), speedup_cell(report, r["big"], THREADS)]
            for r in rs]
    lines += [table(["variant", "what", "accuracy", "loss (pt)", "bytes", "fewer bytes", f"x at {small}",
                     f"x at {big}" if big else "-"], body, markdown=True), ""]
    if b.get("curve"):
        lines += ["Baseline learning curve (test accuracy after each epoch): "
                  + ", ".join(f"{c['val_accuracy']:.3f}" for c in b["curve"]) + ".", ""]
    goal = (f"Target (loss <= {target['loss_pt']} pt, >= {target['speedup']:g}x at both sizes, >= "
            f"{target['bytes_ratio']:g}x fewer bytes)")
    met = [r["v"].name for r in rs if r["loss_pt"] <= target["loss_pt"] + 1e-9 and r["x"] >= target["speedup"]
           and r["x_big"] >= target["speedup"] and r["fewer"] >= target["bytes_ratio"]]
    if met:
        lines.append(f"{goal}: **met** by {', '.join(met)}.")
    else:
        lines.append(f"{goal}: **not met**. Pareto front (accuracy, {small} speed, bytes): {', '.join(pareto(rs))}.")
    smaller = [r for r in rs if r["fewer"] >= target["bytes_ratio"]]
    if smaller:
        best = max(smaller, key=lambda r: r["acc"])
        lines += ["", f"Most accurate with >= {target['bytes_ratio']:g}x fewer bytes: {best['v'].name}, "
                      f"{best['acc']:.2%} ({best['loss_pt']:+.2f} pt), {best['x']:.2f}x at {small} and "
                      f"{best['x_big']:.2f}x at {big}."]
    i8 = next((r for r in rs if r["v"].name == "int8"), None)
    if i8:
        lines += ["", f"int8 alone: {i8['x']:.2f}x at {small} and {i8['x_big']:.2f}x at {big} on this CPU ({flags}), "
                      f"{i8['fewer']:.1f}x fewer bytes, {i8['loss_pt']:+.2f} pt."]
    lines += [f"\nFAILED {f}" for f in report.failures]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from edgeprune.bench import BenchSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", type=Path, help="time this existing run folder's exports again instead of "
                                                  "running the recipe")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "headline", help="the run folder")
    ap.add_argument("--remeasure-out", type=Path, default=None,
                    help="with --from-run: the bench folder of the new timing (default RUN-remeasured)")
    ap.add_argument("--min-secs", type=float, default=4.0, help="with --from-run: timed seconds per model per round")
    ap.add_argument("--runs", type=int, default=200, help="with --from-run: samples per model per round, at least")
    ap.add_argument("--repeats", type=int, default=3, help="with --from-run: rounds (runner processes) per group")
    ap.add_argument("--block-secs", type=float, default=0.01, help="with --from-run: seconds per model per block")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from headline.json")
    ap.add_argument("--quick", action="store_true", help="a cut-down recipe (1,000 images, 4 variants, short "
                                                         f"timing) into {QUICK_DIR}; stores nothing")
    args = ap.parse_args(argv)
    if args.render_only:
        publish("headline", None, section(read_results("headline", SCHEMA, VERSION)))
        return 0
    command = " ".join(["python benchmarks/headline_bench.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        recipe = quick_recipe(RECIPE, QUICK_DIR / "headline.toml", QUICK_VARIANTS)
        run = QUICK_DIR / "headline" if args.from_run is None else args.from_run
    else:
        recipe, run = RECIPE, args.from_run or args.out
    remeasured = None
    if args.from_run is None:
        run_recipe(recipe, run)
    else:
        settings = BenchSettings(paired=True, threads=[THREADS], runs=args.runs, min_secs=args.min_secs,
                                 repeats=args.repeats, block_secs=args.block_secs,
                                 max_secs=max(150.0, args.min_secs))
        out = args.remeasure_out or run.with_name(run.name + "-remeasured")
        remeasured = remeasure(run.resolve(), settings, out)
    res = collect(run.resolve(), remeasured, command)
    publish("headline", res, section(res), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))

"""What each step buys: runs the benchmark recipes through `edgeprune run` and writes the pipeline
section of BENCHMARKS.md (benchmarks/results/pipeline.md) from benchmarks/results/pipeline.json.

    python benchmarks/pipeline_bench.py [--recipes benchmarks/recipes/mnv2_fashion.toml ...]
    python benchmarks/pipeline_bench.py --from-runs [--remeasure]   # the run folders under runs/bench
    python benchmarks/pipeline_bench.py --render-only               # the section from pipeline.json
    python benchmarks/pipeline_bench.py --quick                     # the whole path in minutes, nothing stored

Every number is read through the results model (edgeprune.results) from the run folders: the runs
time their exports through the bench harness, paired, so every speed-up is a paired ratio with a
bootstrap interval. `--remeasure` times the exports again the same way, at 1 and 2 threads with
more time per model (e.g. on a quiet machine after training on a busy one); the new timing is kept
in RUN-remeasured/ next to the run folder and shown instead of the run's."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _shared import (HOST, QUICK_DIR, ROOT, guarded, publish, quick_recipe, read_results, read_stored, remeasure,
                     run_recipe, run_timing, speedup, speedup_cell, stored, timing, timing_text)

from edgeprune.errors import SchemaError
from edgeprune.report.tables import ms, table
from edgeprune.results import load

DEFAULT_RECIPES = [ROOT / "benchmarks/recipes/mnv2_fashion.toml", ROOT / "benchmarks/recipes/mnv2_224.toml"]
SCHEMA, VERSION = "edgeprune.bench.pipeline", 1
REMEASURE = {"threads": [1, 2], "runs": 100, "min_secs": 2.0, "warmup": 10}


def collect(folder: Path, remeasured: tuple | None) -> dict:
    """One recipe's stored result: the run (merged with its re-measurement) and how it was timed."""
    if remeasured is None:
        report = load([folder])
        src = report.run_sources()[0]
        settings = run_timing(folder)
        if settings is None:
            raise SchemaError(f"{folder} is a version-1 run, timed export by export without pairing",
                              "rerun its recipe, or pass --remeasure to time its exports paired")
        how = timing("pipeline run", settings, report, src.host.get("load_average"))
    else:
        report, bench = remeasured
        how = timing("remeasured", bench.settings.to_dict(), report)
    src = report.run_sources()[0]
    return {"label": folder.name, "untrained": (src.baseline or {}).get("epochs") == 0, "timing": how,
            "report": stored(report)}


def legacy_timing_text(t: dict) -> str:
    """Results kept from before the runs timed through the harness (converted once from the
    section, every number kept)."""
    return (f"Latency: host, LiteRT interpreter with XNNPACK, re-measured {t['when']} (load average "
            f"{', '.join(f'{x:.1f}' for x in t['load_average'])}) before paired timing: each export timed alone, "
            f"one after the other, median of >= {t['runs']} invokes and >= {t['min_secs']:g} s after {t['warmup']} "
            f"warm-up runs; p5-p95 in brackets. x is the baseline's median divided by the variant's, measured "
            f"apart: no interval was recorded, and differences smaller than the shared host's drift (several %) "
            f"are noise. The run folders are not kept: these are the numbers as the section published them.")


def table_of(report, untrained: bool, published: dict | None) -> str:
    base = report.baseline()
    threads = sorted({m.threads for m in report.measurements if m.device == HOST})
    head = ["variant", "prune", "quantize", "bytes", "x bytes", "gzip bytes", "x gzip"]
    head += [] if untrained else ["accuracy", "agreement"]
    for t in threads:
        head += [f"ms @{t}t (p5-p95)", f"x @{t}t"]
    rows = []
    for v in report.main_variants():
        if v.status != "ok":
            rows.append([v.name, f"FAILED: {'; '.join(v.failures)}"] + [""] * (len(head) - 2))
            continue
        spec = v.details.get("spec", {})
        sparse = (v.details.get("sparse_encoding") or {}).get("chosen") == "sparse"
        cells = [v.name, f"{spec['target_sparsity']:.0%}" if v.prune == "unstructured" else v.prune,
                 v.quantize + (" (sparse encoding)" if sparse else ""), f"{v.bytes:,}", f"{base.bytes / v.bytes:.2f}",
                 f"{v.gzip_bytes:,}", f"{base.gzip_bytes / v.gzip_bytes:.2f}"]
        cells += [] if untrained else [f"{v.accuracy:.2%}", f"{v.agreement:.2%}"]
        for t in threads:
            m = report.measurement(v.name, HOST, t)
            cells += [f"{ms(m.median_ms)} ({ms(m.p5_ms)}-{ms(m.p95_ms)})" if m else "-",
                      speedup_cell(report, v, t, published) if m else "-"]
        rows.append(cells)
    return table(head, rows, markdown=True)


def render(res: dict) -> str:
    parts = [(read_stored(p["report"]), p) for p in res["runs"]]
    r0 = parts[0][0].run_sources()[0]
    m, ver = r0.host, r0.versions
    out = ["## What each step buys (edgeprune run)", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['system']} {m['machine']}. TensorFlow {ver['tensorflow']}, "
           f"tf-keras {ver['tf-keras']}, TF-MOT {ver['tensorflow-model-optimization']}, ai-edge-litert "
           f"{ver['ai-edge-litert']}, Python {ver['python']}. `x bytes` and `x gzip` are the float32 baseline's "
           f"size divided by the variant's; `x @Nt` its speed-up at N threads (higher is better). "
           f"Command: `{res['command']}`.", ""]
    for report, p in parts:
        src = report.run_sources()[0]
        rec, mdl, t = src.recipe, src.recipe["model"], p["timing"]
        title = (f"### MobileNetV2 alpha {mdl['alpha']} at {mdl['input_shape']}, {mdl['classes']} classes"
                 + (" (untrained: size and latency only)" if p["untrained"] else
                    f", Fashion-MNIST ({src.data['train']} train / {src.data['test']} test; baseline "
                    f"{src.baseline['epochs']} epochs)"))
        how = legacy_timing_text(t) if t["kind"] == "unpaired" else timing_text(t, report)
        out += [title, "", how, "", table_of(report, p["untrained"], p.get("published_speedups")), "",
                f"Run: {src.created}, {src.seconds} s (`{rec['name']}`)."]
        out += [f"FAILED {f}" for f in report.failures] + [""]
    out += [findings(parts), ""]
    return "\n".join(out)


def verdict(sp, ref, base_ms: float, size: float) -> str:
    """What pruning bought, judged against `ref`, the speed-up of the unpruned file of the same
    format (the float32 baseline's 1, or int8 alone): from the intervals when the ratios are
    paired, else from the point values, with no verdict where unpaired medians under 1 ms are
    noise."""
    x, lo, hi = sp
    rx, rlo, rhi = ref
    if lo is not None:
        if lo <= (rhi or rx) and (rlo or rx) <= hi:
            return "size; its interval meets the unpruned file's, so no speed difference was measured"
        return "size and speed" if lo > (rhi or rx) else "size but costs time"
    if base_ms < 1.0:
        return "size; at under 1 ms per invoke an unpaired difference is noise, no speed verdict"
    return "size but no speed" if x / rx < 1.1 and size > 1.2 else ("size and speed" if x / rx >= 1.1 else "little")


def _compared(parts):
    """(recipe name, report, stored part, variant, its 1-thread speed-up, the baseline's median) for
    every variant measured at 1 thread beside its baseline."""
    for report, p in parts:
        base = report.baseline()
        b1 = report.measurement(base.name, HOST, 1) if base else None
        for v in report.main_variants():
            if b1 is None or v.status != "ok" or v is base or report.measurement(v.name, HOST, 1) is None:
                continue
            sp = speedup(report, v, 1, p.get("published_speedups"))
            if sp is not None:
                yield report.run_sources()[0].recipe["name"], report, p, v, sp, b1.median_ms


def _unpruned(report, v, published):
    """The unpruned file of v's format and its speed-up: int8 alone for an int8 file (when the
    recipe has one), else the float32 baseline."""
    base = report.baseline()
    if v.quantize in ("int8", "pqat", "qat"):
        i8 = next((u for u in report.main_variants() if u.status == "ok" and u.prune == "none"
                   and u.quantize == "int8" and report.measurement(u.name, HOST, 1)), None)
        sp = speedup(report, i8, 1, published) if i8 is not None else None
        if sp is not None:
            return i8, sp
    return base, (1.0, None, None)


def _speed(sp) -> str:
    x, lo, hi = sp
    return f"{x:.2f}x" + (f" [{lo:.2f}-{hi:.2f}]" if lo is not None else "")


def findings(parts) -> str:
    """Plain statements computed from the numbers: where pruning bought size but no speed, judged
    against the unpruned file of the same format."""
    lines = ["### Reading it", ""]
    rows = list(_compared(parts))
    for name, report, p, v, sp, base_ms in rows:
        if v.prune != "none":
            base = report.baseline()
            ref, rsp = _unpruned(report, v, p.get("published_speedups"))
            size = base.gzip_bytes / v.gzip_bytes
            against = "" if ref is base else f" ({ref.name}: {_speed(rsp)})"
            lines.append(f"- {name} / {v.name}: {size:.2f}x smaller gzipped, {_speed(sp)} the baseline's speed at "
                         f"1 thread{against}: pruning bought {verdict(sp, rsp, base_ms, size)}.")
    for name, report, p, v, sp, base_ms in rows:
        if v.prune == "none" and v.quantize == "int8":
            lines.append(f"- {name} / {v.name}: int8 alone runs at {_speed(sp)} the float32 speed at 1 thread on "
                         f"this CPU ({p['timing'].get('cpu_flags')}); int8 speed needs int8 dot-product "
                         f"instructions (VNNI, ARM dotprod).")
        if (v.details.get("sparse_encoding") or {}).get("chosen") == "sparse" and (sp[1] is not None
                                                                                   or base_ms >= 1.0):
            if sp[1] is not None:  # paired: the interval decides
                effect = "costs time" if sp[2] < 1 else ("saves time" if sp[1] > 1 else "leaves time alone")
            else:
                effect = "costs time" if sp[0] < 0.95 else ("saves time" if sp[0] > 1.05 else "leaves time alone")
            lines.append(f"- {name} / {v.name}: the sparse float encoding (DENSIFY ops) runs at {_speed(sp)} the "
                         f"dense baseline's speed: it buys bytes and {effect}.")
    paired = any(sp[1] is not None for *_, sp, _ in rows)
    lines.append("- Zeroed weights shrink files after compression (or with the sparse float encoding); dense "
                 "XNNPACK kernels on x86 run them no faster. At 32x32 an invoke takes about 0.1 ms and fixed "
                 "per-invoke costs dominate" + ("; the paired intervals say which differences are real."
                                                if paired else ", so unpaired latency differences there are noise; "
                                                "the 224x224 table is the one to read for speed."))
    return "\n".join(lines)


def main() -> int:
    from edgeprune.bench import BenchSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="*", type=Path, default=DEFAULT_RECIPES)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--from-runs", action="store_true", help="read the existing run folders instead of running")
    ap.add_argument("--remeasure", action="store_true",
                    help="time every export again now, paired, at 1 and 2 threads (e.g. on a quiet machine)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from pipeline.json")
    ap.add_argument("--quick", action="store_true", help="each recipe cut down (1,000 images, 3 variants, short "
                                                         f"timing) into {QUICK_DIR}; stores nothing")
    args = ap.parse_args()
    if args.render_only:
        publish("pipeline", None, render(read_results("pipeline", SCHEMA, VERSION)))
        return 0
    runs_dir = QUICK_DIR if args.quick else args.runs_dir
    parts = []
    for recipe in args.recipes:
        folder = runs_dir / recipe.stem
        if not args.from_runs:
            run_recipe(quick_recipe(recipe, QUICK_DIR / recipe.name, 3) if args.quick else recipe, folder, quiet=True)
        remeasured = None
        if args.remeasure:
            knobs = dict(REMEASURE, **({"runs": 10, "min_secs": 0.05} if args.quick else {}))
            remeasured = remeasure(folder.resolve(), BenchSettings(paired=True, **knobs),
                                   folder.with_name(folder.name + "-remeasured"))
        parts.append(collect(folder.resolve(), remeasured))
    command = " ".join(["python benchmarks/pipeline_bench.py", *sys.argv[1:]])
    res = {"schema": SCHEMA, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": command, "runs": parts}
    publish("pipeline", res, render(res), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))

"""What the benchmark scripts share. Timing and statistics are the bench harness's
(edgeprune.bench), results are read through the one results model (edgeprune.results) and cells
and tables come from edgeprune.report.tables; this module only joins them up:

    run_recipe(recipe, out)          `edgeprune run` in a child process
    quick_recipe(recipe, dest, ...)  the same recipe on a few images and epochs (--quick)
    export_groups(report, folder)    a run's exports, grouped by input size as the pipeline pairs them
    remeasure(folder, settings, out) those exports timed again, paired, merged over the run's own
    timing(...) / timing_text(...)   how a stored result was timed through the harness, and in words
    speedup(...) / speedup_cell(...) a speed-up with its interval (paired) or without (unpaired)
    stored(report)                   a Report as stored under benchmarks/results (no raw samples)
    read_results(name, ...)          a script's stored results, schema- and version-checked
    publish(name, results, text)     benchmarks/results/NAME.json and .md, then BENCHMARKS.md reassembled
    guarded(main)                    bad input: one `error:` line and exit code 2"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeprune.errors import EdgepruneError  # noqa: E402
from edgeprune.report.tables import speedup_text  # noqa: E402
from edgeprune.results import Report, load  # noqa: E402
from edgeprune.runfolder import write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
QUICK_DIR = ROOT / "runs" / "bench" / "quick"
HOST = "local"
SIMD = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_flags() -> str:
    """The SIMD features that decide int8 speed, as this machine has them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = next(x for x in text.splitlines() if x.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return "unknown"
    have = set(line.split(":", 1)[1].split())
    return ", ".join(f for f in SIMD if f in have) or "none of " + ", ".join(SIMD)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_recipe(recipe: Path, out: Path, quiet: bool = False) -> None:
    """Runs the recipe into the run folder `out` (replaced if it holds a run). A run in which some
    variants failed still counts (exit code 1): the report says which and why."""
    cmd = [sys.executable, "-m", "edgeprune", "run", str(recipe), "--out", str(out), "--force"]
    print("+", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    r = subprocess.run(cmd + (["--quiet"] if quiet else []), cwd=ROOT, text=True,
                       stderr=subprocess.PIPE if quiet else None)
    if r.returncode not in (0, 1) or not (out / "report.json").is_file():
        tail = (r.stderr or "")[-2000:].strip()
        raise EdgepruneError(f"edgeprune run {recipe} failed (exit code {r.returncode})"
                             + (f": {tail}" if tail else ""), "run the recipe by hand to see the whole output")


def quick_recipe(recipe: Path, dest: Path, variants: list[str] | int) -> Path:
    """The recipe cut down to prove the code path in minutes: 1,000 training and 200 test images,
    a fraction of an epoch wherever it trains, short timing, and only `variants` (names, or the
    first N). Written to `dest` as TOML."""
    from edgeprune.results.readers import to_toml

    data = tomllib.loads(recipe.read_text())
    rows = data.pop("variant", [])
    keep = rows[:variants] if isinstance(variants, int) else [v for v in rows if v["name"] in variants]
    for v in keep:
        for key in ("fine_tune_epochs", "qat_epochs"):
            if key in v:
                v[key] = min(v[key], 0.1)
    d = data.setdefault("data", {})
    for key, n in (("train_limit", 1000), ("test_limit", 200), ("representative_count", 50)):
        d[key] = min(d.get(key) or n, n)
    b = data.setdefault("baseline", {})
    if b.get("epochs", 1) > 0:
        b["epochs"] = 0.2
        if "warmup_epochs" in b:
            b["warmup_epochs"] = 0
    data.setdefault("bench", {}).update(runs=10, warmup=2, min_secs=0.05)
    data["name"] = f"{data.get('name', recipe.stem)}-quick"
    data["variants"] = keep
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, to_toml(data))
    return dest


def export_groups(report: Report, folder: Path) -> tuple[list[Path], list[list[int]]]:
    """A run's verified exports in the groups the pipeline measures side by side: those at the
    model's own input size (the baseline first, the reference of its group), then those at each
    other input size the baseline was exported at (the baseline at that size first). Returns
    (paths, pair_groups)."""
    base = report.baseline()
    if base is None:
        raise EdgepruneError(f"the run in {folder} has no baseline export to measure against",
                             "rerun the recipe: the baseline failed")
    ok = [v for v in report.main_variants() if v.status == "ok" and v.file]
    ok.sort(key=lambda v: v.name != base.name)
    by_size = [ok] + [[r for v in ok if (r := report.resized(v.name, s)) is not None and r.file]
                      for s in report.input_shapes() if report.resized(base.name, s) is not None]
    paths: list[Path] = []
    groups: list[list[int]] = []
    for members in by_size:
        if members:
            groups.append(list(range(len(paths), len(paths) + len(members))))
            paths += [folder / v.file for v in members]
    return paths, groups


def remeasure(folder: Path, settings, out: Path) -> tuple[Report, object]:
    """Times a run folder's exports again on this host through the bench harness, paired as the
    pipeline pairs them, and writes the bench folder `out` (replaced if it holds bench results).
    Returns the run and the new bench merged (the new measurements and ratios win) and the
    BenchRun."""
    from edgeprune.bench import bench_models
    from edgeprune.report.bench_folder import write_run

    paths, groups = export_groups(load([folder]), folder)
    print(f"timing {len(paths)} exports of {folder} in {len(groups)} paired group(s)", file=sys.stderr, flush=True)
    run = bench_models(paths, [HOST], settings, pair_groups=groups)
    write_run(run, out, force=True)
    return load([folder, out]), run


def run_timing(folder: Path) -> dict | None:
    """The bench settings a version-2 run measured its exports with (None for a version-1 run,
    which timed each export alone)."""
    from edgeprune.bench.results import BenchRun
    from edgeprune.results import load_run_report

    bench = load_run_report(folder).get("bench")
    return BenchRun.from_dict(bench).settings.to_dict() if bench else None


def timing(kind: str, settings: dict, report: Report, load: list[float] | None = None) -> dict:
    """How a stored result was timed through the harness: `kind` "pipeline run", "remeasured" or "script",
    `settings` its BenchSettings, `load` the load average when timing ended (now by default)."""
    runners = sorted({m.runner for m in report.measurements if m.device == HOST})
    return {"kind": kind, "settings": settings, "runner": ", ".join(runners),
            "load_average": load if load is not None else load_average(), "cpu_flags": cpu_flags()}


def timing_text(t: dict, report: Report) -> str:
    """The harness's measuring conditions (what `timing` stored) in words."""
    s = t["settings"]
    blocks = sorted({r.blocks for r in report.ratios if r.device == HOST})
    rounds = s.get("repeats") or 1
    where = {"remeasured": "re-measured from the run's exports",
             "pipeline run": "measured by the pipeline run"}.get(t["kind"], "measured by this script")
    return (f"Latency: {where}, through the bench harness ({t['runner']}, XNNPACK) at "
            f"{', '.join(map(str, s['threads']))} thread(s), paired: the models of one input size loaded in one "
            f"runner process and timed interleaved, in blocks of at least {s['block_runs']} invokes and "
            f"{s['block_secs']:g} s per model in a shuffled order, until each had >= {s['runs']} samples and "
            f"{s['min_secs']:g} s ({rounds} round{'s' if rounds > 1 else ''}, {s['warmup']} warm-up invokes). x is "
            f"the paired ratio of the medians against the float32 baseline at the same size; in brackets its "
            f"95 % bootstrap interval over {_span(blocks)} blocks resampled jointly for both models. Load average "
            f"when timing ended: {', '.join(f'{x:.1f}' for x in t['load_average'])} (a shared host).")


def _span(values: list[int]) -> str:
    if not values:
        return "no"
    return f"{values[0]:,}" if values[0] == values[-1] else f"{values[0]:,}-{values[-1]:,}"


def is_reference(report: Report, v) -> bool:
    """The baseline, or the baseline re-exported at another input size."""
    base = report.baseline()
    return base is not None and base.name in (v.name, v.of)


def speedup(report: Report, v, threads: int, published: dict | None = None) -> tuple | None:
    """(x, low, high) of the variant against its baseline on the host: the paired ratio with its
    interval, else the ratio of the medians (low, high None); `published` (variant -> threads ->
    x) holds speed-ups a stored result kept as they were published, where the medians behind them
    were not kept unrounded. The baseline itself: (1, None, None)."""
    if is_reference(report, v):
        return 1.0, None, None
    x = ((published or {}).get(v.name) or {}).get(str(threads))
    return (x, None, None) if x is not None else report.speedup(v, HOST, threads)


def speedup_cell(report: Report, v, threads: int, published: dict | None = None) -> str:
    return "-" if v is None else speedup_text(speedup(report, v, threads, published))


def stored(report: Report) -> dict:
    """The Report as a results file under benchmarks/results keeps it: every statistic and ratio,
    without the raw samples (the run or bench folder keeps those)."""
    slim = Report(**{f.name: getattr(report, f.name) for f in dataclasses.fields(Report)})
    slim.measurements = [dataclasses.replace(m, samples_ms=[]) for m in report.measurements]
    return slim.to_dict()


def read_stored(d: dict) -> Report:
    return Report.from_dict(d)


def read_results(name: str, schema: str, version: int, path: Path | None = None) -> dict:
    """A script's stored results (benchmarks/results/NAME.json unless `path`), schema- and
    version-checked."""
    from edgeprune.errors import SchemaError
    from edgeprune.results.readers import read_json

    path = path or RESULTS / f"{name}.json"
    data = read_json(path)
    if data.get("schema") != schema or data.get("version") != version:
        raise SchemaError(f"{path} is not a {name} benchmark result of version {version} (schema "
                          f"{data.get('schema')!r}, version {data.get('version')!r})",
                          f"run benchmarks/{name}_bench.py to write it")
    return data


def publish(name: str, results: dict | None, text: str, quick: bool = False) -> None:
    """Writes benchmarks/results/NAME.json (unless `results` is None: only the section is
    rendered again) and NAME.md, then reassembles BENCHMARKS.md from every section file
    (run_all.py --assemble-only), so that the other scripts' sections stay as they are. `quick`
    results go to runs/bench/quick/ and leave BENCHMARKS.md alone."""
    where = QUICK_DIR if quick else RESULTS
    if results is not None:
        write_json_atomic(where / f"{name}.json", results)
    write_text_atomic(where / f"{name}.md", text)
    print(f"wrote {where / name}.{{json,md}}" if results is not None else f"wrote {where / name}.md",
          file=sys.stderr)
    if not quick:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--assemble-only"], check=True)


def guarded(main):
    """Runs main(); an EdgepruneError (bad input, a failed run) becomes one `error:` line, exit 2."""
    try:
        return main()
    except EdgepruneError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code

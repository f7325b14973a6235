"""The run folder: bench.json (the BenchRun, versioned), bench.md and report.html (for people), bench.csv
(one row per result). The folder is built under a temporary name and renamed into place when
complete (edgeprune.runfolder.RunFolder); a folder that already holds bench results is replaced only
with `force`, and a folder holding anything else never."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from edgeprune.bench.results import BenchRun
from edgeprune.errors import OutputError
from edgeprune.runfolder import RunFolder, write_text_atomic
from edgeprune.report.html import render_bench

RESULT_FILES = ("bench.json", "bench.md", "bench.csv", "report.html")


def write_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def check_out_dir(out_dir: Path, force: bool, inputs: list[Path] = ()) -> None:
    """Refuses a path that is a file, a folder that holds anything but bench results, a folder of
    bench results without `force`, and a folder that holds one of the inputs (replacing the
    folder would delete it)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder", "give --out a folder path")
    if not out_dir.exists():
        return
    root = out_dir.resolve()
    for p in inputs:
        if p.exists() and p.resolve().is_relative_to(root):
            raise OutputError(
                f"the output folder {out_dir} holds the input {p}, and writing the results replaces the "
                "folder",
                "give another --out folder",
            )
    entries = sorted(e.name for e in out_dir.iterdir())
    if not entries:
        return
    others = [n for n in entries if n not in RESULT_FILES]
    if others or "bench.json" not in entries:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise OutputError(
            f"the output folder {out_dir} holds files that are not bench results "
            f"({shown or ', '.join(entries)})",
            "choose an empty or new folder with --out",
        )
    if not force:
        raise OutputError(
            f"the output folder {out_dir} already holds bench results",
            "pass --force to replace them, or choose another --out",
        )


def write_run(run: BenchRun, out_dir: str | Path, force: bool = False) -> dict[str, Path]:
    """Writes the run folder: bench.json, bench.md, bench.csv and, when something was measured,
    report.html (a run where every device failed has nothing to plot; bench.md says why)."""
    out = Path(out_dir)
    check_out_dir(out, force, [Path(m.path) for m in run.models])
    with RunFolder(out, force=True) as folder:  # check_out_dir has applied the stricter rules
        write_atomic(folder.path / "bench.json", json.dumps(run.to_dict(), indent=1) + "\n")
        write_atomic(folder.path / "bench.md", render_md(run))
        write_atomic(folder.path / "bench.csv", render_csv(run))
        if run.results:
            write_atomic(folder.path / "report.html", render_bench(run))
    return {n: out / n for n in RESULT_FILES}


def _ms(us: float | None) -> str:
    return "" if us is None else f"{us / 1000:.3f}"


def _temps(r) -> str:
    """Hottest zone before -> after the run."""
    b = r.thermal_before.max_temp_c if r.thermal_before else None
    a = r.thermal_after.max_temp_c if r.thermal_after else None
    if a is None and b is None:
        return ""
    return f"{'?' if b is None else f'{b:.1f}'} -> {'?' if a is None else f'{a:.1f}'}"


def render_md(run: BenchRun) -> str:
    lines = [f"# Benchmark {run.created}", ""]
    s = run.settings
    lines.append(
        f"Runs >= {s.runs} and >= {s.min_secs:g} s (stop at {s.max_secs:g} s), warm-up {s.warmup}, "
        f"cool-down {s.cooldown_s:g} s, XNNPACK {'on' if s.use_xnnpack else 'off'}, "
        f"high CV above {s.max_cv:.0%}."
    )
    lines += ["", "## Models", "", "| model | bytes | gzip bytes | sha256 |", "|---|---:|---:|---|"]
    for m in run.models:
        lines.append(f"| {m.name} | {m.bytes} | {m.gzip_bytes} | {m.sha256[:12]} |")
    lines += [
        "",
        "## Devices",
        "",
        "| device | target | model | SoC | ABI | OS | cores | runners | temp C | status |",
        "|---|---|---|---|---|---|---:|---|---:|---|",
    ]
    for d in run.devices:
        temp = d.thermal.max_temp_c if d.thermal else None
        status = "ok" if d.reachable and d.authorized else (d.error or "unavailable")
        lines.append(
            f"| {d.name} | {d.target} | {d.model or ''} | {d.soc or ''} | {d.abi or ''} | {d.os or ''} | "
            f"{len(d.cores) or ''} | {', '.join(d.runners)} | {'' if temp is None else f'{temp:.1f}'} | "
            f"{status} |"
        )
    for d in run.devices:
        rows = [r for r in run.results if r.device == d.name]
        if not rows:
            continue
        lines += [
            "",
            f"## {d.name} ({d.target})",
            "",
            "| model | threads | mask | runner | median ms | mean ms | p90 ms | p95 ms | CV | n | memory | temp C "
            "| flags |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for r in rows:
            mem = "" if r.memory is None or r.memory.mb is None else f"{r.memory.mb:.1f} MB {r.memory.kind}"
            lines.append(
                f"| {r.model} | {r.threads} | {r.cpu_mask or ''} | {r.runner} | {_ms(r.stats.median_us)} | "
                f"{_ms(r.stats.mean_us)} | {_ms(r.stats.p90_us)} | {_ms(r.stats.p95_us)} | {r.stats.cv:.1%} | "
                f"{r.stats.count} {r.stats.source} | {mem} | {_temps(r)} | {', '.join(r.flags)} |"
            )
        notes = sorted({n for r in rows for n in r.notes})
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
    if run.failures:
        lines += ["", "## Failures", ""]
        for f in run.failures:
            what = f" ({f.model} x{f.threads})" if f.model else ""
            reason = f.reason if f.reason.startswith(f.target) else f"{f.target}: {f.reason}"
            lines.append(f"- **{f.device}**{what}: {reason}")
    lines += [
        "",
        "Memory kinds: peak_rss = peak RSS of the Python runner process; footprint_delta = benchmark_model's "
        "ru_maxrss high-water delta; peak_footprint = benchmark_model's periodic monitoring. Numbers from "
        "different devices are never one population.",
        "",
    ]
    return "\n".join(lines)


CSV_COLUMNS = [
    "device",
    "target",
    "model",
    "model_bytes",
    "gzip_bytes",
    "runner",
    "threads",
    "affinity",
    "cpu_mask",
    "median_us",
    "mean_us",
    "min_us",
    "max_us",
    "p90_us",
    "p95_us",
    "std_us",
    "cv",
    "count",
    "stats_source",
    "memory_kind",
    "memory_mb",
    "temp_before_c",
    "temp_after_c",
    "flags",
]


def render_csv(run: BenchRun) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in run.results:
        tb = r.thermal_before.max_temp_c if r.thermal_before else None
        ta = r.thermal_after.max_temp_c if r.thermal_after else None
        w.writerow(
            [
                r.device,
                r.target,
                r.model,
                r.model_bytes,
                r.gzip_bytes,
                r.runner,
                r.threads,
                r.affinity,
                r.cpu_mask or "",
                f"{r.stats.median_us:.1f}",
                f"{r.stats.mean_us:.1f}",
                f"{r.stats.min_us:.1f}",
                f"{r.stats.max_us:.1f}",
                f"{r.stats.p90_us:.1f}",
                f"{r.stats.p95_us:.1f}",
                f"{r.stats.std_us:.1f}",
                f"{r.stats.cv:.4f}",
                r.stats.count,
                r.stats.source,
                r.memory.kind if r.memory else "",
                "" if not r.memory or r.memory.mb is None else f"{r.memory.mb:.2f}",
                "" if tb is None else f"{tb:.1f}",
                "" if ta is None else f"{ta:.1f}",
                ";".join(r.flags),
            ]
        )
    return buf.getvalue()

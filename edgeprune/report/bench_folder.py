"""A bench run's folder: bench.json (the BenchRun, versioned: the record), and for people bench.md,
bench.csv and report.html, all drawn from the one results model. The folder is built under a
temporary name and renamed into place when complete (edgeprune.runfolder.RunFolder); a folder that
already holds bench results is replaced only with `force`, and a folder holding anything else never."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.errors import OutputError
from edgeprune.runfolder import RunFolder, write_text_atomic

RESULT_FILES = ("bench.json", "bench.md", "bench.csv", "report.html")


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
                f"the output folder {out_dir} holds the input {p}, and writing the results replaces the folder",
                "give another --out folder",
            )
    entries = sorted(e.name for e in out_dir.iterdir())
    if not entries:
        return
    others = [n for n in entries if n not in RESULT_FILES]
    if others or "bench.json" not in entries:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise OutputError(
            f"the output folder {out_dir} holds files that are not bench results ({shown or ', '.join(entries)})",
            "choose an empty or new folder with --out",
        )
    if not force:
        raise OutputError(
            f"the output folder {out_dir} already holds bench results",
            "pass --force to replace them, or choose another --out",
        )


def render_md(run) -> str:
    """bench.md of a BenchRun. A run where every device failed still says why."""
    from edgeprune.report.markdown import render_markdown
    from edgeprune.results.readers import add_bench
    from edgeprune.results.model import Report

    r = Report(sources=[])
    add_bench(r, run, "bench", None)
    return render_markdown(r)


def write_run(run, out_dir: str | Path, force: bool = False) -> dict[str, Path]:
    """Writes the run folder: bench.json, bench.md, bench.csv and, when something was measured,
    report.html (a run where every device failed has nothing to plot; bench.md says why)."""
    from edgeprune.report.html import render
    from edgeprune.report.tables import render_csv
    from edgeprune.results.readers import from_bench_run

    out = Path(out_dir)
    check_out_dir(out, force, [Path(m.path) for m in run.models])
    with RunFolder(out, force=True) as folder:  # check_out_dir has applied the stricter rules
        write_text_atomic(folder.path / "bench.json", json.dumps(run.to_dict(), indent=1) + "\n")
        write_text_atomic(folder.path / "bench.md", render_md(run))
        if run.results:
            model = from_bench_run(run)
            write_text_atomic(folder.path / "bench.csv", render_csv(model))
            write_text_atomic(folder.path / "report.html", render(model))
        else:
            from edgeprune.report.tables import CSV_COLUMNS

            write_text_atomic(folder.path / "bench.csv", ",".join(CSV_COLUMNS) + "\n")
    return {n: out / n for n in RESULT_FILES}

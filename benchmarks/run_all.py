"""Runs every benchmark script (each writes one section under benchmarks/results/) and assembles
BENCHMARKS.md. `make bench` calls this; `--assemble-only` just rebuilds BENCHMARKS.md."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["headline_bench.py", "pipeline_bench.py", "channels_bench.py", "harness_bench.py",
           "profile_bench.py"]  # in report order
SECTIONS = ["headline.md", "pipeline.md", "channels.md", "harness.md", "profile.md"]

HEADER = """# Benchmarks

Numbers measured by the scripts in `benchmarks/`; each section states its machine, versions,
threads and runs, and the command that produced it. Rerun everything with `make bench` (about an
hour on 2 cores), or one section with its script. Speed and size goals live here, never in timed
tests.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--assemble-only", action="store_true")
    args = ap.parse_args()
    if not args.assemble_only:
        for script in SCRIPTS:
            path = ROOT / "benchmarks" / script
            if path.is_file():
                print(f"== {script}", file=sys.stderr)
                subprocess.run([sys.executable, str(path)], cwd=ROOT, check=True)
    parts = [HEADER]
    for name in SECTIONS:
        p = ROOT / "benchmarks" / "results" / name
        if p.is_file():
            parts.append(p.read_text().strip() + "\n")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()

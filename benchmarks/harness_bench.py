"""Measures the benchmark harness itself on this host and writes a BENCHMARKS.md section to
benchmarks/results/harness.md:

- Overhead: time per device and per model beyond the runner, over `local`, loopback SSH (a real
  sshd, tests/sshd_fixture.py) and the emulated adb device (tests/adb_emulator.py); and the
  runner's own overhead beyond its timed invokes (interpreter start, imports, model load, warm-up).
- Agreement: the Python runner's median against `litert-benchmark` (ai-edge-litert's tool) on
  the same models, interleaved in the same run.
- Repeatability: the spread of the median over 5 repeated benches of one model.

    python benchmarks/harness_bench.py [--out benchmarks/results/harness.md] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from adb_emulator import AdbEmulator, AdbServer  # noqa: E402
from sshd_fixture import start_sshd  # noqa: E402

from edgeprune.bench import BenchSettings, bench_models  # noqa: E402
from edgeprune.bench.inventory import DeviceSpec  # noqa: E402


def make_models(folder: Path) -> dict[str, Path]:
    """Small, medium and large float convnets, made in a subprocess (TensorFlow stays out of here)."""
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "harness_make_models.py"), str(folder)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return {n: folder / f"{n}.tflite" for n in ("small", "medium", "large")}


def overhead(targets: dict[str, DeviceSpec], models: dict[str, Path], rounds: int = 3) -> list[dict]:
    """Median over `rounds` of the harness time per bench call (the device's wall time minus the
    runner's), with 1 and with 3 models; a first call per device fills its cache and is dropped."""
    s = BenchSettings(threads=[1], runs=20, warmup=2, min_secs=0.2)
    rows = []
    for kind, spec in targets.items():
        bench_models([models["small"]], [spec], s)  # fills the runner cache, like any second run
        harness: dict[int, list[float]] = {1: [], 3: []}
        runner_over: list[float] = []
        large: list[float] = []
        for _ in range(rounds):
            for n_models in (1, 3):
                paths = (
                    [models["small"]]
                    if n_models == 1
                    else [models["small"], models["medium"], models["large"]]
                )
                run = bench_models(paths, [spec], s)
                if run.failures:
                    raise SystemExit(f"{kind}: {run.failures}")
                harness[n_models].append(run.overhead_s[spec.name])
                runner_over += [r.wall_s - sum(r.samples_us) / 1e6 for r in run.results]
                large += [r.stats.median_us for r in run.results if r.model == "large.tflite"]
        h1, h3 = statistics.median(harness[1]), statistics.median(harness[3])
        rows.append(
            {
                "transport": kind,
                "harness_1_model_s": h1,
                "harness_3_models_s": h3,
                "harness_per_extra_model_s": (h3 - h1) / 2,
                "runner_overhead_s": statistics.median(runner_over),
                "large_median_us": statistics.median(large),
            }
        )
    return rows


def litert_benchmark_median_us(model: Path, runs: int) -> float:
    tool = Path(sys.executable).with_name("litert-benchmark")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        subprocess.run(
            [
                str(tool),
                "--model",
                str(model),
                "--num_runs",
                str(runs),
                "--warmup_runs",
                "5",
                "--num_threads",
                "1",
                "--result_json",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        return json.loads(out.read_text())["latency"]["median_ms"] * 1000.0


def agreement(models: dict[str, Path], rounds: int = 5) -> list[dict]:
    """Paired rounds, each tool right after the other, so drift in the host's load hits both; the
    ratio is the median of the per-round ratios, and the fastest round of each is shown too."""
    rows = []
    for name in ("medium", "large"):
        ours, theirs = [], []
        for _ in range(rounds):
            run = bench_models(
                [models[name]], ["local"], BenchSettings(threads=[1], runs=200, warmup=5, min_secs=1)
            )
            ours.append(run.results[0].stats.median_us)
            theirs.append(litert_benchmark_median_us(models[name], 200))
        rows.append(
            {
                "model": name,
                "bytes": models[name].stat().st_size,
                "python_runner_us": statistics.median(ours),
                "litert_benchmark_us": statistics.median(theirs),
                "python_runner_min_us": min(ours),
                "litert_benchmark_min_us": min(theirs),
                "ratio": statistics.median(o / t for o, t in zip(ours, theirs, strict=True)),
            }
        )
    return rows


def repeatability(model: Path, repeats: int, spec: DeviceSpec | str) -> dict:
    medians, cvs = [], []
    for _ in range(repeats):
        run = bench_models([model], [spec], BenchSettings(threads=[1], runs=50, warmup=5, min_secs=1))
        medians.append(run.results[0].stats.median_us)
        cvs.append(run.results[0].stats.cv)
    m = statistics.median(medians)
    return {
        "medians_us": medians,
        "spread": (max(medians) - min(medians)) / m,
        "cv_of_medians": statistics.stdev(medians) / statistics.mean(medians),
        "median_run_cv": statistics.median(cvs),
    }


def render(over, agree, rep, rep_name, load, seconds) -> str:
    lines = [
        "## Benchmark harness (edgeprune bench)",
        "",
        f"Host: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load[0]:.1f} before and {load[1]:.1f} after (the host is shared, so absolute numbers are noisy). "
        f"`python benchmarks/harness_bench.py` took {seconds:.0f} s.",
        "",
        "### Overhead beyond the runner",
        "",
        "Harness time per bench call on one device (median of 3, runner cache already filled): connect, probe, "
        "lock, copies with sha256 checks, cleanup; the runner's own time excluded. Runner overhead: the runner "
        "command's wall time minus its timed invokes (thermal snapshots, Python start, imports, model load, "
        "warm-up). Over ssh every round trip opens a channel on the ControlMaster connection; on this loaded "
        "host that costs 0.2-0.5 s.",
        "",
        "| transport | harness, 1 model (s) | harness, 3 models (s) | per extra model (s) | runner overhead per run (s) "
        "| large model median (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in over:
        lines.append(
            f"| {r['transport']} | {r['harness_1_model_s']:.2f} | {r['harness_3_models_s']:.2f} | "
            f"{r['harness_per_extra_model_s']:.2f} | {r['runner_overhead_s']:.2f} | "
            f"{r['large_median_us'] / 1000:.3f} |"
        )
    lines += [
        "",
        "The last column is the same Python runner on the same host reached three ways: the transport should not "
        "move the measured median beyond the host's own noise (see Repeatability).",
    ]
    lines += [
        "",
        "### Agreement with litert-benchmark",
        "",
        "Median latency, 1 thread, 200 runs, same models, 5 paired rounds (one tool right after the other); "
        "ratio = median of the per-round ratios. litert-benchmark runs the CompiledModel API and rounds to "
        "0.01 ms; the Python runner times Interpreter.invoke().",
        "",
        "| model | bytes | Python runner median (ms) | litert-benchmark median (ms) | fastest rounds (ms) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in agree:
        lines.append(
            f"| {r['model']} | {r['bytes']} | {r['python_runner_us'] / 1000:.3f} | "
            f"{r['litert_benchmark_us'] / 1000:.3f} | {r['python_runner_min_us'] / 1000:.3f} vs "
            f"{r['litert_benchmark_min_us'] / 1000:.3f} | {r['ratio']:.2f} |"
        )
    lines += [
        "",
        "### Repeatability",
        "",
        f"{len(rep['medians_us'])} benches of the {rep_name} model on `local`, 1 thread, >= 50 runs and >= 1 s each.",
        "",
        "| medians (ms) | spread (max-min)/median | CV of the medians | median within-run CV |",
        "|---|---:|---:|---:|",
        f"| {', '.join(f'{m / 1000:.3f}' for m in rep['medians_us'])} | {rep['spread']:.1%} | "
        f"{rep['cv_of_medians']:.1%} | {rep['median_run_cv']:.1%} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "harness.md"))
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        models = make_models(work / "models")
        server = start_sshd(work / "sshd")
        try:
            with AdbEmulator() as dev, AdbServer(dev) as adb:
                os.environ["ANDROID_ADB_SERVER_PORT"] = str(adb.port)
                targets = {
                    "local": DeviceSpec(name="local", kind="local"),
                    "ssh (loopback sshd)": DeviceSpec(
                        name="ssh",
                        kind="ssh",
                        address=server.address,
                        python=sys.executable,
                        identity_file=str(server.client_key),
                        ssh_options=tuple(server.client_options()),
                        workdir=str(work / "ssh-remote"),
                    ),
                    "adb (emulated device)": DeviceSpec(
                        name="adb", kind="adb", address=dev.serial, python=sys.executable
                    ),
                }
                over = overhead(targets, models)
        finally:
            server.stop()
        agree = agreement(models)
        rep = repeatability(models["medium"], a.repeats, "local")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(over, agree, rep, "medium", (load0, os.getloadavg()[0]), time.monotonic() - t0)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, a.out)
    print(text)


if __name__ == "__main__":
    main()

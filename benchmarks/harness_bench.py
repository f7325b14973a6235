"""Measures the benchmark harness itself on this host and writes a BENCHMARKS.md section to
benchmarks/results/harness.md:

- Overhead: time per device and per model beyond the runner, over `local`, loopback SSH (a real
  sshd, tests/sshd_fixture.py) and the emulated adb device (tests/adb_emulator.py); and the
  runner's own overhead beyond its timed invokes (interpreter start, imports, model load, warm-up).
- Agreement: the Python runner's median against `litert-benchmark` (ai-edge-litert's tool) on
  the same models, interleaved in the same run.
- Repeatability: the spread of the median over 5 repeated benches of one model.
- Paired ratios: MobileNetV2 224 float32 against int8 over 5 repeats on the host, the spread of
  `--paired`'s ratio next to the spread of absolute medians (edgeprune paired and unpaired, and
  litert-benchmark in the same repeats) and of the ratios that unpaired medians give.

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


def make_mobilenets(folder: Path) -> dict[str, Path]:
    """MobileNetV2 1.0 at 224x224x3 (weights=None: latency does not depend on the values), as
    float32 and as full int8 (calibrated on 8 random images), made in a subprocess."""
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--make-mobilenets", str(folder)],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return {n: folder / f"mnv2_224_{n}.tflite" for n in ("float32", "int8")}


def _make_mobilenets_here(folder: Path) -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import numpy as np

    from edgeprune._tf import keras, tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mnv2_224_float32.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (folder / "mnv2_224_int8.tflite").write_bytes(conv.convert())


def paired_spread(mobilenets: dict[str, Path], repeats: int) -> dict:
    """`repeats` times, in turn: edgeprune --paired (float32 the reference), edgeprune unpaired
    and litert-benchmark on both files, 1 thread. The ratio is int8 latency / float32 latency."""
    fp, q8 = mobilenets["float32"], mobilenets["int8"]
    common = dict(threads=[1], runs=100, warmup=5, min_secs=2.0)
    rows: dict[str, list[float]] = {k: [] for k in (
        "paired_ratio", "paired_low", "paired_high", "paired_first", "paired_second", "paired_fp_us", "paired_q8_us",
        "unpaired_ratio", "unpaired_fp_us", "unpaired_q8_us", "litert_ratio", "litert_fp_us", "litert_q8_us")}
    blocks, unstable = [], []
    for i in range(repeats):
        print(f"paired ratios: repeat {i + 1}/{repeats}", file=sys.stderr, flush=True)
        run = bench_models([fp, q8], ["local"], BenchSettings(paired=True, **common))
        if run.failures:
            raise SystemExit(f"paired: {run.failures}")
        (q,) = run.ratios
        med = {r.model: r.stats.median_us for r in run.results}
        rows["paired_ratio"].append(q.ratio)
        rows["paired_low"].append(q.low)
        rows["paired_high"].append(q.high)
        rows["paired_first"].append(q.halves[0])
        rows["paired_second"].append(q.halves[1])
        unstable.append("unstable_ratio" in q.flags)
        rows["paired_fp_us"].append(med[fp.name])
        rows["paired_q8_us"].append(med[q8.name])
        blocks.append(q.blocks)
        run = bench_models([fp, q8], ["local"], BenchSettings(**common))
        if run.failures:
            raise SystemExit(f"unpaired: {run.failures}")
        med = {r.model: r.stats.median_us for r in run.results}
        rows["unpaired_fp_us"].append(med[fp.name])
        rows["unpaired_q8_us"].append(med[q8.name])
        rows["unpaired_ratio"].append(med[q8.name] / med[fp.name])
        lf, lq = litert_benchmark_median_us(fp, 200), litert_benchmark_median_us(q8, 200)
        rows["litert_fp_us"].append(lf)
        rows["litert_q8_us"].append(lq)
        rows["litert_ratio"].append(lq / lf)
    return {"values": rows, "blocks": blocks, "unstable": unstable,
            "bytes": {n: p.stat().st_size for n, p in mobilenets.items()}}


def _spread(xs: list[float]) -> float:
    return (max(xs) - min(xs)) / statistics.median(xs)


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


def render_paired(p: dict) -> list[str]:
    v = p["values"]
    n = len(v["paired_ratio"])

    def row(label, key, scale=1.0, fmt="{:.3f}"):
        xs = v[key]
        return (f"| {label} | {', '.join(fmt.format(x * scale) for x in xs)} | {fmt.format(statistics.median(xs) * scale)} "
                f"| {_spread(xs):.1%} |")

    intervals = ", ".join(
        f"{lo:.3f}-{hi:.3f}" + (f" (flagged unstable_ratio: halves {a:.3f} then {b:.3f})" if bad else "")
        for lo, hi, a, b, bad in zip(v["paired_low"], v["paired_high"], v["paired_first"], v["paired_second"],
                                     p["unstable"])
    )
    steady = [r for r, bad in zip(v["paired_ratio"], p["unstable"]) if not bad]
    steady_line = (
        f" Over the {len(steady)} repeats not flagged, the paired ratio's spread is {_spread(steady):.1%}."
        if 1 < len(steady) < n
        else ""
    )
    return [
        "",
        "### Paired ratios",
        "",
        f"MobileNetV2 1.0 at 224x224x3, float32 ({p['bytes']['float32']:,} B) and full int8 "
        f"({p['bytes']['int8']:,} B), on `local`, 1 thread, {n} repeats. Each repeat runs, in turn, "
        "`bench --paired` (both models in one process, interleaved in shuffled blocks of >= 2 invokes and "
        ">= 0.01 s; float32 is the reference), an unpaired bench of both, and litert-benchmark (200 runs) on "
        "both. Ratio = int8 latency / float32 latency (its inverse is int8's speed-up); spread = (max - min) / "
        "median over the repeats. Target: the paired ratio's spread within 3 %.",
        "",
        "| quantity | per repeat | median | spread |",
        "|---|---|---:|---:|",
        row("paired ratio (edgeprune --paired)", "paired_ratio"),
        row("ratio of unpaired medians (edgeprune)", "unpaired_ratio"),
        row("ratio of litert-benchmark medians", "litert_ratio"),
        row("float32 median, ms: edgeprune --paired", "paired_fp_us", 1e-3),
        row("float32 median, ms: edgeprune unpaired", "unpaired_fp_us", 1e-3),
        row("float32 median, ms: litert-benchmark", "litert_fp_us", 1e-3),
        row("int8 median, ms: edgeprune --paired", "paired_q8_us", 1e-3),
        row("int8 median, ms: edgeprune unpaired", "unpaired_q8_us", 1e-3),
        row("int8 median, ms: litert-benchmark", "litert_q8_us", 1e-3),
        "",
        f"The paired ratio's 95 % bootstrap intervals per repeat (resampling {min(p['blocks'])}-{max(p['blocks'])} "
        f"blocks): {intervals}. An interval holds the noise within one run; the spread over repeats also holds "
        "what changes between processes (memory placement, the host's other jobs). Pairing cancels a slowdown "
        "that scales both models alike (clock, thermal state); it does not cancel contention that slows one "
        "more than the other (another job on the same cores or caches hurts the long, memory-bound float32 "
        "invoke more than the int8 one). A run whose ratio differs by more than 3 % between the first and "
        f"second halves of its blocks is flagged `unstable_ratio`.{steady_line}",
    ]


def render(over, agree, rep, rep_name, load, seconds, paired=None) -> str:
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
    ]
    if paired is not None:
        lines += render_paired(paired)
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "harness.md"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--make-mobilenets", metavar="DIR", help=argparse.SUPPRESS)  # the subprocess of make_mobilenets
    a = p.parse_args()
    if a.make_mobilenets:
        _make_mobilenets_here(Path(a.make_mobilenets))
        return
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
        paired = paired_spread(make_mobilenets(work / "mobilenets"), a.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(over, agree, rep, "medium", (load0, os.getloadavg()[0]), time.monotonic() - t0, paired)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, a.out)
    print(text)


if __name__ == "__main__":
    main()

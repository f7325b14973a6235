"""`edgeprune bench` / `devices` end to end on the host: the real CLI in a subprocess, the Python
runner on a real .tflite, the run folder and its refusal rules, and the benchmark_model runner's
flags, caching and parsing with a stand-in binary (a script printing a recorded output)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.bench import BenchRun, BenchSettings, DeviceSpec, bench_models
from test_bench_failures import assert_refused, snapshot

FIX = Path(__file__).parent / "fixtures"
TINY = FIX / "bench_tiny.tflite"
QUICK = ["--runs", "5", "--warmup", "1", "--min-secs", "0.05"]
ALL_CPUS = f"{sum(1 << c for c in os.sched_getaffinity(0)):x}"


@pytest.fixture
def own_tmp(tmp_path):
    """`local` keeps its work folder under TMPDIR: a test's own, so that nobody else's bench of
    this host (which holds the device lock) can make the test wait."""
    d = tmp_path / "tmpdir"
    d.mkdir()
    return {"TMPDIR": str(d)}


def test_cli_bench_local_writes_the_run_folder(cli_run, tmp_path, own_tmp):
    out = tmp_path / "run"
    r = cli_run("bench", TINY, "--target", "local", "--threads", "1,2", *QUICK, "--out", out, env=own_tmp)
    assert r.returncode == 0, r.stderr
    assert "[local]" in r.stderr and "median" in r.stderr  # per-device progress on stderr
    run = BenchRun.load(out / "bench.json")
    assert [x.threads for x in run.results] == [1, 2]
    for res in run.results:
        assert res.stats.source == "samples" and res.stats.count == len(res.samples_us) >= 5
        assert 0 < res.stats.min_us <= res.stats.median_us <= res.stats.p90_us <= res.stats.max_us
        assert res.model_bytes == TINY.stat().st_size and 0 < res.gzip_bytes
        assert res.memory.kind == "peak_rss" and res.memory.mb > 0
        assert res.runner_detail["runtime"] == "ai_edge_litert"
        # the default affinity on a board or host: every CPU this process may use
        assert res.affinity == "all" and res.cpu_mask == ALL_CPUS
        assert res.thermal_before is not None and res.thermal_after is not None
    assert "| bench_tiny | 1 |" in (out / "bench.md").read_text()  # the measurements table, per device
    rows = (out / "bench.csv").read_text().splitlines()
    assert rows[0].startswith("source,variant,device,target,threads,median_ms") and len(rows) == 3  # the report CSV
    assert not list(out.glob(".*")) and not list(tmp_path.glob(".run.*"))  # no temp file or folder left

    # the tmpdir's own mtime is left out: tempfile.gettempdir() probes it with a file it removes
    before = snapshot(out, TINY), sorted(tmp_path.iterdir())
    again = cli_run("bench", TINY, *QUICK, "--out", out, env=own_tmp)
    assert_refused(
        again,
        f"error: the output folder {out} already holds bench results; pass --force to replace them, or "
        "choose another --out.",
    )
    assert (snapshot(out, TINY), sorted(tmp_path.iterdir())) == before
    forced = cli_run("bench", TINY, *QUICK, "--out", out, "--force", env=own_tmp)
    assert forced.returncode == 0, forced.stderr


LEGACY = FIX / "benchmark_model" / "legacy.txt"


@pytest.mark.parametrize(
    "args,error",
    [
        (["missing.tflite"], "model missing.tflite does not exist; give the path of a .tflite file."),
        (
            [str(LEGACY)],
            f"{LEGACY} is not a TFLite model (no TFL3 identifier at byte 4); export a .tflite first, e.g. "
            "with `edgeprune export`.",
        ),
        (
            [str(TINY), "--threads", "1,x"],
            "Invalid value for '--threads': '1,x' is not a comma-separated list of integers, e.g. 1,4 "
            "(see 'edgeprune bench --help')",
        ),
        (
            [str(TINY), "--target", "usb:1"],
            "'usb:1' is not a target; use local, adb:SERIAL, ssh:[user@]host[:port] or a device name from "
            "--inventory.",
        ),
        (
            [str(TINY), "--target", "ssh:-oProxyCommand=touch"],
            "'-oProxyCommand=touch' is not an ssh address; write it as [user@]host[:port], e.g. "
            "pi@raspberrypi.local:22.",
        ),
    ],
)
def test_cli_bad_input_is_one_error_line_exit_2(cli_run, tmp_path, args, error):
    before = snapshot(tmp_path, TINY, LEGACY)
    r = cli_run("bench", *args, "--out", tmp_path / "o")
    assert_refused(r, f"error: {error}")
    assert snapshot(tmp_path, TINY, LEGACY) == before  # nothing written, no input touched


def test_bench_path_never_imports_tensorflow(tmp_path, own_tmp):
    code = (
        "import sys\n"
        "from edgeprune.bench import bench_models, BenchSettings\n"
        f"run = bench_models([{str(TINY)!r}], ['local'], BenchSettings(runs=3, warmup=0, min_secs=0.01))\n"
        "assert run.results and not run.failures, run.failures\n"
        "assert 'tensorflow' not in sys.modules, 'bench imported tensorflow'\n"
    )
    env = {**os.environ, **own_tmp}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr


def test_cli_devices_lists_the_host(cli_run):
    r = cli_run("devices", "--target", "local", "--json")
    assert r.returncode == 0, r.stderr
    (info,) = json.loads(r.stdout)
    assert info["reachable"] and info["authorized"] and info["abi"]
    assert "python" in info["runners"] and "ai_edge_litert" in info["runtimes"]
    assert info["cores"]


FAKE_BM = r"""#!/bin/sh
# stands in for a user's benchmark_model binary: records its flags, prints a recorded output
echo "$@" >> "$(dirname "$0")/../argv.log"
cat {fixture}
"""


def test_benchmark_model_runner_flags_cache_and_repeats(tmp_path):
    binary = tmp_path / "bin" / "benchmark_model"
    binary.parent.mkdir()
    binary.write_text(FAKE_BM.format(fixture=FIX / "benchmark_model" / "peak_memory_delegate.txt"))
    binary.chmod(0o755)
    work = tmp_path / "device"
    inv = tmp_path / "inv.toml"
    inv.write_text(
        f'[[device]]\nname = "host"\ntarget = "local"\nrunner = "benchmark_model"\n'
        f'workdir = "{work}"\nbenchmark_model = {{ "*" = "{binary}" }}\n'
    )
    s = BenchSettings(
        threads=[2], runs=7, warmup=3, min_secs=0.5, repeats=3, use_xnnpack=False, peak_memory=True
    )
    run = bench_models([TINY], ["host"], s, inv)
    assert not run.failures, run.failures
    (res,) = run.results
    assert res.runner == "benchmark_model" and res.stats.source == "repeats"
    assert res.repeat_medians_us == [105718.0] * 3 and res.stats.median_us == 105718.0
    assert res.memory.kind == "peak_footprint" and res.memory.mb == pytest.approx(21.5078)
    assert res.tool["p95_us"] == 106281 and "TfLiteXNNPackDelegate" in res.tool["delegates"]
    assert len(res.runner_detail["binary_sha256"]) == 64
    cached = list((work / "cache").glob("*-benchmark_model"))
    assert len(cached) == 1 and cached[0].name.startswith(res.runner_detail["binary_sha256"][:16])
    calls = (work / "argv.log").read_text().splitlines()
    assert len(calls) == 3
    flags = calls[0].split()
    for f in (
        "--num_threads=2",
        "--warmup_runs=3",
        "--num_runs=7",
        "--min_secs=0.5",
        "--max_secs=150",
        "--use_xnnpack=false",
    ):
        assert f in flags, calls[0]
    assert any(f.startswith("--graph=") and f.endswith("bench_tiny.tflite") for f in flags)
    assert "--report_peak_memory_footprint=true" in flags
    stamp = cached[0].stat().st_mtime_ns
    run2 = bench_models([TINY], ["host"], s, inv)
    assert (
        not run2.failures and list((work / "cache").glob("*-benchmark_model"))[0].stat().st_mtime_ns == stamp
    )
    assert [p.name for p in work.iterdir() if p.name.startswith("run-")] == []  # run folders removed


def test_rounds_go_over_the_whole_matrix_in_turn(tmp_path):
    """With --repeats the device sees a, b, a, b, a, b, not a, a, a, b, b, b: warming up is spread
    over every model. benchmark_model's spread comes from the rounds."""
    binary = tmp_path / "benchmark_model"
    binary.write_text(FAKE_BM.format(fixture=FIX / "benchmark_model" / "tflite_info.txt"))
    binary.chmod(0o755)
    other = tmp_path / "other.tflite"
    other.write_bytes(TINY.read_bytes())
    work = tmp_path / "device"
    here = DeviceSpec(
        name="host",
        kind="local",
        workdir=str(work),
        runner="benchmark_model",
        benchmark_model=(("*", str(binary)),),
    )
    run = bench_models([TINY, other], [here], BenchSettings(threads=[1], runs=3, repeats=3))
    assert not run.failures, run.failures
    graphs = [
        next(f for f in c.split() if f.startswith("--graph=")).rsplit("/", 1)[1]
        for c in (work / "argv.log").read_text().splitlines()
    ]
    assert graphs == ["bench_tiny.tflite", "other.tflite"] * 3
    assert all(len(r.repeat_medians_us) == 3 for r in run.results)


def test_python_runner_rounds_pool_samples_and_keep_round_medians(tmp_path):
    here = DeviceSpec(name="host", kind="local", workdir=str(tmp_path / "device"))
    run = bench_models([TINY], [here], BenchSettings(threads=[1], runs=5, warmup=0, min_secs=0.01, repeats=2))
    (res,) = run.results
    assert len(res.repeat_medians_us) == 2 and res.stats.source == "samples"
    assert res.stats.count == len(res.samples_us) >= 10


def test_benchmark_model_runner_without_a_binary_names_the_fix(tmp_path):
    here = DeviceSpec(name="local", kind="local", workdir=str(tmp_path / "device"))
    run = bench_models([TINY], [here], BenchSettings(runner="benchmark_model", runs=1))
    (f,) = run.failures
    assert "no benchmark_model binary for ABI" in f.reason and "--benchmark-model" in f.reason
    assert not run.results


def test_a_device_held_by_another_run_is_reported_busy_and_a_dead_owner_is_taken_over(tmp_path):
    work = tmp_path / "device"
    inv = tmp_path / "inv.toml"
    inv.write_text(f'[[device]]\nname = "host"\ntarget = "local"\nworkdir = "{work}"\n')
    (work / ".lock").mkdir(parents=True)
    (work / ".lock" / "owner").write_text("build-box-7 4242 20260101-000000-abcdef\n")
    s = BenchSettings(runs=3, warmup=0, min_secs=0.01, lock_wait_s=0.5)
    run = bench_models([TINY], ["host"], s, inv)
    (f,) = run.failures
    assert "busy with another edgeprune run (build-box-7 4242" in f.reason and ".lock" in f.reason
    assert (work / ".lock" / "owner").exists()  # someone else's lock is left alone

    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    (work / ".lock" / "owner").write_text(f"{socket.gethostname()} {dead.pid} 20260101-000000-abcdef\n")
    run = bench_models([TINY], ["host"], s, inv)
    assert not run.failures and run.results
    assert sorted(p.name for p in work.iterdir()) == ["cache"]  # lock released, run folder gone


def test_bench_and_devices_take_the_short_options_of_the_other_commands(tmp_path, cli_run):
    out = tmp_path / "run"
    r = cli_run("bench", TINY, *QUICK, "-t", "local", "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and (out / "bench.json").is_file()  # -q: no per-device progress
    assert r.stdout.startswith("# edgeprune bench\n")
    r = cli_run("devices", "-t", "local", "-q")
    assert r.returncode == 0 and r.stderr == "" and "local" in r.stdout

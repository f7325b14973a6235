"""adb end to end: the real `adb` client and an isolated adb server (ANDROID_ADB_SERVER_PORT)
talking over TCP to the adbd-protocol emulator in tests/adb_emulator.py. The emulator is a legacy
device: no shell_v2 (exit codes lost), CRLF output, sync v1."""

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from adb_emulator import AdbEmulator, AdbServer
from conftest import require_tool
from edgeprune.bench import BenchRun, BenchSettings, bench_models, probe_devices
from edgeprune.bench.adb import AdbTransport
from edgeprune.bench.device import DeviceSession
from edgeprune.bench.inventory import DeviceSpec

TINY = Path(__file__).parent / "fixtures" / "bench_tiny.tflite"
PROPS = {
    "ro.product.model": "Pixel Test 7",
    "ro.product.manufacturer": "Google",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor G2",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.sdk": "33",
    "ro.build.version.release": "13",
}
QUICK = BenchSettings(threads=[1, 2], runs=5, warmup=1, min_secs=0.05)


@pytest.fixture(scope="module")
def adb_path():
    return require_tool("adb")


@pytest.fixture(scope="module")
def phone(adb_path):
    with AdbEmulator(props=PROPS) as dev, AdbServer(dev, adb=adb_path) as srv:
        yield dev, srv


@pytest.fixture
def adb_env(phone, monkeypatch):
    """The harness's adb client talks to the test's own adb server."""
    _, srv = phone
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(srv.port))
    return srv.env


def left_behind(dev) -> list[str]:
    """Run folders or locks left in the device's work folder (the cache is meant to stay)."""
    return [p.name for p in (dev.sandbox / "edgeprune").iterdir() if p.name.startswith(("run-", ".lock", ".pid"))]


def spec_for(dev, name="phone", **kw):
    return DeviceSpec(name=name, kind="adb", address=dev.serial, python=sys.executable, **kw)


def test_probe_reads_the_identity_from_getprop(phone, adb_env):
    dev, _ = phone
    (info,) = probe_devices([spec_for(dev)])
    assert info.reachable and info.authorized, info.error
    assert (info.manufacturer, info.model, info.soc) == ("Google", "Pixel Test 7", "Google Tensor G2")
    assert (info.abi, info.android_sdk, info.os) == ("arm64-v8a", 33, "Android 13")
    assert [c.max_freq_khz for c in info.cores] == [1800000] * 4 + [2400000] * 3 + [3000000]
    assert info.thermal.thermal_status == 0 and info.thermal.max_temp_c == pytest.approx(35.0)
    assert "python" in info.runners


def test_rc_marker_and_crlf_on_a_legacy_device(phone, adb_env):
    dev, _ = phone
    t = AdbTransport(dev.serial)
    t.connect(20)
    r = t.shell("echo one; echo two; exit 3", 20)
    assert r.returncode == 3  # adb itself exited 0: the code comes from the marker
    assert r.stdout == "one\ntwo\n"  # the device sent CRLF
    assert t.shell("true", 20).returncode == 0
    assert t.run(["printf", "%s", "a b;echo pwned"], 20).stdout == "a b;echo pwned"


def test_push_and_pull_keep_sha256(phone, adb_env, tmp_path):
    dev, _ = phone
    data = os.urandom(300_000) + b"\r\n\n\r" * 1000
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    with DeviceSession(spec_for(dev)) as s:
        s.probe()
        s.open_folders()
        remote = f"{s.run_dir}/blob copy;x.bin"
        s.push_checked(src, remote)  # checks sha256 on the device
        assert s.remote_sha256(remote) == hashlib.sha256(data).hexdigest()
        back = tmp_path / "back.bin"
        s.transport.pull([(remote, back)], 30)
        assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert left_behind(dev) == []


def test_cli_bench_on_the_phone_with_the_python_runner(phone, adb_env, tmp_path, cli_run):
    dev, _ = phone
    inv = tmp_path / "devices.toml"
    inv.write_text(
        f'[[device]]\nname = "phone"\ntarget = "adb:{dev.serial}"\nrunner = "python"\n'
        f'python = "{sys.executable}"\nthreads = [1, 4]\n'
    )
    out = tmp_path / "out"
    r = cli_run(
        "bench",
        TINY,
        "--inventory",
        inv,
        "--runs",
        "5",
        "--warmup",
        "1",
        "--min-secs",
        "0.05",
        "--out",
        out,
        env=adb_env,
    )
    assert r.returncode == 0, r.stderr
    assert "[phone]" in r.stderr
    run = BenchRun.load(out / "bench.json")
    assert [x.threads for x in run.results] == [1, 4]
    for res in run.results:
        assert res.affinity == "big" and res.cpu_mask == "f0"  # big cores from cpuinfo_max_freq
        assert res.stats.count == len(res.samples_us) >= 5 and res.stats.median_us > 0
        assert res.thermal_before.thermal_status == 0 and res.thermal_before.governors["cpu7"] == "schedutil"
    assert any(c.startswith("sh -c") or "taskset" in c for c in dev.commands)
    assert any("taskset f0" in c for c in dev.commands)
    assert left_behind(dev) == []
    r = cli_run("devices", env=adb_env)  # no --target: the host and every adb device
    assert r.returncode == 0, r.stderr
    assert f"adb:{dev.serial}" in r.stdout and "Pixel Test 7" in r.stdout


def test_unauthorized_device_says_accept_the_prompt(adb_path, monkeypatch):
    with (
        AdbEmulator(props=PROPS, unauthorized=True) as dev,
        AdbServer(dev, adb=adb_path, expect="unauthorized") as srv,
    ):
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(srv.port))
        (info,) = probe_devices([spec_for(dev)])
        assert info.reachable and not info.authorized
        assert "unauthorized" in info.error and "accept" in info.error and "prompt" in info.error
        run = bench_models([TINY], [spec_for(dev)], QUICK)
        assert not run.results and "accept" in run.failures[0].reason


def test_a_device_vanishing_mid_run_fails_alone(adb_path, monkeypatch):
    with (
        AdbEmulator(props=PROPS, vanish_on="litert_runner.py", vanish_delay_s=1.0) as bad,
        AdbEmulator(props={**PROPS, "ro.product.model": "Steady"}) as good,
        AdbServer(bad, adb=adb_path) as srv,
    ):
        srv.connect(good.serial)
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(srv.port))
        t0 = time.monotonic()
        run = bench_models(
            [TINY],
            [spec_for(bad, "flaky"), spec_for(good, "steady")],
            BenchSettings(threads=[1], runs=5, warmup=1, min_secs=4),
        )
        assert time.monotonic() - t0 < 60  # no hang
        assert [r.device for r in run.results] == ["steady"]
        reasons = [f.reason for f in run.failures if f.device == "flaky"]
        assert reasons and "went away" in reasons[0], run.failures
        assert all(f.device == "flaky" for f in run.failures)
        assert [d.reachable for d in run.devices] == [True, True]


FAKE_BM = r"""#!/bin/sh
# stands in for a user's benchmark_model binary: records its flags, prints a recorded output
echo "$@" >> "$(dirname "$0")/../argv.log"
cat {fixture}
"""


def test_benchmark_model_is_pushed_once_and_run_on_big_cores(phone, adb_env, tmp_path):
    dev, _ = phone
    binary = tmp_path / "android_aarch64_benchmark_model"
    fixture = Path(__file__).parent / "fixtures" / "benchmark_model" / "tflite_info.txt"
    binary.write_text(FAKE_BM.format(fixture=fixture))
    spec = DeviceSpec(name="phone", kind="adb", address=dev.serial, runner="benchmark_model")
    s = BenchSettings(threads=[4], runs=10, warmup=2, repeats=2)
    run = bench_models([TINY], [spec], s, benchmark_model={"arm64-v8a": str(binary)})
    assert not run.failures, run.failures
    (res,) = run.results
    assert res.repeat_medians_us == [105718.0, 105718.0] and res.memory.kind == "footprint_delta"
    assert res.cpu_mask == "f0" and any("taskset f0" in c for c in dev.commands)
    pushes = sum(1 for c in dev.commands if "benchmark_model" in c and "chmod" in c)
    run2 = bench_models([TINY], [spec], s, benchmark_model={"arm64-v8a": str(binary)})
    assert not run2.failures
    assert sum(1 for c in dev.commands if "benchmark_model" in c and "chmod" in c) == pushes == 1
    flags = (dev.sandbox / "edgeprune" / "argv.log").read_text().splitlines()[0].split()
    assert "--num_threads=4" in flags and "--num_runs=10" in flags and "--warmup_runs=2" in flags


def test_a_phone_without_python_is_told_to_use_benchmark_model(phone, adb_env):
    dev, _ = phone
    spec = DeviceSpec(name="phone", kind="adb", address=dev.serial, python="/system/bin/python3-absent")
    run = bench_models([TINY], [spec], QUICK)
    (f,) = run.failures
    assert "does not run on the device" in f.reason and "--runner benchmark_model" in f.reason


def test_a_hot_phone_is_flagged_throttled_not_hidden(phone, adb_env):
    dev, _ = phone
    dev.set_thermal_status(3)
    dev.set_temperature(82500)
    try:
        run = bench_models(
            [TINY], [spec_for(dev)], BenchSettings(threads=[1], runs=3, warmup=0, min_secs=0.01)
        )
    finally:
        dev.set_thermal_status(0)
        dev.set_temperature(35000)
    (res,) = run.results
    assert "throttled" in res.flags
    assert res.thermal_before.thermal_status == 3 and res.thermal_after.max_temp_c == pytest.approx(82.5)
    assert any("Android thermal status 3" in n and "82.5 C" in n for n in res.notes), res.notes


def test_a_wifi_serial_not_listed_yet_is_connected(adb_path, monkeypatch):
    with AdbEmulator(props=PROPS) as dev, AdbServer(None, adb=adb_path) as srv:
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(srv.port))
        assert dev.serial not in srv.devices()
        (info,) = probe_devices([f"adb:{dev.serial}"])
        assert info.reachable and info.authorized and info.model == "Pixel Test 7", info.error
        srv.run("disconnect", dev.serial, timeout=10)


def test_a_model_name_full_of_shell_metacharacters_over_adb(phone, adb_env, tmp_path):
    dev, _ = phone
    evil = tmp_path / "a b;reboot $(touch PWNED) `id`, 'q' &.tflite"
    evil.write_bytes(TINY.read_bytes())
    run = bench_models([evil], [spec_for(dev)], BenchSettings(threads=[1], runs=3, warmup=0, min_secs=0.01))
    assert not run.failures, run.failures
    assert run.results[0].model == evil.name and run.results[0].stats.median_us > 0
    assert not list(dev.root.rglob("PWNED")) and not list(tmp_path.rglob("PWNED"))
    assert left_behind(dev) == []


def test_cool_to_waits_for_the_phone_to_cool_down(phone, adb_env):
    import threading

    dev, _ = phone
    dev.set_temperature(60000)
    cooler = threading.Timer(1.5, dev.set_temperature, args=(36000,))
    cooler.start()
    try:
        t0 = time.monotonic()
        s = BenchSettings(threads=[1], runs=3, warmup=0, min_secs=0.01, cool_to_c=45)
        run = bench_models([TINY], [spec_for(dev)], s)
        waited = time.monotonic() - t0
    finally:
        cooler.join()
        dev.set_temperature(35000)
    (res,) = run.results
    assert res.thermal_before.max_temp_c == pytest.approx(36.0) and waited >= 1.5
    assert not any("still" in n for n in res.notes)
    hot = BenchSettings(threads=[1], runs=3, warmup=0, min_secs=0.01, cool_to_c=30, cool_wait_max_s=0.5)
    (res,) = bench_models([TINY], [spec_for(dev)], hot).results
    assert any("still 35.0 C after waiting 0.5 s to cool to 30 C" in n for n in res.notes), res.notes

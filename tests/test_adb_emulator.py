"""The adbd emulator against the real `adb` client and server.

These tests prove that the emulator behaves like a (legacy, feature-less) Android device as far as the
real adb client can tell, so the harness's adb transport can be tested end to end against it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time

import pytest

from adb_emulator import AdbEmulator, AdbServer
from conftest import require_tool

PROPS = {
    "ro.product.model": "Pixel Test 7",
    "ro.product.manufacturer": "Google",
    "ro.soc.model": "Tensor G2",
    "ro.product.cpu.abi": "arm64-v8a",
}


@pytest.fixture(scope="module")
def adb_path():
    return require_tool("adb")


@pytest.fixture(scope="module")
def device(adb_path):
    """One emulated device and one isolated adb server connected to it, shared by the quick tests."""
    with AdbEmulator(props=PROPS) as dev, AdbServer(dev, adb=adb_path) as srv:
        yield dev, srv


def sh(srv: AdbServer, serial: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """`adb -s SERIAL shell COMMAND`, raw bytes out."""
    return srv.run("-s", serial, "shell", command, timeout=timeout, text=False)


def test_reserved_emulator_ports_are_refused():
    with pytest.raises(ValueError, match="5555-5585"):
        AdbEmulator(port=5555)
    with pytest.raises(ValueError):
        AdbEmulator(port=5585)


def test_adb_devices_lists_the_emulator_as_device(device):
    dev, srv = device
    assert srv.devices().get(dev.serial) == "device"
    out = srv.run("devices", "-l", timeout=10).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(dev.serial))
    # the CNXN banner's identity reaches the client (spaces become underscores in `devices -l`)
    assert "model:Pixel_Test_7" in line and "device:emu8" in line and "product:emu_phone" in line


def test_getprop_identity_with_crlf(device):
    dev, srv = device
    res = sh(srv, dev.serial, "getprop ro.product.model")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"Pixel Test 7\r\n"
    assert sh(srv, dev.serial, "getprop ro.soc.model").stdout == b"Tensor G2\r\n"
    assert sh(srv, dev.serial, "getprop no.such.prop").stdout == b"\r\n"  # like the real getprop
    dump = sh(srv, dev.serial, "getprop").stdout.decode()
    assert "[ro.product.manufacturer]: [Google]\r\n" in dump
    assert "[ro.build.version.sdk]: [33]\r\n" in dump
    assert "[ro.product.cpu.abilist]: [arm64-v8a,armeabi-v7a,armeabi]\r\n" in dump


def test_legacy_shell_loses_exit_code_but_rc_marker_survives(device):
    dev, srv = device
    res = sh(srv, dev.serial, "echo hi; exit 3")
    assert res.returncode == 0  # legacy shell: the client never sees the device's exit code
    assert res.stdout == b"hi\r\n"
    res = sh(srv, dev.serial, "(echo hi; exit 3); echo __rc=$?")
    assert res.returncode == 0
    assert res.stdout.replace(b"\r\n", b"\n").splitlines()[-1] == b"__rc=3"
    # stderr is merged into stdout, as on a legacy device
    res = sh(srv, dev.serial, "echo out; echo err >&2")
    assert res.stdout == b"out\r\nerr\r\n" and res.stderr == b""


def test_exec_out_is_binary_safe(device):
    dev, srv = device
    res = srv.run("-s", dev.serial, "exec-out", "printf 'a\\nb\\000c'", timeout=20, text=False)
    assert res.returncode == 0
    assert res.stdout == b"a\nb\x00c"


def test_push_pull_round_trip_3mb(device, tmp_path):
    dev, srv = device
    payload = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "model.bin"
    src.write_bytes(payload)
    res = srv.run("-s", dev.serial, "push", str(src), "/data/local/tmp/rt/model.bin", timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 file pushed" in res.stdout
    # the bytes really landed in the sandbox standing in for /data/local/tmp
    landed = (dev.sandbox / "rt/model.bin").read_bytes()
    assert hashlib.sha256(landed).digest() == hashlib.sha256(payload).digest()
    back = tmp_path / "back.bin"
    res = srv.run("-s", dev.serial, "pull", "/data/local/tmp/rt/model.bin", str(back), timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    # and the device sees it through the shell, at its device path
    res = sh(srv, dev.serial, "wc -c < /data/local/tmp/rt/model.bin; sha256sum /data/local/tmp/rt/model.bin")
    lines = res.stdout.decode().split("\r\n")
    assert lines[0].strip() == str(len(payload))
    assert lines[1] == f"{hashlib.sha256(payload).hexdigest()}  /data/local/tmp/rt/model.bin"


def test_push_of_a_metacharacter_name_and_sync_errors(device, tmp_path):
    dev, srv = device
    src = tmp_path / "a b;reboot.tflite"
    src.write_bytes(b"tflite")
    res = srv.run("-s", dev.serial, "push", str(src), "/data/local/tmp/meta/a b;reboot.tflite", timeout=20)
    assert res.returncode == 0, res.stdout
    assert (dev.sandbox / "meta" / "a b;reboot.tflite").read_bytes() == b"tflite"
    listing = srv.run("-s", dev.serial, "ls", "/data/local/tmp/meta", timeout=20).stdout
    assert "a b;reboot.tflite" in listing
    # a missing remote file is a clear pull error
    res = srv.run("-s", dev.serial, "pull", "/data/local/tmp/nope.bin", str(tmp_path / "x"), timeout=20)
    assert res.returncode != 0 and "does not exist" in res.stdout + res.stderr
    # a path outside the sandbox is refused
    res = srv.run("-s", dev.serial, "push", str(src), "/system/app/x.tflite", timeout=20)
    assert res.returncode != 0 and "failed to copy" in res.stdout + res.stderr


def test_shell_output_streams_while_the_command_runs(device):
    dev, srv = device
    proc = subprocess.Popen(
        [srv.adb, "-s", dev.serial, "shell", "echo first; sleep 2; echo second"],
        env=srv.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        first = proc.stdout.readline()
        t_first = time.monotonic() - t0
        rest = proc.stdout.read()
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert first == b"first\r\n"
    assert t_first < 1.5, f"first line took {t_first:.2f}s: output is not streamed"
    assert rest == b"second\r\n"


def test_device_paths_sysfs_thermal_and_taskset(device):
    dev, srv = device
    res = sh(srv, dev.serial, "cd /data/local/tmp && pwd; which getprop; "
                              "cat /sys/devices/system/cpu/possible; "
                              "cat /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq; "
                              "cat /sys/class/thermal/thermal_zone0/temp; "
                              "dumpsys thermalservice | grep 'Thermal Status'")
    lines = res.stdout.decode().split("\r\n")
    assert lines[0] == "/data/local/tmp"  # host paths are shown as device paths
    assert lines[1] == "/system/bin/getprop"
    assert lines[2] == "0-7"
    assert [int(x) for x in lines[3:11]] == [1800000] * 4 + [2400000] * 3 + [3000000]
    assert lines[11] == "35000"
    assert lines[12] == "Thermal Status: 0"
    # the prime-core mask (CPU 7) must still run on a host with fewer CPUs; CPU 0 alone pins to 0
    host_cpus = sorted(os.sched_getaffinity(0))
    res = sh(srv, dev.serial, "taskset 80 sh -c 'grep Cpus_allowed_list /proc/self/status'; echo __rc=$?; "
                              "taskset 0x1 sh -c 'grep Cpus_allowed_list /proc/self/status'")
    out = res.stdout.decode().split("\r\n")
    assert out[1] == "__rc=0", out
    allowed = out[0].split(":")[1].strip()
    if 7 in host_cpus:
        assert allowed == "7"
    else:
        assert allowed == (f"{host_cpus[0]}-{host_cpus[-1]}" if len(host_cpus) > 1 else str(host_cpus[0]))
    if 0 in host_cpus:
        assert out[2].split(":")[1].strip() == "0"
    # device state can be changed from the test
    dev.set_temperature(71000)
    assert sh(srv, dev.serial, "cat /sys/class/thermal/thermal_zone0/temp").stdout == b"71000\r\n"
    dev.set_temperature(35000)
    assert any("taskset 80" in c for c in dev.commands)


def test_unauthorized_device_is_listed_as_unauthorized(adb_path):
    with AdbEmulator(unauthorized=True) as dev, \
            AdbServer(dev, adb=adb_path, expect="unauthorized") as srv:
        assert srv.devices().get(dev.serial) == "unauthorized"
        res = srv.run("-s", dev.serial, "shell", "echo hi", timeout=20)
        assert res.returncode != 0
        assert "unauthorized" in res.stderr
        assert "hi" not in res.stdout
        assert not dev.commands  # nothing ever ran on the device


def test_device_vanishing_mid_shell_ends_the_client_promptly(adb_path):
    with AdbEmulator(vanish_on="sleep 30", vanish_delay_s=1.0) as dev, AdbServer(dev, adb=adb_path) as srv:
        t0 = time.monotonic()
        res = sh(srv, dev.serial, "echo started; sleep 30; echo __rc=$?", timeout=25)
        elapsed = time.monotonic() - t0
        assert elapsed < 10, f"the client hung for {elapsed:.1f}s after the device vanished"
        assert dev.vanished.is_set()
        assert res.stdout.startswith(b"started\r\n")
        # legacy shell: the client exits 0 even so; only the missing rc marker tells a harness it failed
        assert b"__rc=" not in res.stdout
        # the device's command was killed, not left running
        deadline = time.monotonic() + 5
        while dev.live_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dev.live_processes() == []
        # and the next command fails with an error instead of hanging
        t0 = time.monotonic()
        res = srv.run("-s", dev.serial, "shell", "echo again", timeout=25)
        assert time.monotonic() - t0 < 10
        assert res.returncode != 0
        assert "offline" in res.stderr or "not found" in res.stderr


def test_disconnect_is_explicit_and_refuses_new_connections(adb_path):
    with AdbEmulator() as dev, AdbServer(dev, adb=adb_path) as srv:
        assert sh(srv, dev.serial, "echo up").stdout == b"up\r\n"
        assert dev.connections == 1
        dev.disconnect()
        assert dev.connections == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((dev.host, dev.port), timeout=5).close()
        t0 = time.monotonic()
        res = sh(srv, dev.serial, "echo up")
        assert time.monotonic() - t0 < 10
        assert res.returncode != 0 and b"up" not in res.stdout
        assert srv.devices().get(dev.serial) != "device"

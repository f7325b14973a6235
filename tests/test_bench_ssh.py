"""SSH end to end: a real /usr/sbin/sshd on 127.0.0.1 (throwaway keys and config, see
sshd_fixture.py), the real OpenSSH client, the Python runner on a real .tflite."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_tool
from edgeprune.bench import BenchRun, BenchSettings, DeviceSpec, bench_models, load_inventory, probe_devices
from sshd_fixture import free_port, start_sshd

TINY = Path(__file__).parent / "fixtures" / "bench_tiny.tflite"
EVIL = "a b;reboot $(touch PWNED) `touch PWNED2` 'q' \"d\".tflite"
SETTINGS = BenchSettings(threads=[1, 2], runs=5, warmup=1, min_secs=0.05)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    require_tool("ssh")
    require_tool("sftp")
    sshd = require_tool("sshd")
    server = start_sshd(tmp_path_factory.mktemp("sshd"), sshd)
    yield server
    server.stop()


def inventory(tmp_path, text):
    p = tmp_path / "devices.toml"
    p.write_text(text)
    return p


def test_bench_over_ssh_with_shell_metacharacters_in_the_name(sshd, tmp_path):
    remote = tmp_path / "remote work"
    inv = inventory(tmp_path, sshd.inventory_entry("board", python=sys.executable, workdir=str(remote)))
    model = tmp_path / "models" / EVIL
    model.parent.mkdir()
    shutil.copy(TINY, model)
    before_ctl = set(Path("/tmp").glob("ep-*"))
    run = bench_models([model], ["board"], SETTINGS, inv)
    assert not run.failures, run.failures
    assert [r.threads for r in run.results] == [1, 2]
    for r in run.results:
        assert r.model == EVIL and r.target == f"ssh:{sshd.address}"
        assert r.stats.count == len(r.samples_us) >= 5 and r.stats.median_us > 0
        assert r.stats.min_us <= r.stats.median_us <= r.stats.max_us
        assert r.runner_detail["runtime"] == "ai_edge_litert" and r.memory.kind == "peak_rss"
    (dev,) = run.devices
    assert dev.reachable and dev.authorized and "python" in dev.runners and dev.cores
    # nothing was executed from the name, nothing stays behind but the cache
    for root in (tmp_path, Path.home()):
        assert not list(root.rglob("PWNED*")), "a file name was executed"
    assert sorted(p.name for p in remote.iterdir()) == ["cache"]
    assert [p.name.split("-", 1)[1] for p in (remote / "cache").iterdir()] == ["litert_runner.py"]
    assert set(Path("/tmp").glob("ep-*")) <= before_ctl  # the ControlMaster folder is gone


def test_cli_bench_and_devices_over_ssh(sshd, tmp_path, cli_run):
    inv = inventory(
        tmp_path, sshd.inventory_entry("board", python=sys.executable, workdir=str(tmp_path / "w"))
    )
    r = cli_run("devices", "--inventory", inv, "--target", "board")
    assert r.returncode == 0, r.stderr
    assert "board" in r.stdout and " ok " in r.stdout and "python" in r.stdout, r.stdout
    out = tmp_path / "out"
    r = cli_run(
        "bench",
        TINY,
        "--inventory",
        inv,
        "--target",
        "board",
        "--threads",
        "1",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--min-secs",
        "0.05",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert "[board]" in r.stderr
    run = BenchRun.load(out / "bench.json")
    assert len(run.results) == 1 and run.results[0].device == "board"


def test_wrong_key_says_authentication_failed(sshd, tmp_path, cli_run):
    inv = inventory(tmp_path, sshd.inventory_entry("board", key=sshd.wrong_key, python=sys.executable))
    r = cli_run("bench", TINY, "--inventory", inv, "--out", tmp_path / "o")
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "authentication failed" in err[0], r.stderr
    (info,) = probe_devices(["board"], load_inventory(inv))
    assert not info.authorized and "authentication failed" in info.error


def test_closed_port_fails_fast_and_the_other_device_is_kept(sshd, tmp_path):
    port = free_port()  # nothing listens there
    inv = inventory(
        tmp_path,
        sshd.inventory_entry("board", python=sys.executable)
        .replace(str(sshd.port), str(port))
        .replace("127.0.0.1", "127.0.0.1"),
    )
    t0 = time.monotonic()
    here = DeviceSpec(name="local", kind="local", workdir=str(tmp_path / "here"))
    run = bench_models([TINY], ["board", here], BenchSettings(runs=3, warmup=0, min_secs=0.01), inv)
    assert time.monotonic() - t0 < 30
    assert [r.device for r in run.results] == ["local"]
    (f,) = run.failures
    assert f.device == "board" and "connection refused" in f.reason


def test_remote_without_a_tflite_runtime_names_what_to_install(sshd, tmp_path):
    bare = tmp_path / "bare-venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60)
    py = bare / "bin" / "python"
    inv = inventory(tmp_path, sshd.inventory_entry("board", python=str(py), workdir=str(tmp_path / "w")))
    run = bench_models([TINY], ["board"], BenchSettings(runs=3), inv)
    assert not run.results
    (f,) = run.failures
    assert "no TFLite runtime" in f.reason and "pip install ai-edge-litert" in f.reason, f.reason
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["cache"]  # the run folder went away too


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_removes_the_remote_run_folder(sshd, tmp_path, sig):
    remote = tmp_path / "w"
    inv = inventory(tmp_path, sshd.inventory_entry("board", python=sys.executable, workdir=str(remote)))
    before_ctl = set(Path("/tmp").glob("ep-*"))
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeprune",
            "bench",
            str(TINY),
            "--inventory",
            str(inv),
            "--runs",
            "5",
            "--min-secs",
            "60",
            "--max-secs",
            "60",
            "--out",
            str(tmp_path / "o"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(remote.glob("run-*/m0/*.tflite")):
        time.sleep(0.1)
    time.sleep(1.0)  # the runner is timing now
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: ")  # "aborted": click turns Ctrl-C into Abort
    assert sorted(x.name for x in remote.iterdir()) == ["cache"]
    assert not (tmp_path / "o" / "bench.json").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(remote) not in ps, "the runner kept running on the device"
    assert set(Path("/tmp").glob("ep-*")) <= before_ctl  # the ControlMaster folder went too


def test_sftp_push_and_pull_keep_sha256_with_odd_names(sshd, tmp_path):
    import hashlib
    import os

    from edgeprune.bench.device import DeviceSession

    inv = load_inventory(inventory(tmp_path, sshd.inventory_entry("board", workdir=str(tmp_path / "w w"))))
    data = os.urandom(200_000)
    src = tmp_path / "src [1] * ?.bin"  # glob characters sftp would expand, spaces
    src.write_bytes(data)
    with DeviceSession(inv.devices[0]) as s:
        s.probe()
        s.open_folders()
        remote = f"{s.run_dir}/copy; x 'y'.bin"
        s.push_checked(src, remote)
        back = tmp_path / "back (1).bin"
        s.transport.pull([(remote, back)], 30)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (tmp_path / "w w").iterdir()) == ["cache"]


def test_two_targets_on_one_machine_take_turns(sshd, tmp_path):
    """`local` and ssh to this host share one work folder: the device lock makes them take turns."""
    import datetime as dt

    shared = str(tmp_path / "shared")
    inv = inventory(
        tmp_path,
        sshd.inventory_entry("loop", python=sys.executable, workdir=shared)
        + f'[[device]]\nname = "here"\ntarget = "local"\nworkdir = "{shared}"\n',
    )
    run = bench_models(
        [TINY], ["here", "loop"], BenchSettings(threads=[1], runs=3, warmup=0, min_secs=1), inv
    )
    assert not run.failures, run.failures
    spans = sorted(
        (
            dt.datetime.fromisoformat(r.started).timestamp(),
            dt.datetime.fromisoformat(r.started).timestamp() + r.wall_s,
        )
        for r in run.results
    )
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans  # never measured at the same time
    assert sorted(p.name for p in Path(shared).iterdir()) == ["cache"]

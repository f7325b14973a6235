"""Interrupted runs leave nothing behind. Ctrl-C (SIGINT) and SIGTERM during an adb bench against the
adbd emulator (tests/adb_emulator.py); an ssh device whose connection drops while a runner is
timing, and one whose sshd goes away and comes back (tests/sshd_fixture.py); Ctrl-C during
`edgeprune run`. Every subprocess is bounded by a timeout."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adb_emulator import AdbEmulator, AdbServer
from conftest import require_tool
from sshd_fixture import SshServer, start_sshd

TINY = Path(__file__).parent / "fixtures" / "bench_tiny.tflite"
ERROR_LINE = re.compile(r"error: (aborted|interrupted)")


class Cli:
    """`edgeprune ARGS` in the background, in a process group of its own as a shell's foreground job
    would be, its output collected line by line as it comes."""

    def __init__(self, *args, cwd=None, env=None):
        self.p = subprocess.Popen([sys.executable, "-m", "edgeprune", *map(str, args)], cwd=cwd,
                                  env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.p.stderr, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"never saw {what} (exit code {self.p.poll()}):\n" + "\n".join(self.lines[-30:]))

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("did not exit in time:\n" + "\n".join(self.lines[-30:]))
        for t in self._readers:
            t.join(10)
        return self.p.returncode, "\n".join(self.out), "\n".join(self.lines)

    def send(self, sig: int) -> None:
        """Ctrl-C goes to the terminal's whole foreground process group; SIGTERM, as `kill PID` or a
        cancelled CI job sends it, to the process."""
        if sig == signal.SIGINT:
            os.killpg(self.p.pid, sig)
        else:
            self.p.send_signal(sig)

    def kill(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # the group this test started
        except ProcessLookupError:
            pass
        self.p.wait(10)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def runner_pid(workdir: Path) -> int | None:
    """The pid of a runner timing in one of `workdir`'s run folders, once it is alive."""
    for f in workdir.glob("run-*/.pid-*"):
        try:
            pid = int(f.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and alive(pid):
            return pid
    return None


def wait_for_runner(cli: "Cli", workdir: Path) -> int:
    """Waits until a runner is timing on the device; its pid."""
    found: list[int | None] = [None]

    def timing() -> bool:
        found[0] = runner_pid(workdir)
        return found[0] is not None

    cli.wait_for(timing, 90, "the runner timing on the device")
    time.sleep(0.5)
    assert alive(found[0])
    return found[0]


def only_the_cache(workdir: Path) -> None:
    """The device's work folder holds the cache (the runner, kept by sha256) and nothing else."""
    assert sorted(p.name for p in workdir.iterdir()) == ["cache"], sorted(p.name for p in workdir.rglob("*"))
    assert [p.name.split("-", 1)[1] for p in (workdir / "cache").iterdir()] == ["litert_runner.py"]


# ---------------------------------------------------------------- adb

@pytest.fixture(scope="module")
def phone():
    adb = require_tool("adb")
    with AdbEmulator() as dev, AdbServer(dev, adb=adb) as srv:
        # the device's python3 (first on its PATH) is this interpreter, which has a LiteRT runtime
        py = dev.bindir / "python3"
        py.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        py.chmod(0o755)
        yield dev, srv


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_an_adb_bench_leaves_nothing_on_the_phone(phone, tmp_path, sig):
    dev, srv = phone
    workdir = dev.sandbox / "edgeprune"
    out = tmp_path / "out"
    cli = Cli("bench", TINY, "--target", f"adb:{dev.serial}", "--runs", "5", "--min-secs", "60",
              "--max-secs", "60", "--out", out, env=srv.env)
    pid = wait_for_runner(cli, workdir)
    assert any("] 0/1 bench_tiny.tflite x1 (" in ln for ln in cli.lines), cli.lines
    cli.send(sig)
    code, stdout, stderr = cli.finish()

    assert code == 130, stderr
    assert ERROR_LINE.fullmatch(stderr.strip().splitlines()[-1]), stderr
    assert len(error_lines(stderr)) == 1, stderr
    assert stdout == ""
    assert gone_within(pid, 10), "the runner kept running on the phone"
    only_the_cache(workdir)
    assert not [p for p in dev.root.rglob("*") if p.name.startswith(("run-", ".lock", ".pid-"))]
    deadline = time.monotonic() + 10
    while dev.live_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dev.live_processes() == []
    assert not out.exists() or list(out.iterdir()) == []  # no half-written results


# ---------------------------------------------------------------- ssh

@pytest.fixture
def board(tmp_path):
    require_tool("ssh")
    require_tool("sftp")
    server = start_sshd(tmp_path / "sshd", require_tool("sshd"))
    holder = {"server": server}
    yield holder
    holder["server"].stop()


def restart(server: SshServer) -> SshServer:
    """The same sshd (config, keys, port) started again."""
    proc = subprocess.Popen([require_tool("sshd"), "-D", "-e", "-f", str(server.root / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(server.root / "sshd.log", "ab"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, (server.root / "sshd.log").read_text()[-500:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", server.port)) == 0:
                return dataclasses.replace(server, process=proc)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sshd did not listen again within 15 s")


def session_sshds(pid: int, listener: int) -> list[int]:
    """The sshd processes between `pid` and the listening sshd: the session's connection."""
    found = []
    while pid > 1 and pid != listener:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("sshd"):
            found.append(pid)
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    assert pid == listener and found, "the runner does not run under this sshd"
    return found


def ssh_bench(server: SshServer, tmp_path: Path, workdir: Path, out: Path, *timing: str) -> Cli:
    inv = tmp_path / "devices.toml"
    inv.write_text(server.inventory_entry("board", python=sys.executable, workdir=str(workdir)))
    return Cli("bench", TINY, "--inventory", inv, "--target", "board", "--threads", "1", *timing,
               "--out", out)


def test_an_ssh_connection_lost_mid_run_is_a_clear_error_and_the_board_is_cleaned(board, tmp_path):
    server = board["server"]
    workdir, out = tmp_path / "w", tmp_path / "out"
    cli = ssh_bench(server, tmp_path, workdir, out, "--runs", "5", "--min-secs", "60", "--max-secs", "60")
    pid = wait_for_runner(cli, workdir)
    for p in session_sshds(pid, server.process.pid):  # the connection drops; sshd itself stays up
        os.kill(p, signal.SIGKILL)
    code, _, stderr = cli.finish(120)

    assert code == 2, stderr
    (err,) = error_lines(stderr)
    assert f"ssh:{server.address}: the connection ended before the command finished" in err, err
    # the harness connected again to clean up: the runner was stopped and the run folder removed
    assert gone_within(pid, 10), "the runner kept running on the board"
    only_the_cache(workdir)


def test_an_ssh_board_that_goes_away_is_clean_after_it_comes_back(board, tmp_path):
    server = board["server"]
    workdir = tmp_path / "w"
    cli = ssh_bench(server, tmp_path, workdir, tmp_path / "out1", "--runs", "5", "--min-secs", "60",
                    "--max-secs", "60")
    pid = wait_for_runner(cli, workdir)
    sessions = session_sshds(pid, server.process.pid)
    server.process.kill()  # the board is gone: no connection, no sshd to clean up through
    server.process.wait(10)
    for p in sessions:
        os.kill(p, signal.SIGKILL)
    try:
        code, _, stderr = cli.finish(120)
        assert code == 2, stderr
        (err,) = error_lines(stderr)
        assert f"ssh:{server.address}: the connection ended before the command finished" in err, err
        assert alive(pid)  # orphaned on the board, which nobody could reach to clean up

        board["server"] = server = restart(server)  # the board is back
        cli = ssh_bench(server, tmp_path, workdir, tmp_path / "out2", "--runs", "3", "--warmup", "0",
                        "--min-secs", "0.05")
        code, _, stderr = cli.finish(120)
        assert code == 0, stderr  # the dead run's lock was taken over
        assert len(json.loads((tmp_path / "out2" / "bench.json").read_text())["results"]) == 1
        # and what the dead run left went with its lock: its runner and its run folder
        assert gone_within(pid, 10), "the dead run's runner still runs on the board"
        only_the_cache(workdir)
    finally:
        if alive(pid):  # the orphaned runner this test started
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- edgeprune run

RECIPE = """
name = "interrupted"
fine_tune_batch_size = 32
[model]
path = "{model}"
[data]
kind = "fashion_mnist"
train_limit = 2000
test_limit = 100
[bench]
threads = [1]
runs = 3
warmup = 0
min_secs = 0.01
[[variant]]
name = "s50"
prune = "unstructured"
fine_tune_epochs = 20
"""


def test_ctrl_c_during_run_leaves_no_run_folder_and_no_temp_files(tmp_path):
    import core_fixtures as cf

    cf.build_tiny().save(tmp_path / "tiny.keras")
    (tmp_path / "r.toml").write_text(RECIPE.format(model=tmp_path / "tiny.keras"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    runs = tmp_path / "runs"
    cli = Cli("run", "r.toml", "--out", runs / "x", cwd=tmp_path,
              env={"TMPDIR": str(tmp), "EDGEPRUNE_CACHE_DIR": str(tmp_path / "cache")})
    # the baseline is written into the temp run folder, then the variant fine-tunes
    cli.wait_for(lambda: any("fine-tune (unstructured)" in ln for ln in cli.lines), 180,
                 "the variant's fine-tune")
    (partial,) = runs.glob(".x.partial-*")
    assert (partial / "baseline" / "model.keras").is_file()
    assert (partial / "tflite" / "baseline.tflite").is_file()
    time.sleep(1.0)
    seen = len(cli.lines)
    cli.send(signal.SIGINT)
    code, stdout, stderr = cli.finish()

    assert code == 130, stderr
    assert len(error_lines(stderr)) == 1, stderr
    after = [ln for ln in cli.lines[seen:] if ln.strip()]
    assert ERROR_LINE.fullmatch(after[-1]), stderr  # the last word is the error
    assert not [ln for ln in after if "done in" in ln], stderr  # no interrupted step claims it finished
    assert stdout == ""
    assert not runs.exists() or list(runs.iterdir()) == []  # neither the run folder nor its temp folder
    assert list(tmp.iterdir()) == []

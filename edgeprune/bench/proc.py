"""The one bounded way to run a command. Every device command (adb, ssh, sftp, a local runner)
goes through `run_command`: it has a timeout, kills the whole process group when the timeout
passes or the run is cancelled (Ctrl-C), and returns the exit code, stdout and stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from edgeprune.errors import DeviceError


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def tail(self, chars: int = 400) -> str:
        """The last part of stderr (or stdout when stderr is empty), on one line."""
        text = self.stderr.strip() or self.stdout.strip()
        text = " ".join(text.split())
        return text[-chars:]


class CommandTimeout(DeviceError):
    """A device command that did not finish within its timeout (and was killed)."""


class Cancelled(DeviceError):
    """The run was cancelled (Ctrl-C) while a command was running or about to start."""


_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_cancel = threading.Event()


def cancel_all() -> None:
    """Cancel the run: kill every running command's process group; new commands refuse to start
    unless they are cleanup commands (`during_cancel=True`)."""
    _cancel.set()
    with _live_lock:
        procs = list(_live)
    for p in procs:
        _kill_group(p)


def reset_cancel() -> None:
    _cancel.clear()


def is_cancelled() -> bool:
    return _cancel.is_set()


def sleep(seconds: float) -> None:
    """Sleeps, but wakes and raises Cancelled as soon as the run is cancelled."""
    if seconds > 0 and _cancel.wait(seconds):
        raise Cancelled("cancelled during the cool-down")
    if _cancel.is_set():
        raise Cancelled("cancelled")


def _stop(p: subprocess.Popen) -> tuple[bytes, bytes]:
    """Kills the process group, reaps the process and returns what output is left, without
    waiting for pipes that a process outside the group may hold open."""
    _kill_group(p)
    p.wait()
    try:
        return p.communicate(timeout=1)
    except (subprocess.TimeoutExpired, ValueError):
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass  # already closed
        return b"", b""


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def describe(argv: list[str] | tuple[str, ...], limit: int = 160) -> str:
    text = " ".join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_command(
    argv: list[str],
    timeout: float,
    *,
    input_bytes: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    during_cancel: bool = False,
) -> CommandResult:
    """Runs `argv` (no shell) with a hard `timeout` in seconds. Never raises for a non-zero exit:
    the caller decides what an exit code means. Raises CommandTimeout when the timeout passes,
    Cancelled when the run is cancelled, DeviceError when the program does not exist."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if _cancel.is_set() and not during_cancel:
        raise Cancelled(f"cancelled before running {describe(argv)}")
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    start = time.monotonic()
    try:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # its own process group: killed as a whole, and Ctrl-C is ours to handle
        )
    except FileNotFoundError:
        raise DeviceError(f"'{argv[0]}' is not installed or not on PATH", _install_hint(argv[0])) from None
    except PermissionError as e:
        raise DeviceError(f"cannot run '{argv[0]}': {e.strerror}") from None
    with _live_lock:
        _live.add(p)
    deadline = start + timeout
    exited_at: float | None = None
    pending_input = input_bytes
    try:
        while True:
            try:
                out, err = p.communicate(input=pending_input, timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pending_input = None  # sent on the first call only
            now = time.monotonic()
            if _cancel.is_set() and not during_cancel:
                _stop(p)
                raise Cancelled(f"cancelled while running {describe(argv)}")
            if now >= deadline:
                _stop(p)
                raise CommandTimeout(
                    f"'{describe(argv)}' did not finish within {timeout:g} s and was stopped",
                    "the device may be hung, asleep or disconnected; check it and rerun",
                )
            if p.poll() is not None:
                # exited, but a process outside its group (ssh's ControlMaster holds the passed
                # descriptors) keeps the pipes open: give it a moment, then stop reading
                exited_at = exited_at or now
                if now - exited_at > 5:
                    out, err = _stop(p)
                    break
    except BaseException:  # KeyboardInterrupt in the main thread: never leave the child behind
        _stop(p)
        raise
    finally:
        with _live_lock:
            _live.discard(p)
    return CommandResult(
        argv=tuple(argv),
        returncode=p.returncode,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        seconds=time.monotonic() - start,
    )


def _install_hint(program: str) -> str:
    name = os.path.basename(program)
    hints = {
        "adb": "install the Android platform tools (Debian: apt-get install adb)",
        "ssh": "install the OpenSSH client (Debian: apt-get install openssh-client)",
        "sftp": "install the OpenSSH client (Debian: apt-get install openssh-client)",
        "scp": "install the OpenSSH client (Debian: apt-get install openssh-client)",
    }
    return hints.get(name, f"install {name} or give its full path")

"""Android phones through the real `adb` client. The client's exit code is never trusted for a
shell command (legacy shell always exits 0): scripts print an rc marker that is parsed, and CRLF
is normalised. Device states from `adb devices` become clear errors (unauthorized: accept the
prompt on the phone). A `host:port` serial that is not listed yet is `adb connect`ed once."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from edgeprune.bench.proc import run_command
from edgeprune.bench.transport import ShellResult, Transport, split_rc, wrap_with_rc
from edgeprune.errors import DeviceError

_GONE = re.compile(
    r"device '.*' not found|device not found|no devices/emulators found|device offline|error: closed"
    r"|protocol fault|connection reset|device still connecting|failed to connect",
    re.IGNORECASE,
)


def list_devices(adb: str = "adb", timeout: float = 20) -> dict[str, str]:
    """serial -> state ('device', 'unauthorized', 'offline', 'no permissions', ...)."""
    r = run_command([adb, "devices"], timeout)
    if r.returncode != 0:
        raise DeviceError(
            f"`{adb} devices` failed (exit code {r.returncode}): {r.tail()}",
            "is the adb server able to start?",
        )
    states: dict[str, str] = {}
    for line in r.stdout.replace("\r\n", "\n").splitlines():
        if not line.strip() or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split("\t")
        if len(parts) >= 2:
            states[parts[0].strip()] = parts[1].strip()
    return states


class AdbTransport(Transport):
    kind = "adb"
    merges_stderr = True  # legacy shell: stdout and stderr arrive as one stream

    def __init__(self, serial: str, adb: str | None = None):
        if not serial or serial.startswith("-") or any(c.isspace() for c in serial):
            raise DeviceError(
                f"'{serial}' is not an adb serial", "use the serial `adb devices` prints, or host:port"
            )
        self.serial = serial
        self.adb = adb or os.environ.get("EDGEPRUNE_ADB", "adb")

    @property
    def label(self) -> str:
        return f"adb:{self.serial}"

    @property
    def identity(self) -> str:
        return f"adb:{self.serial}"

    def _argv(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def state(self, timeout: float) -> str | None:
        return list_devices(self.adb, timeout).get(self.serial)

    def connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = self.state(timeout)
        if state is None and ":" in self.serial:
            r = run_command([self.adb, "connect", self.serial], max(1.0, deadline - time.monotonic()))
            text = (r.stdout + r.stderr).strip()
            if "cannot" in text.lower() or "failed" in text.lower() or "unable" in text.lower():
                raise DeviceError(
                    f"{self.label}: adb connect failed: {' '.join(text.split())[-200:]}",
                    "check that wireless debugging is on and the address and port are right",
                )
            state = self.state(max(1.0, deadline - time.monotonic()))
        # a freshly connected device passes through offline/connecting/authorizing for a moment
        while state in (None, "offline", "connecting", "authorizing") and time.monotonic() < deadline - 1:
            if state is None and ":" not in self.serial:
                break
            time.sleep(0.25)
            state = self.state(max(1.0, deadline - time.monotonic()))
        if state == "device":
            return
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in list_devices(self.adb, 10).items()) or "none"
            raise DeviceError(
                f"{self.label}: no such device; `adb devices` lists: {listed}",
                "plug the phone in with USB debugging on, or `adb connect HOST:PORT` for Wi-Fi",
            )
        if state == "unauthorized":
            raise DeviceError(
                f"{self.label}: the device is unauthorized",
                "unlock the phone and accept the 'Allow USB debugging?' prompt on it, then rerun",
            )
        if "permission" in state:
            raise DeviceError(
                f"{self.label}: no permission to open the USB device ({state})",
                "add a udev rule for the phone (Debian: apt-get install android-sdk-platform-tools-common)",
            )
        raise DeviceError(
            f"{self.label}: the device is {state}", "reconnect it (replug, or `adb reconnect`) and rerun"
        )

    def _gone(self, text: str, what: str) -> DeviceError:
        return DeviceError(
            f"{self.label}: the device went away during {what} ({' '.join(text.split())[-200:] or 'no message'})",
            "check the cable or the Wi-Fi connection and rerun",
        )

    def shell(self, script: str, timeout: float, *, during_cancel: bool = False) -> ShellResult:
        r = run_command(self._argv("shell", wrap_with_rc(script)), timeout, during_cancel=during_cancel)
        out, rc = split_rc(r.stdout)
        if rc is None:
            raise self._gone(r.stderr + " " + r.stdout[-200:], "a shell command")
        return ShellResult(script, rc, out, r.stderr.replace("\r\n", "\n"), r.seconds)

    def push(self, pairs: list[tuple[Path, str]], timeout: float, *, during_cancel: bool = False) -> None:
        for src, dst in pairs:
            r = run_command(self._argv("push", str(src), dst), timeout, during_cancel=during_cancel)
            if r.returncode != 0:
                text = r.stderr + r.stdout
                if _GONE.search(text):
                    raise self._gone(text, f"the push of {src.name}")
                raise DeviceError(f"{self.label}: adb push {src.name} -> {dst} failed: {r.tail()}")

    def pull(self, pairs: list[tuple[str, Path]], timeout: float) -> None:
        for src, dst in pairs:
            r = run_command(self._argv("pull", src, str(dst)), timeout)
            if r.returncode != 0:
                text = r.stderr + r.stdout
                if _GONE.search(text):
                    raise self._gone(text, f"the pull of {src}")
                raise DeviceError(f"{self.label}: adb pull {src} failed: {r.tail()}")

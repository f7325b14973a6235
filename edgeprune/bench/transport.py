"""What every transport offers: run a shell script on the device, copy files both ways, close.
The exit code of a remote script is never taken from the client: the script is wrapped so that
it prints an rc marker, which is parsed (adb's legacy shell always exits 0, and a client that
loses its connection must not look like a script that failed). Output is CRLF-normalised."""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import DeviceError

RC_MARKER = "__EDGEPRUNE_RC_5d1c__="
_RC_TAIL = re.compile(r"\n" + re.escape(RC_MARKER) + r"(\d+)\n?\Z")


def quote(arg: str | Path) -> str:
    """Quotes one argument for a POSIX shell (sh, mksh, toybox sh, bash, dash)."""
    return shlex.quote(str(arg))


def join_argv(argv: list[str | Path]) -> str:
    return " ".join(quote(a) for a in argv)


def wrap_with_rc(script: str) -> str:
    """`script` in a subshell, followed by a line holding the marker and its exit status."""
    return f"( {script}\n); printf '\\n{RC_MARKER}%d\\n' \"$?\""


def normalise_newlines(text: str) -> str:
    return text.replace("\r\r\n", "\n").replace("\r\n", "\n")


def split_rc(output: str) -> tuple[str, int | None]:
    """Splits wrapped output into (the script's output, its exit code). The exit code is None
    when the marker is missing: the script never finished (connection lost, device gone)."""
    output = normalise_newlines(output)
    m = _RC_TAIL.search(output)
    if m is None:
        return output, None
    return output[: m.start()], int(m.group(1))


@dataclass(frozen=True)
class ShellResult:
    """A script's outcome on a device. `stderr` is empty where the transport merges it into
    stdout (adb's legacy shell)."""

    script: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def tail(self, chars: int = 400) -> str:
        text = " ".join((self.stderr.strip() or self.stdout.strip()).split())
        return text[-chars:]

    def check(self, device: str, what: str) -> "ShellResult":
        if self.returncode != 0:
            short = self.script if len(self.script) <= 120 else self.script[:117] + "..."
            raise DeviceError(
                f"{device}: {what} failed (exit code {self.returncode}) running `{short}`: {self.tail() or 'no output'}"
            )
        return self


class Transport(ABC):
    """One device connection. Implementations: LocalTransport, AdbTransport, SshTransport."""

    kind: str = ""
    #: merges stderr into stdout (legacy adb shell)
    merges_stderr: bool = False

    @property
    @abstractmethod
    def label(self) -> str:
        """How the device is named in messages: `adb:SERIAL`, `ssh:user@host:port`, `local`."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """A key that is equal for two transports reaching the same device."""

    @abstractmethod
    def connect(self, timeout: float) -> None:
        """Checks that the device is reachable and authorized; raises DeviceError saying why not."""

    @abstractmethod
    def shell(self, script: str, timeout: float, *, during_cancel: bool = False) -> ShellResult:
        """Runs a POSIX shell script on the device. The exit code comes from the rc marker."""

    @abstractmethod
    def push(self, pairs: list[tuple[Path, str]], timeout: float, *, during_cancel: bool = False) -> None:
        """Copies local files to remote paths (the remote folders exist)."""

    @abstractmethod
    def pull(self, pairs: list[tuple[str, Path]], timeout: float) -> None:
        """Copies remote files to local paths."""

    def close(self) -> None:
        """Releases the connection (a no-op where there is none)."""

    def run(self, argv: list[str | Path], timeout: float, *, during_cancel: bool = False) -> ShellResult:
        """Runs one command with every argument quoted."""
        return self.shell(join_argv(argv), timeout, during_cancel=during_cancel)

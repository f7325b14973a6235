"""The host as a device: the same scripts through /bin/sh, files copied with shutil."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeprune.bench.proc import run_command
from edgeprune.bench.transport import ShellResult, Transport, split_rc, wrap_with_rc
from edgeprune.errors import DeviceError


class LocalTransport(Transport):
    kind = "local"

    @property
    def label(self) -> str:
        return "local"

    @property
    def identity(self) -> str:
        return "local"

    def connect(self, timeout: float) -> None:
        self.shell("true", timeout).check(self.label, "running /bin/sh")

    def shell(self, script: str, timeout: float, *, during_cancel: bool = False) -> ShellResult:
        r = run_command(["/bin/sh", "-c", wrap_with_rc(script)], timeout, during_cancel=during_cancel)
        out, rc = split_rc(r.stdout)
        if rc is None:
            raise DeviceError(
                f"local: /bin/sh ended without finishing the script (exit code {r.returncode}): {r.tail()}"
            )
        return ShellResult(script, rc, out, r.stderr, r.seconds)

    def push(self, pairs: list[tuple[Path, str]], timeout: float, *, during_cancel: bool = False) -> None:
        for src, dst in pairs:
            try:
                shutil.copyfile(src, dst)
            except OSError as e:
                raise DeviceError(f"local: cannot copy {src} to {dst}: {e.strerror}") from None

    def pull(self, pairs: list[tuple[str, Path]], timeout: float) -> None:
        for src, dst in pairs:
            try:
                shutil.copyfile(src, dst)
            except OSError as e:
                raise DeviceError(f"local: cannot copy {src} to {dst}: {e.strerror}") from None

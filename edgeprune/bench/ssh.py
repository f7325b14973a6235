"""Raspberry Pi and Linux boards through the OpenSSH client, so that ~/.ssh/config, agents and
ProxyJump keep working. BatchMode=yes (never a password prompt), one master connection per
device (ControlMaster, its socket in a short private temp folder), files copied with sftp in
batch mode. Every remote script runs under `sh -c`, whatever the login shell is."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.bench.proc import run_command
from edgeprune.bench.transport import ShellResult, Transport, quote, split_rc, wrap_with_rc
from edgeprune.errors import DeviceError

_ADDRESS = re.compile(
    r"^(?:(?P<user>[^@\s:/]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@\s:/\[\]]+)(?::(?P<port>\d{1,5}))?$"
)


@dataclass(frozen=True)
class SshAddress:
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "SshAddress":
        m = _ADDRESS.match(text.strip())
        if m is None or m.group("host").startswith("-"):
            raise DeviceError(
                f"'{text}' is not an ssh address",
                "write it as [user@]host[:port], e.g. pi@raspberrypi.local:22",
            )
        port = int(m.group("port")) if m.group("port") else None
        if port is not None and not 0 < port < 65536:
            raise DeviceError(f"port {port} in '{text}' is out of range", "use a port between 1 and 65535")
        return cls(host=m.group("host").strip("[]"), user=m.group("user"), port=port)

    def __str__(self) -> str:
        text = f"{self.user}@" if self.user else ""
        text += f"[{self.host}]" if ":" in self.host else self.host
        return text + (f":{self.port}" if self.port else "")


@dataclass
class SshOptions:
    """Client settings from the inventory; everything else comes from ~/.ssh/config."""

    config_file: str | None = None
    identity_file: str | None = None
    options: list[str] = field(default_factory=list)  # extra `-o` values, e.g. "UserKnownHostsFile=/x"
    connect_timeout: int = 10


def _sftp_quote(path: str) -> str:
    """sftp's batch parser takes double-quoted words with backslash escapes for `"`."""
    if any(c in path for c in '"\\\n\r') or any(c in path for c in "*?[]"):
        raise DeviceError(
            f"the path {path!r} cannot be copied with sftp", "avoid quotes, backslashes and * ? [ ] in it"
        )
    return f'"{path}"'


class SshTransport(Transport):
    kind = "ssh"

    def __init__(self, address: SshAddress, options: SshOptions | None = None):
        self.address = address
        self.opts = options or SshOptions()
        self._control_dir: str | None = None

    @property
    def label(self) -> str:
        return f"ssh:{self.address}"

    @property
    def identity(self) -> str:
        return f"ssh:{self.address.user or ''}@{self.address.host}:{self.address.port or 22}"

    def _control_path(self) -> str:
        if self._control_dir is None:
            # short: a Unix socket path must fit in 104-108 bytes, and %C is 40 hex characters
            self._control_dir = tempfile.mkdtemp(prefix="ep-", dir="/tmp" if Path("/tmp").is_dir() else None)
        return f"{self._control_dir}/%C"

    def _common(self) -> list[str]:
        args: list[str] = []
        if self.opts.config_file:
            args += ["-F", self.opts.config_file]
        args += [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.opts.connect_timeout}",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._control_path()}",
            "-o",
            "ControlPersist=300",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.address.port:
            args += ["-o", f"Port={self.address.port}"]
        if self.address.user:
            args += ["-o", f"User={self.address.user}"]
        if self.opts.identity_file:
            args += ["-o", f"IdentityFile={self.opts.identity_file}", "-o", "IdentitiesOnly=yes"]
        for o in self.opts.options:
            args += ["-o", o]
        return args

    def _fail(self, stderr: str, what: str) -> DeviceError:
        return self._refused(stderr) or DeviceError(
            f"{self.label}: {what} failed: {' '.join(stderr.split())[-300:] or 'ssh gave no message'}"
        )

    def _refused(self, stderr: str) -> DeviceError | None:
        """The error for ssh's own message when it could not connect or log in; None when stderr
        holds none of them (then it is the remote command's, or empty)."""
        text = " ".join(stderr.split())
        low = text.lower()
        if "permission denied" in low or "too many authentication failures" in low:
            return DeviceError(
                f"{self.label}: authentication failed ({text[-200:]})",
                "check the user and key: `ssh-copy-id` your key to the device, or set identity_file in the inventory; "
                "edgeprune never asks for a password (BatchMode=yes)",
            )
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return DeviceError(
                f"{self.label}: host key verification failed",
                "connect once with `ssh` to accept the host key, or fix ~/.ssh/known_hosts",
            )
        if "connection refused" in low:
            return DeviceError(
                f"{self.label}: connection refused", "is sshd running on the device, and is the port right?"
            )
        if "could not resolve hostname" in low or "name or service not known" in low:
            return DeviceError(
                f"{self.label}: unknown host name ({text[-200:]})", "check the address or ~/.ssh/config"
            )
        if "timed out" in low or "no route to host" in low or "network is unreachable" in low:
            return DeviceError(
                f"{self.label}: not reachable ({text[-200:]})",
                "check that the device is on and on the network",
            )
        return None

    def connect(self, timeout: float) -> None:
        r = self.shell("true", timeout)
        r.check(self.label, "running a shell")

    def shell(self, script: str, timeout: float, *, during_cancel: bool = False) -> ShellResult:
        remote = "sh -c " + quote(wrap_with_rc(script))
        argv = ["ssh", *self._common(), "-T", "--", self.address.host, remote]
        r = run_command(argv, timeout, during_cancel=during_cancel)
        out, rc = split_rc(r.stdout)
        if rc is None:
            # 255 with none of ssh's own messages: the connection dropped while the command ran, and
            # stderr holds only what the command itself had written
            if r.returncode == 255 and (refused := self._refused(r.stderr)) is not None:
                raise refused
            raise DeviceError(
                f"{self.label}: the connection ended before the command finished (ssh exit code {r.returncode})",
                f"the device may have rebooted or lost its network: {r.tail(200) or 'no message'}",
            )
        return ShellResult(script, rc, out, r.stderr, r.seconds)

    def _sftp(self, commands: list[str], timeout: float, during_cancel: bool = False) -> None:
        argv = ["sftp", *self._common(), "-b", "-", "--", self.address.host]
        batch = ("\n".join(commands) + "\n").encode()
        r = run_command(argv, timeout, input_bytes=batch, during_cancel=during_cancel)
        if r.returncode != 0:
            raise self._fail(r.stderr or r.stdout, "sftp copy")

    def push(self, pairs: list[tuple[Path, str]], timeout: float, *, during_cancel: bool = False) -> None:
        # local files are reached through symlinks with plain names, so that sftp's batch parser
        # and its globbing never see the user's file name (spaces, quotes, * ? [ ])
        if not pairs:
            return
        with tempfile.TemporaryDirectory(prefix="ep-put-") as stage:
            commands = []
            for i, (src, dst) in enumerate(pairs):
                link = Path(stage) / f"f{i}"
                os.symlink(Path(src).resolve(), link)
                commands.append(f"put {_sftp_quote(str(link))} {_sftp_quote(dst)}")
            self._sftp(commands, timeout, during_cancel)

    def pull(self, pairs: list[tuple[str, Path]], timeout: float) -> None:
        if not pairs:
            return
        with tempfile.TemporaryDirectory(prefix="ep-get-") as stage:
            commands = [
                f"get {_sftp_quote(src)} {_sftp_quote(f'{stage}/f{i}')}" for i, (src, _) in enumerate(pairs)
            ]
            self._sftp(commands, timeout)
            for i, (_, dst) in enumerate(pairs):
                shutil.move(f"{stage}/f{i}", dst)

    def close(self) -> None:
        if self._control_dir is None:
            return
        try:
            run_command(
                ["ssh", *self._common(), "-O", "exit", "--", self.address.host], 10, during_cancel=True
            )
        except DeviceError:
            pass  # the master may already be gone; the folder is removed below either way
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

"""A real OpenSSH server for end-to-end tests: /usr/sbin/sshd on 127.0.0.1 on a free port, with
throwaway host and user keys and its own sshd_config in a temp folder. It runs as the current
user (root in CI: PermitRootLogin prohibit-password). The client side gets a known_hosts file
with the host key, so nothing touches ~/.ssh."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    client_key: Path
    wrong_key: Path
    known_hosts: Path
    process: subprocess.Popen

    @property
    def address(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def client_options(self) -> list[str]:
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"]

    def inventory_entry(self, name: str, *, key: Path | None = None, **extra: object) -> str:
        """A TOML [[device]] table for this server."""
        lines = [
            "[[device]]",
            f'name = "{name}"',
            f'target = "ssh:{self.address}"',
            f'identity_file = "{key or self.client_key}"',
            "ssh_options = [" + ", ".join(f'"{o}"' for o in self.client_options()) + "]",
        ]
        for k, v in extra.items():
            lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_sshd(root: Path, sshd: str = "/usr/sbin/sshd") -> SshServer:
    root.mkdir(parents=True, exist_ok=True)
    host_key = root / "host_ed25519"
    client_key = root / "client_ed25519"
    wrong_key = root / "wrong_ed25519"
    for k in (host_key, client_key, wrong_key):
        _keygen(k)
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    user = getpass.getuser()
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "StrictModes no",
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "MaxStartups 50",
                "MaxSessions 50",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    known_hosts = root / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {host_key.with_suffix('.pub').read_text().split(' ', 2)[0]} "
        f"{host_key.with_suffix('.pub').read_text().split(' ', 2)[1]}\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation folder sshd insists on
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "sshd.log", "wb"),
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("sshd did not start listening within 15 s")
    return SshServer(root, port, user, client_key, wrong_key, known_hosts, proc)

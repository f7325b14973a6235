"""Targets and the device inventory. A target is `local`, `adb:SERIAL` or `ssh:[user@]host[:port]`,
or the name of a device in an inventory TOML file:

    [[device]]
    name = "pi5"
    target = "ssh:pi@pi5.local"          # or: kind = "ssh" and address = "pi@pi5.local"
    runner = "python"                    # or "benchmark_model"
    threads = [1, 4]
    affinity = "big"                     # big | little | prime | all | a hex mask such as "f0"
    env = { OMP_NUM_THREADS = "1" }
    workdir = "/home/pi/.cache/edgeprune"
    python = "/home/pi/litert-venv/bin/python"
    benchmark_model = { aarch64 = "bin/linux_aarch64_benchmark_model" }   # per ABI
    identity_file = "~/.ssh/id_ed25519"  # ssh only; also ssh_config, ssh_options = ["Opt=value"]
    adb = "/opt/platform-tools/adb"      # adb only

Unknown keys are refused with the closest valid name."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.bench.adb import AdbTransport
from edgeprune.bench.local import LocalTransport
from edgeprune.bench.ssh import SshAddress, SshOptions, SshTransport
from edgeprune.bench.transport import Transport
from edgeprune.errors import DeviceError, InputFileError, toml_problem

KINDS = ("local", "adb", "ssh")
RUNNERS = ("python", "benchmark_model")
_AFFINITY = re.compile(r"^(big|little|prime|all|(0x)?[0-9a-fA-F]+)$")
_WORKDIR_BAD = re.compile(r"[\"\\*?\[\]\n\r\x00]")

DEVICE_KEYS = {
    "name",
    "target",
    "kind",
    "address",
    "runner",
    "threads",
    "affinity",
    "env",
    "workdir",
    "python",
    "benchmark_model",
    "ssh_config",
    "identity_file",
    "ssh_options",
    "adb",
}


@dataclass(frozen=True)
class DeviceSpec:
    """One device as the user described it."""

    name: str
    kind: str
    address: str = ""
    runner: str | None = None
    threads: tuple[int, ...] | None = None
    affinity: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    python: str | None = None
    benchmark_model: tuple[tuple[str, str], ...] = ()
    ssh_config: str | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    adb: str | None = None
    source: str = "command line"

    @property
    def target(self) -> str:
        return "local" if self.kind == "local" else f"{self.kind}:{self.address}"

    def binary_for(self, abi: str | None) -> str | None:
        table = dict(self.benchmark_model)
        if abi and abi in table:
            return table[abi]
        return table.get("*")

    def make_transport(self) -> Transport:
        if self.kind == "local":
            return LocalTransport()
        if self.kind == "adb":
            return AdbTransport(self.address, self.adb)
        return SshTransport(
            SshAddress.parse(self.address),
            SshOptions(
                config_file=self.ssh_config, identity_file=self.identity_file, options=list(self.ssh_options)
            ),
        )


def _closest(word: str, choices) -> str:
    m = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{m[0]}'?" if m else f"valid: {', '.join(sorted(choices))}"


def parse_target(text: str) -> DeviceSpec:
    """`local`, `adb:SERIAL`, `ssh:[user@]host[:port]` -> a DeviceSpec with default settings."""
    text = text.strip()
    if text == "local":
        return DeviceSpec(name="local", kind="local")
    kind, sep, address = text.partition(":")
    if not sep or kind not in ("adb", "ssh") or not address:
        raise DeviceError(
            f"'{text}' is not a target",
            "use local, adb:SERIAL, ssh:[user@]host[:port] or a device name from --inventory",
        )
    if kind == "ssh":
        SshAddress.parse(address)
    else:
        AdbTransport(address)  # validates the serial
    return DeviceSpec(name=text, kind=kind, address=address)


def _check_type(where: str, key: str, value, tp, example: str):
    if not isinstance(value, tp) or isinstance(value, bool) and tp is not bool:
        raise InputFileError(
            f"{where}: '{key}' should be {example}, got {value!r}", "fix the value in the inventory"
        )


def _device_from_table(t: dict, where: str, base: Path) -> DeviceSpec:
    unknown = set(t) - DEVICE_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise InputFileError(f"{where}: unknown key '{k}'", _closest(k, DEVICE_KEYS))
    if "name" not in t:
        raise InputFileError(f"{where}: a device needs a name", 'add name = "pixel7"')
    name = t["name"]
    _check_type(where, "name", name, str, "a string")
    where = f"{where} ({name})"
    if "target" in t:
        if "kind" in t or "address" in t:
            raise InputFileError(f"{where}: give either target or kind + address, not both")
        _check_type(where, "target", t["target"], str, 'a string such as "adb:R58M123"')
        try:
            spec = parse_target(t["target"])
        except DeviceError as e:
            raise InputFileError(f"{where}: {e.message}", e.hint) from None
        kind, address = spec.kind, spec.address
    else:
        kind = t.get("kind")
        if kind not in KINDS:
            raise InputFileError(
                f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}", 'or give target = "..."'
            )
        address = t.get("address", "")
        try:
            parse_target(kind if kind == "local" else f"{kind}:{address}")
        except DeviceError as e:
            raise InputFileError(f"{where}: {e.message}", e.hint) from None
    runner = t.get("runner")
    if runner is not None and runner not in RUNNERS:
        raise InputFileError(f"{where}: runner {runner!r} is unknown", _closest(str(runner), RUNNERS))
    threads = t.get("threads")
    if threads is not None:
        if isinstance(threads, int) and not isinstance(threads, bool):
            threads = [threads]
        if (
            not isinstance(threads, list)
            or not threads
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in threads)
        ):
            raise InputFileError(f"{where}: threads should be a list of positive integers, got {threads!r}",
                                 "e.g. threads = [1, 4]")
    affinity = t.get("affinity")
    if affinity is not None and (not isinstance(affinity, str) or not _AFFINITY.match(affinity)):
        raise InputFileError(
            f"{where}: affinity {affinity!r} is not big, little, prime, all or a hex mask",
            'e.g. affinity = "f0"',
        )
    env = t.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, (str, int, float)) for v in env.values()):
        raise InputFileError(
            f'{where}: env should be a table of strings, e.g. env = {{ LD_LIBRARY_PATH = "/x" }}'
        )
    for k in env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise InputFileError(f"{where}: env name {k!r} is not a valid variable name")
    workdir = t.get("workdir")
    if workdir is not None:
        _check_type(where, "workdir", workdir, str, "a path")
        if _WORKDIR_BAD.search(workdir) or not workdir.strip():
            raise InputFileError(
                f"{where}: workdir {workdir!r} holds characters edgeprune refuses (quotes, backslashes, "
                "* ? [ ], newlines)",
                "choose a plain folder path",
            )
    bm = t.get("benchmark_model", {})
    if isinstance(bm, str):
        bm = {"*": bm}
    if not isinstance(bm, dict) or not all(isinstance(v, str) for v in bm.values()):
        raise InputFileError(
            f"{where}: benchmark_model should be a path or a table ABI -> path",
            'e.g. benchmark_model = { "arm64-v8a" = "bin/android_aarch64_benchmark_model" }',
        )
    bm = {abi: str((base / os.path.expanduser(p)).resolve()) for abi, p in bm.items()}
    opts = t.get("ssh_options", [])
    if not isinstance(opts, list) or not all(isinstance(o, str) and "=" in o for o in opts):
        raise InputFileError(f'{where}: ssh_options should be a list of "Option=value" strings')
    for key in ("python", "ssh_config", "identity_file", "adb"):
        if key in t:
            _check_type(where, key, t[key], str, "a string")
    if kind != "ssh" and any(k in t for k in ("ssh_config", "identity_file", "ssh_options")):
        raise InputFileError(f"{where}: ssh settings given for a {kind} device")
    if kind != "adb" and "adb" in t:
        raise InputFileError(f"{where}: 'adb' given for a {kind} device")

    def local_path(key):
        v = t.get(key)
        return str((base / os.path.expanduser(v)).resolve()) if v else None

    return DeviceSpec(
        name=name,
        kind=kind,
        address=address,
        runner=runner,
        threads=tuple(threads) if threads else None,
        affinity=affinity,
        env=tuple(sorted((k, str(v)) for k, v in env.items())),
        workdir=workdir,
        python=t.get("python"),
        benchmark_model=tuple(sorted(bm.items())),
        ssh_config=local_path("ssh_config"),
        identity_file=local_path("identity_file"),
        ssh_options=tuple(opts),
        adb=t.get("adb"),
        source=where,
    )


@dataclass
class Inventory:
    devices: list[DeviceSpec] = field(default_factory=list)
    path: str | None = None

    def find(self, name_or_target: str) -> DeviceSpec | None:
        for d in self.devices:
            if d.name == name_or_target:
                return d
        for d in self.devices:
            if d.target == name_or_target:
                return d
        return None


def load_inventory(path: str | Path) -> Inventory:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(
            f"inventory {path} does not exist", "give the path of a TOML file with [[device]] tables"
        ) from None
    except OSError as e:
        raise InputFileError(
            f"cannot read inventory {path}: {e.strerror}", "check the path and its permissions"
        ) from None
    except UnicodeDecodeError as e:
        raise InputFileError(
            f"inventory {path} is not a text file "
            f"(byte {e.object[e.start]:#04x} at offset {e.start} is not UTF-8)",
            "give a TOML file with [[device]] tables",
        ) from None
    except tomllib.TOMLDecodeError as e:
        what, where = toml_problem(e)
        raise InputFileError(
            f"inventory {path} is not valid TOML: {what}" + (f" at {where}" if where else ""),
            f"fix the syntax at {where}" if where else "fix the TOML syntax",
        ) from None
    unknown = set(data) - {"device"}
    if unknown:
        k = sorted(unknown)[0]
        raise InputFileError(
            f"inventory {path}: unknown top-level key '{k}'", "devices go in [[device]] tables"
        )
    tables = data.get("device", [])
    if not isinstance(tables, list) or not tables:
        raise InputFileError(f"inventory {path} lists no devices", "add [[device]] tables")
    for i, t in enumerate(tables):
        if not isinstance(t, dict):
            raise InputFileError(
                f"inventory {path}: device {i + 1} is {t!r}, not a table",
                "write each device as a [[device]] table with a name and a target",
            )
    base = path.resolve().parent
    devices = [_device_from_table(t, f"{path} device {i + 1}", base) for i, t in enumerate(tables)]
    seen: set[str] = set()
    for d in devices:
        if d.name in seen:
            raise InputFileError(
                f"inventory {path}: two devices are named '{d.name}'", "names must be unique"
            )
        seen.add(d.name)
    return Inventory(devices, str(path))


def resolve_targets(targets: list[str | DeviceSpec], inventory: Inventory | None) -> list[DeviceSpec]:
    """Targets from the command line (or the pipeline) -> DeviceSpecs. A name or target listed in
    the inventory takes its settings from there. No targets: every inventory device, else local."""
    if not targets:
        return list(inventory.devices) if inventory else [parse_target("local")]
    specs: list[DeviceSpec] = []
    for t in targets:
        if isinstance(t, DeviceSpec):
            specs.append(t)
            continue
        found = inventory.find(t) if inventory else None
        if found is not None:
            specs.append(found)
            continue
        if ":" not in t and t != "local":
            names = [d.name for d in inventory.devices] if inventory else []
            hint = (
                _closest(t, names)
                if names
                else "use local, adb:SERIAL or ssh:[user@]host[:port], or pass --inventory"
            )
            raise DeviceError(f"unknown target '{t}'", hint)
        specs.append(parse_target(t))
    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DeviceError(f"target {sorted(dupes)[0]} is given twice", "name each device once")
    return specs

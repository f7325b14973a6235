"""A device session: a transport plus what the harness needs on top of it: the probe (identity,
cores, runtimes), thermal snapshots, the remote work folders (a per-run folder that is always
removed, and a cache folder where files are kept by sha256) and checked copies."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

from edgeprune.bench import proc
from edgeprune.bench.inventory import DeviceSpec
from edgeprune.bench.results import CpuCore, DeviceInfo, ThermalState
from edgeprune.bench.transport import ShellResult, join_argv, quote
from edgeprune.errors import DeviceError

PROBE_TIMEOUT = 30.0
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")

_PROBE_SCRIPT = r"""
echo "uname_s=$(uname -s 2>/dev/null)"
echo "uname_m=$(uname -m 2>/dev/null)"
echo "uname_r=$(uname -r 2>/dev/null)"
[ -r /proc/device-tree/model ] && echo "dt_model=$(tr -d '\000' < /proc/device-tree/model)"
[ -r /etc/os-release ] && grep -m1 '^PRETTY_NAME=' /etc/os-release
grep -m1 -i -E '^(Hardware|model name)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | sed 's/^/cpuinfo_/'
a=$(grep -m1 '^Cpus_allowed_list' /proc/self/status 2>/dev/null) && echo "allowed=${a##*:}"
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  echo "cpu ${c##*/cpu} $(cat "$c/cpufreq/cpuinfo_max_freq" 2>/dev/null)"
done
command -v taskset >/dev/null 2>&1 && echo "has_taskset=1"
command -v sha256sum >/dev/null 2>&1 && echo "has_sha256sum=1"
command -v getprop >/dev/null 2>&1 && getprop
true
"""

_THERMAL_SCRIPT = r"""
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] || continue
  t=$(cat "$z/temp" 2>/dev/null) || continue
  echo "zone ${z##*/} $(cat "$z/type" 2>/dev/null | tr ' ' '_') $t"
done
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -r "$c/cpufreq/scaling_governor" ] || continue
  echo "gov ${c##*/cpu} $(cat "$c/cpufreq/scaling_governor" 2>/dev/null) $(cat "$c/cpufreq/scaling_cur_freq" 2>/dev/null)"
done
command -v vcgencmd >/dev/null 2>&1 && echo "vc $(vcgencmd get_throttled 2>/dev/null)"
command -v dumpsys >/dev/null 2>&1 && dumpsys thermalservice 2>/dev/null | grep -m1 'Thermal Status'
true
"""

_RUNTIME_PROBE = (
    "import importlib.util as u, platform; "
    "print('py_version=' + platform.python_version()); "
    "print('runtimes=' + ','.join(m for m in " + repr(RUNTIMES) + " if u.find_spec(m)))"
)

_SECTION = "__EDGEPRUNE_SECTION__="
_TAG = "__EDGEPRUNE__"  # marks the lines to parse among whatever else a remote shell prints
_GETPROP = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")


def _sections(text: str) -> dict[str, str]:
    """Splits output on `__EDGEPRUNE_SECTION__=NAME` lines; text before the first is section ""."""
    out: dict[str, list[str]] = {"": []}
    name = ""
    for line in text.split("\n"):
        if line.startswith(_SECTION):
            name = line[len(_SECTION) :].strip()
            out[name] = []
        else:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def _dead_local_owner(owner: str) -> bool:
    """True when a lock's owner line names a process of this host that no longer exists."""
    parts = owner.split()
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def _stop_and_remove(run_dir: str) -> str:
    """A script that kills every runner recorded in `run_dir` (only if its command line still
    points into the folder: a pid may have been reused) and removes the folder."""
    return (
        f'd={quote(run_dir)}; for f in "$d"/.pid-*; do [ -f "$f" ] || continue; p=$(cat "$f"); '
        'grep -qF -- "$d" /proc/"$p"/cmdline 2>/dev/null && kill -9 "$p" 2>/dev/null; done; '
        'rm -rf -- "$d"'
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_thermal(text: str) -> ThermalState:
    temps: dict[str, float] = {}
    governors: dict[str, str] = {}
    freqs: dict[str, int] = {}
    status = None
    bits = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "zone" and len(parts) >= 4:
            try:
                raw = float(parts[3])
            except ValueError:
                continue
            temps[f"{parts[1]}:{parts[2]}"] = raw / 1000.0 if abs(raw) >= 200 else raw
        elif parts[0] == "gov" and len(parts) >= 3:
            governors[f"cpu{parts[1]}"] = parts[2]
            if len(parts) >= 4 and parts[3].isdigit():
                freqs[f"cpu{parts[1]}"] = int(parts[3])
        elif parts[0] == "vc":
            m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", line)
            if m:
                bits = int(m.group(1), 0)
        elif "Thermal Status:" in line:
            m = re.search(r"Thermal Status:\s*(\d+)", line)
            if m:
                status = int(m.group(1))
    return ThermalState(
        temps_c=temps, thermal_status=status, throttled_bits=bits, governors=governors, cur_freq_khz=freqs
    )


def cpu_mask(cores: list[CpuCore], affinity: str) -> tuple[str, list[int]]:
    """(hex mask, CPU indices) for big | little | prime | all | a hex mask. CPUs are grouped into
    clusters by cpuinfo_max_freq: little is the slowest cluster, big every CPU outside it (so on a
    4+3+1 phone big is the 3+1 mid and prime cores), prime the fastest cluster alone. With one
    cluster, or no frequencies, each name means every CPU."""
    if not cores:
        raise DeviceError("the device reported no CPUs, so no affinity mask can be built")
    if affinity in ("big", "little", "prime", "all"):
        freqs = sorted({c.max_freq_khz for c in cores if c.max_freq_khz})
        if affinity == "all" or len(freqs) < 2:
            chosen = [c.index for c in cores]
        elif affinity == "little":
            chosen = [c.index for c in cores if c.max_freq_khz == freqs[0]]
        elif affinity == "prime":
            chosen = [c.index for c in cores if c.max_freq_khz == freqs[-1]]
        else:
            chosen = [c.index for c in cores if c.max_freq_khz and c.max_freq_khz > freqs[0]]
    else:
        value = int(affinity, 16)
        chosen = [c.index for c in cores if value >> c.index & 1]
        if not chosen:
            raise DeviceError(
                f"affinity mask {affinity} selects none of the device's CPUs "
                f"({', '.join(str(c.index) for c in cores)})",
                "use big, little, all or another mask",
            )
    mask = sum(1 << i for i in chosen)
    return f"{mask:x}", chosen


class DeviceSession:
    """One open device. Use as a context manager: the run folder is removed and the connection
    closed on the way out, whatever happened."""

    def __init__(self, spec: DeviceSpec, run_id: str | None = None):
        self.spec = spec
        self.transport = spec.make_transport()
        # unique per session: two targets can share one work folder (local and ssh to this host)
        self.run_id = (run_id or time.strftime("%Y%m%d-%H%M%S")) + "-" + secrets.token_hex(3)
        self.base: str | None = None
        self.run_dir: str | None = None
        self.info: DeviceInfo | None = None
        self.has_taskset = False
        self.has_sha256sum = False
        self.cores: list[CpuCore] = []
        self._tracked = 0
        self.lock_path: str | None = None

    @property
    def label(self) -> str:
        return self.transport.label

    @property
    def python(self) -> str:
        if self.spec.python:
            return self.spec.python
        return sys.executable if self.spec.kind == "local" else "python3"

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "DeviceSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops a runner still going in the run folder, removes the folder and the lock (one
        round trip), then closes the connection. Runs after Ctrl-C too (during_cancel); a device
        that went away leaves them, and the DeviceError says so."""
        try:
            parts = []
            if self.run_dir is not None:
                parts.append(_stop_and_remove(self.run_dir))
            if self.lock_path is not None:
                parts.append(f"rm -rf -- {quote(self.lock_path)}")
            self.run_dir = self.lock_path = None
            if parts:
                self.transport.shell("; ".join(parts), PROBE_TIMEOUT, during_cancel=True).check(
                    self.label, "removing the run folder and the lock"
                )
        finally:
            self.transport.close()

    # -- probe ----------------------------------------------------------------------------
    def probe(self) -> DeviceInfo:
        """Connects and describes the device in one round trip (identity, CPUs, tools, thermal
        state, the Python runtimes). Raises DeviceError when the device is unreachable or not
        authorized; probe_devices() turns that into a DeviceInfo that says why."""
        self.transport.connect(PROBE_TIMEOUT)
        script = "\n".join(
            [
                _PROBE_SCRIPT,
                f"echo {_SECTION}thermal",
                _THERMAL_SCRIPT,
                f"echo {_SECTION}python",
                join_argv([self.python, "-c", _RUNTIME_PROBE]) + " 2>/dev/null",
                "true",
            ]
        )
        r = self.transport.shell(script, PROBE_TIMEOUT).check(self.label, "the device probe")
        sections = _sections(r.stdout)
        kv: dict[str, str] = {}
        props: dict[str, str] = {}
        cores: list[CpuCore] = []
        for line in sections.get("", "").splitlines():
            line = line.strip()
            if m := _GETPROP.match(line):
                props[m.group(1)] = m.group(2)
            elif line.startswith("cpu ") and len(line.split()) >= 2 and line.split()[1].isdigit():
                parts = line.split()
                freq = int(parts[2]) if len(parts) >= 3 and parts[2].isdigit() else None
                cores.append(CpuCore(int(parts[1]), freq))
            elif "=" in line:
                k, _, v = line.partition("=")
                kv[k.strip()] = v.strip().strip('"')
            elif ":" in line and line.lower().startswith("cpuinfo_"):
                k, _, v = line.partition(":")
                kv[k.strip().lower()] = v.strip()
        allowed = kv.get("allowed")
        # Linux boards and containers: only the CPUs this process may use count (a container can
        # see 64 CPUs and be allowed 2). Android keeps every present CPU: its big cores are the
        # point of the mask, and a cpuset that forbids them makes taskset fail loudly.
        if allowed and "ro.build.version.sdk" not in props:
            try:
                ok = set(parse_cpu_list(allowed))
                cores = [c for c in cores if c.index in ok] or cores
            except ValueError:
                pass  # an unreadable list leaves every present CPU in
        self.cores = sorted(cores, key=lambda c: c.index)
        self.has_taskset = kv.get("has_taskset") == "1"
        self.has_sha256sum = kv.get("has_sha256sum") == "1"
        android = "ro.build.version.sdk" in props
        py = dict(ln.split("=", 1) for ln in sections.get("python", "").splitlines() if "=" in ln)
        runtimes = [x for x in py.get("runtimes", "").split(",") if x]
        py_version = py.get("py_version")
        thermal = parse_thermal(sections.get("thermal", ""))
        if android:
            abi = props.get("ro.product.cpu.abi") or kv.get("uname_m")
            abilist = [a for a in props.get("ro.product.cpu.abilist", "").split(",") if a]
            model = props.get("ro.product.model")
            manufacturer = props.get("ro.product.manufacturer")
            soc = (
                " ".join(x for x in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if x)
                or props.get("ro.board.platform")
                or props.get("ro.hardware")
            )
            os_name = f"Android {props.get('ro.build.version.release', '?')}"
            sdk = int(props["ro.build.version.sdk"]) if props["ro.build.version.sdk"].isdigit() else None
        else:
            abi = kv.get("uname_m")
            abilist = [abi] if abi else []
            model = kv.get("dt_model") or (self._host_model() if self.spec.kind == "local" else None)
            manufacturer = None
            soc = kv.get("cpuinfo_hardware") or kv.get("cpuinfo_model name")
            os_name = kv.get("PRETTY_NAME") or kv.get("uname_s")
            sdk = None
        runners = []
        if runtimes:
            runners.append("python")
        if self.spec.binary_for(abi):
            runners.append("benchmark_model")
        self.info = DeviceInfo(
            name=self.spec.name,
            target=self.spec.target,
            kind=self.spec.kind,
            reachable=True,
            authorized=True,
            model=model,
            manufacturer=manufacturer,
            soc=soc,
            abi=abi,
            abilist=abilist,
            os=os_name,
            android_sdk=sdk,
            kernel=kv.get("uname_r"),
            cores=self.cores,
            python=self.python,
            python_version=py_version,
            runtimes=runtimes,
            runners=runners,
            thermal=thermal,
        )
        return self.info

    @staticmethod
    def _host_model() -> str | None:
        import platform

        return platform.processor() or platform.machine() or None

    def thermal(self) -> ThermalState:
        r = self.transport.shell(_THERMAL_SCRIPT, PROBE_TIMEOUT).check(
            self.label, "reading the thermal state"
        )
        return parse_thermal(r.stdout)

    # -- folders --------------------------------------------------------------------------
    def _default_base(self) -> str:
        if self.spec.kind == "adb":
            return "/data/local/tmp/edgeprune"
        if self.spec.kind == "local":
            return os.path.join(tempfile.gettempdir(), f"edgeprune-bench-{os.getuid()}")
        return "$HOME/.cache/edgeprune"

    def open_folders(self, model_dirs: int = 0) -> None:
        """Creates the base and cache folders, this run's own folder and `model_dirs` folders
        m0, m1... in it, in one round trip."""
        if self.spec.workdir:
            wd = self.spec.workdir
            base_expr = quote(wd if wd.startswith(("/", "./", "../")) else "./" + wd)
        else:
            base = self._default_base()
            # ssh's default is "$HOME/.cache/edgeprune": $HOME must expand, the rest is fixed text
            base_expr = f'"{base}"' if base.startswith("$HOME/") else quote(base)
        run_name = f"run-{self.run_id}"
        mkdirs = join_argv(["mkdir", run_name, *[f"{run_name}/m{i}" for i in range(model_dirs)]])
        script = f'd={base_expr} && mkdir -p "$d/cache" && cd "$d" && echo "{_TAG}base=$(pwd -P)" && {mkdirs}'
        r = self.transport.shell(script, PROBE_TIMEOUT).check(self.label, "creating the remote work folders")
        base = next(
            (ln[len(_TAG) + 5 :] for ln in r.stdout.splitlines() if ln.startswith(_TAG + "base=")), ""
        )
        if not base.startswith("/"):
            raise DeviceError(f"{self.label}: the work folder resolved to {base!r}, not an absolute path")
        self.base = base
        self.run_dir = f"{base}/{run_name}"

    def acquire_lock(self, wait_s: float) -> None:
        """Takes the device: an atomic `mkdir BASE/.lock` holding the owner (host, pid, run). Waits
        up to `wait_s` for another run to finish; a lock left by a dead process of this host is
        taken over, and that run's folder and runner removed. Released by close()."""
        if self.base is None:
            raise RuntimeError("open_folders() first")
        lock = f"{self.base}/.lock"
        owner = f"{socket.gethostname()} {os.getpid()} {self.run_id}"
        take = f"mkdir {quote(lock)} 2>/dev/null && printf '%s\\n' {quote(owner)} > {quote(lock + '/owner')}"
        deadline = time.monotonic() + wait_s
        waits = 0
        while True:
            if self.transport.shell(take, PROBE_TIMEOUT).returncode == 0:
                self.lock_path = lock
                return
            held = self.transport.shell(
                f"cat {quote(lock + '/owner')} 2>/dev/null", PROBE_TIMEOUT
            ).stdout.strip()
            if _dead_local_owner(held):
                self._remove_dead_run(held, lock)
                continue
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"{self.label}: the device is busy with another edgeprune run ({held or 'owner unknown'})",
                    f"wait for it to finish, or remove {lock} on the device if no run is going",
                )
            waits += 1  # back off: quick hand-over after a short run, few round trips during a long one
            proc.sleep(min(0.25 * 2**waits, 2.0, max(0.1, deadline - time.monotonic())))

    def _remove_dead_run(self, owner: str, lock: str) -> None:
        """A lock whose owner died on this host could not be released: the device was gone, or the
        process was killed. What that run left goes with it: a runner still running from its run
        folder is stopped, and the folder and the lock are removed, in one round trip."""
        run_id = owner.split()[2] if len(owner.split()) >= 3 else ""
        parts = [_stop_and_remove(f"{self.base}/run-{run_id}")] if re.fullmatch(r"[\w.-]+", run_id) else []
        self.transport.shell("; ".join([*parts, f"rm -rf -- {quote(lock)}"]), PROBE_TIMEOUT).check(
            self.label, "removing a stale lock and its run folder"
        )

    @property
    def cache_dir(self) -> str:
        if self.base is None:
            raise RuntimeError("open_folders() first")
        return f"{self.base}/cache"

    def run_measured(
        self, argv: list[str], timeout: float, redirect_stderr: bool = False
    ) -> tuple[ShellResult, ThermalState, ThermalState]:
        """Runs a runner between two thermal snapshots, in one round trip. While it runs its pid is
        on record in the run folder, so that close() stops it on the device if the client side
        was killed (Ctrl-C, a timeout). Returns (the runner's result, thermal before, after)."""
        if self.run_dir is None:
            raise RuntimeError("open_folders() first")
        self._tracked += 1
        pid_file = f"{self.run_dir}/.pid-{self._tracked}"
        inner = 'pf=$1; shift; "$@" & echo $! > "$pf"; wait $!; rc=$?; rm -f "$pf"; exit $rc'
        run = join_argv(["sh", "-c", inner, "sh", pid_file, *argv]) + (" 2>&1" if redirect_stderr else "")
        script = "\n".join(
            [
                _THERMAL_SCRIPT,
                f"echo {_SECTION}run",
                run,
                "rc=$?",
                f"echo; echo {_SECTION}after",
                _THERMAL_SCRIPT,
                "exit $rc",
            ]
        )
        r = self.transport.shell(script, timeout)
        parts = _sections(r.stdout)
        if "after" not in parts:
            raise DeviceError(f"{self.label}: the runner's output is cut short: {r.tail()}")
        out = parts["run"][:-1] if parts["run"].endswith("\n") else parts["run"]
        result = ShellResult(run, r.returncode, out, r.stderr, r.seconds)
        return result, parse_thermal(parts[""]), parse_thermal(parts["after"])

    # -- files ----------------------------------------------------------------------------
    def _remote_digests(self, paths: list[str]) -> list[str | None]:
        """sha256 (or, without sha256sum, the size as a string) of each remote path; None where
        the file is missing. One round trip."""
        if not paths:
            return []
        if self.has_sha256sum:
            body = f'echo "{_TAG}$(sha256sum "$f" 2>/dev/null | cut -c1-64)"'
        else:
            body = f'echo "{_TAG}$(wc -c < "$f" 2>/dev/null | tr -d " ")"'
        script = f'for f in {" ".join(quote(p) for p in paths)}; do if [ -f "$f" ]; then {body}; else echo "{_TAG}-"; fi; done'
        r = self.transport.shell(script, PROBE_TIMEOUT).check(self.label, "checking copied files")
        # tagged lines only: a login shell may print a banner first (.bashrc echoing over ssh)
        words = [ln[len(_TAG) :].strip() or "-" for ln in r.stdout.splitlines() if ln.startswith(_TAG)]
        if len(words) != len(paths):
            raise DeviceError(f"{self.label}: could not check the copied files: {r.tail()}")
        return [None if w == "-" else w for w in words]

    def remote_sha256(self, path: str) -> str | None:
        if not self.has_sha256sum:
            return None
        return self._remote_digests([path])[0]

    def _expected(self, local: Path, sha: str) -> str:
        return sha if self.has_sha256sum else str(local.stat().st_size)

    def push_many(self, items: list[tuple[Path, str, str]]) -> None:
        """Copies (local, remote, sha256) files in one transfer and checks them on the device by
        sha256 (by size where the device has no sha256sum)."""
        if not items:
            return
        total = sum(local.stat().st_size for local, _, _ in items)
        self.transport.push([(local, remote) for local, remote, _ in items], 60 + total / 2e6)
        got = self._remote_digests([remote for _, remote, _ in items])
        for (local, remote, sha), digest in zip(items, got, strict=True):
            if digest != self._expected(local, sha):
                raise DeviceError(
                    f"{self.label}: {remote} differs from {local} after the copy "
                    f"({'sha256' if self.has_sha256sum else 'size'} {digest} != {self._expected(local, sha)[:16]})",
                    "the device storage may be full or failing; rerun",
                )

    def push_checked(self, local: Path, remote: str, sha: str | None = None) -> None:
        self.push_many([(local, remote, sha or sha256_file(local))])

    def cached(self, local: Path, executable: bool = False) -> tuple[str, str]:
        """Copies `local` into the cache folder once, named by its sha256; returns (remote path,
        sha256). A file already there with the right digest is not copied again."""
        sha = sha256_file(local)
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", local.name)
        remote = f"{self.cache_dir}/{sha[:16]}-{safe_name}"
        if self._remote_digests([remote])[0] == self._expected(local, sha):
            return remote, sha
        tmp = f"{remote}.part-{self.run_id}"
        self.push_checked(local, tmp, sha)
        chmod = f"chmod 755 {quote(tmp)} && " if executable else ""
        self.transport.shell(f"{chmod}mv {quote(tmp)} {quote(remote)}", PROBE_TIMEOUT).check(
            self.label, "storing a file in the cache"
        )
        return remote, sha

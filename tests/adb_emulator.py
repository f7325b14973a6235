"""An adbd-protocol device emulator, so the real `adb` client can be tested without a phone.

`AdbEmulator` is a small TCP server that plays an Android device for the real adb server
(`adb connect 127.0.0.1:PORT`). It speaks the adb transport protocol (CNXN/AUTH/OPEN/OKAY/WRTE/CLSE,
version 0x01000001, up to 1 MiB payloads) and advertises no features, so the client uses the
legacy services an old phone offers:

* ``shell:CMD`` - runs ``/bin/sh -c CMD`` in a sandbox. stdout and stderr are merged, ``\\n`` becomes
  ``\\r\\n`` (as through an old device's pty; ``crlf=False`` turns that off) and the exit code is
  lost, exactly like a legacy device. Output streams as it is produced, one WRTE in flight.
* ``exec:CMD`` - the same without the CRLF translation (binary safe).
* ``sync:`` - file sync v1 (STAT, LIST, SEND, RECV, QUIT), parsed as a byte stream.

Commands get /dev/null as stdin (data the client writes to a shell stream is acknowledged and
dropped). Any other service (interactive ``shell:``, ``root:``, ``reboot:``, ...) is refused with CLSE,
which the client reports as an error.

The sandbox: device paths are rewritten in shell commands (and mapped in sync requests) to folders
under one temporary root, and host paths in the output are rewritten back:

    /data/local/tmp  ->  <root>/data_local_tmp   (``emulator.sandbox``; also the cwd and $TMPDIR)
    /sys             ->  <root>/sys              (``emulator.sysfs``; a fake sysfs, see below)
    /system/bin      ->  <root>/bin              (first on $PATH: getprop, dumpsys, taskset)

The fake sysfs has ``devices/system/cpu/{possible,present,online}``, per CPU
``cpuN/cpufreq/{cpuinfo_max_freq,cpuinfo_min_freq,scaling_max_freq,scaling_cur_freq,scaling_governor}``
(8 cores, big.LITTLE: 4x1800000, 3x2400000, 1x3000000 kHz by default) and
``class/thermal/thermal_zone0/{type,temp}``.

Tools on the sandbox PATH:

* ``getprop`` (all properties as ``[key]: [value]`` lines) and ``getprop KEY [DEFAULT]``, answered from
  ``props`` (defaults in ``DEFAULT_PROPS``).
* ``dumpsys thermalservice`` prints ``Thermal Status: N`` (``thermal_status``).
* ``taskset [-p|-a] MASK CMD...`` runs the host's util-linux taskset with MASK intersected with the
  CPUs this process may use; a mask naming only CPUs the host lacks falls back to all host CPUs. So a
  big-core mask such as ``80`` works on a 2-core host. Other forms are passed through unchanged.

Failure modes: ``unauthorized=True`` answers CNXN with AUTH tokens forever (the client lists the device
as ``unauthorized``); ``disconnect()`` makes the device vanish (all sockets closed, commands killed, no
new connections); ``vanish_after_s`` does that on a timer from ``start()``; ``vanish_on="text"`` does it
``vanish_delay_s`` after a shell/exec command containing ``text`` starts.

`AdbServer` runs an isolated adb server (its own ``ANDROID_ADB_SERVER_PORT``, its own key folder) and
connects it to an emulator. Both are context managers; everything is bounded by timeouts.
"""

from __future__ import annotations

import collections
import os
import posixpath
import re
import shutil
import signal
import socket
import stat as stat_mod
import struct
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

# --- protocol constants (AOSP adb.h, file_sync_protocol.h) ---------------------------------------

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024

ADB_AUTH_TOKEN = 1
ADB_AUTH_SIGNATURE = 2
ADB_AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

SYNC_DATA_MAX = 64 * 1024

HEADER = struct.Struct("<6I")
SYNC_HEADER = struct.Struct("<4sI")

RESERVED_PORTS = range(5555, 5586)  # the adb server probes these for emulators

DEFAULT_PROPS = {
    "ro.product.name": "emu_phone",
    "ro.product.model": "Emu Phone 8",
    "ro.product.device": "emu8",
    "ro.product.manufacturer": "EdgePrune",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
    "ro.board.platform": "emusoc",
    "ro.build.version.sdk": "33",
    "ro.build.version.release": "13",
    "ro.soc.model": "SM8450",
    "ro.soc.manufacturer": "QTI",
}

DEFAULT_CPU_MAX_FREQS = (1800000,) * 4 + (2400000,) * 3 + (3000000,)

_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
_PROP_KEY = re.compile(r"^[A-Za-z0-9_.\-:@]+$")


class _Closed(Exception):
    """The stream or the connection is gone."""


def _cmd_name(cmd: int) -> str:
    return struct.pack("<I", cmd).decode("ascii", "replace")


# --- streams -----------------------------------------------------------------------------------


class _Stream:
    """One adb stream on the device side: one WRTE in flight out, inbound data acknowledged once it
    has been consumed (so the host cannot run ahead of the service)."""

    def __init__(self, conn: "_Connection", local_id: int, remote_id: int, service: str):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.cond = threading.Condition()
        self.in_flight = False
        self.closed = False
        self.inbound: collections.deque = collections.deque()  # [bytes, offset]
        self.outbuf = bytearray()
        self.ack_on_receive = True  # shell/exec: input is discarded and acknowledged at once
        self.proc: subprocess.Popen | None = None

    # outbound
    def _send_chunk(self, chunk: bytes) -> None:
        with self.cond:
            while self.in_flight and not self.closed:
                self.cond.wait(0.5)
            if self.closed:
                raise _Closed()
            self.in_flight = True
        self.conn.send(A_WRTE, self.local_id, self.remote_id, chunk)

    def write(self, data: bytes) -> None:
        """Buffers data; full payloads are sent at once, the rest on flush()."""
        self.outbuf += data
        limit = self.conn.max_payload
        while len(self.outbuf) >= limit:
            chunk = bytes(self.outbuf[:limit])
            del self.outbuf[:limit]
            self._send_chunk(chunk)

    def flush(self) -> None:
        limit = self.conn.max_payload
        while self.outbuf:
            chunk = bytes(self.outbuf[:limit])
            del self.outbuf[:limit]
            self._send_chunk(chunk)

    def on_okay(self) -> None:
        with self.cond:
            self.in_flight = False
            self.cond.notify_all()

    # inbound
    def on_data(self, data: bytes) -> None:
        if self.ack_on_receive:
            self.conn.send(A_OKAY, self.local_id, self.remote_id)
            return
        with self.cond:
            self.inbound.append([data, 0])
            self.cond.notify_all()

    def read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            with self.cond:
                need_flush = not self.inbound and not self.closed and bool(self.outbuf)
            if need_flush:
                self.flush()  # about to wait for the host: let it see our replies first
            with self.cond:
                while not self.inbound and not self.closed:
                    self.cond.wait(0.5)
                if not self.inbound:
                    raise _Closed()
                item = self.inbound[0]
                data, off = item
                take = min(n - len(out), len(data) - off)
                out += data[off:off + take]
                item[1] = off + take
                consumed = item[1] == len(data)
                if consumed:
                    self.inbound.popleft()
            if consumed:
                self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return bytes(out)

    # closing
    def close_from_device(self) -> None:
        """Flushes, waits (bounded) for the last OKAY, then sends CLSE."""
        try:
            self.flush()
        except (_Closed, OSError):
            pass
        with self.cond:
            deadline = time.monotonic() + 5
            while self.in_flight and not self.closed and time.monotonic() < deadline:
                self.cond.wait(0.2)
            was_closed = self.closed
            self.closed = True
            self.cond.notify_all()
        if not was_closed:
            try:
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
            except OSError:
                pass
        self.conn.forget(self.local_id)

    def close_from_host(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.kill()
        self.conn.forget(self.local_id)

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# --- one transport connection ------------------------------------------------------------------


class _Connection:
    def __init__(self, emu: "AdbEmulator", sock: socket.socket):
        self.emu = emu
        self.sock = sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.streams_lock = threading.Lock()
        self.version = A_VERSION
        self.max_payload = MAX_PAYLOAD_V1
        self.online = False
        self.closed = False
        self.auth_rounds = 0
        self.public_key: bytes | None = None

    # wire
    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        check = 0 if self.version >= A_VERSION_SKIP_CHECKSUM else sum(data) & 0xFFFFFFFF
        header = HEADER.pack(cmd, arg0, arg1, len(data), check, cmd ^ 0xFFFFFFFF)
        with self.send_lock:
            if self.closed:
                raise _Closed()
            self.sock.sendall(header + data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def forget(self, local_id: int) -> None:
        with self.streams_lock:
            self.streams.pop(local_id, None)

    def close(self) -> None:
        with self.send_lock:
            already = self.closed
            self.closed = True
        if not already:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        self._drop_streams()

    def _drop_streams(self) -> None:
        with self.streams_lock:
            streams = list(self.streams.values())
            self.streams.clear()
        for s in streams:
            s.close_from_host()

    # packet loop
    def run(self) -> None:
        try:
            while not self.emu._stopping.is_set():
                cmd, arg0, arg1, length, _check, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != cmd ^ 0xFFFFFFFF or length > MAX_PAYLOAD:
                    break  # garbage: drop the connection like adbd does
                data = self._recv_exact(length) if length else b""
                self._handle(cmd, arg0, arg1, data)
        except (_Closed, OSError):
            pass
        finally:
            self.close()

    def _banner(self) -> bytes:
        p = self.emu.props
        return (
            f"device::ro.product.name={p.get('ro.product.name', '')};"
            f"ro.product.model={p.get('ro.product.model', '')};"
            f"ro.product.device={p.get('ro.product.device', '')};"
        ).encode()

    def _send_token(self) -> None:
        self.auth_rounds += 1
        self.send(A_AUTH, ADB_AUTH_TOKEN, 0, os.urandom(TOKEN_SIZE))

    def _handle(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self._drop_streams()  # a new CNXN resets the transport
            self.version = min(arg0, A_VERSION) if arg0 >= A_VERSION_MIN else A_VERSION_MIN
            self.max_payload = max(MAX_PAYLOAD_V1, min(arg1, self.emu.max_payload))
            if self.emu.unauthorized:
                self._send_token()
            else:
                self.online = True
                self.send(A_CNXN, self.version, self.emu.max_payload, self._banner())
        elif cmd == A_AUTH:
            if arg0 == ADB_AUTH_SIGNATURE:
                self._send_token()  # no signature is ever accepted: ask again, as adbd does
            elif arg0 == ADB_AUTH_RSAPUBLICKEY:
                self.public_key = data  # a real phone would now show the "Allow USB debugging?" prompt
        elif cmd == A_OPEN:
            if not self.online:
                return
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            self.emu._open_stream(self, arg0, service)
        elif cmd == A_OKAY:
            s = self.streams.get(arg1)
            if s is not None:
                s.on_okay()
        elif cmd == A_WRTE:
            s = self.streams.get(arg1)
            if s is None:
                self.send(A_CLSE, 0, arg0)
            else:
                s.on_data(data)
        elif cmd == A_CLSE:
            s = self.streams.get(arg1)
            if s is not None:
                s.close_from_host()
        # A_SYNC / A_STLS and unknown commands are ignored


# --- the emulator ------------------------------------------------------------------------------


class AdbEmulator:
    """A fake Android device that the real adb client talks to over TCP.

    Usage::

        with AdbEmulator(props={"ro.product.model": "Pixel 7"}) as dev, AdbServer(dev) as adb:
            subprocess.run(["adb", "-s", dev.serial, "shell", "getprop ro.product.model"], env=adb.env, ...)

    Arguments: ``props`` (merged over DEFAULT_PROPS; ro.product.name/model/device also go in the CNXN
    banner), ``port`` (0 = OS-chosen; 5555-5585 is refused), ``crlf`` (legacy shell turns \n into
    \r\n), ``unauthorized``, ``vanish_after_s``, ``vanish_on`` + ``vanish_delay_s``,
    ``cpu_max_freqs`` (kHz per CPU), ``governor``, ``temperature_mc`` (millidegrees C),
    ``thermal_status``, ``max_payload``, ``root`` (sandbox root; a fresh temp folder by default,
    removed on close).

    Attributes: ``host``, ``port``, ``serial`` ("127.0.0.1:PORT"), ``sandbox`` (host Path behind
    /data/local/tmp), ``sysfs`` (behind /sys), ``bindir`` (behind /system/bin), ``root``, ``props``,
    ``commands`` (every shell:/exec: command as the client sent it), ``services`` (every service
    opened), ``vanished`` (Event), ``connections`` (open transport connections).

    Methods: ``start()``/``close()`` (or the context manager), ``disconnect()``,
    ``device_path(path)``, ``live_processes()``, ``set_temperature(mc)``, ``set_thermal_status(n)``.
    """

    def __init__(
        self,
        props: dict[str, str] | None = None,
        *,
        port: int = 0,
        crlf: bool = True,
        unauthorized: bool = False,
        vanish_after_s: float | None = None,
        vanish_on: str | None = None,
        vanish_delay_s: float = 0.5,
        cpu_max_freqs: list[int] | tuple[int, ...] = DEFAULT_CPU_MAX_FREQS,
        governor: str = "schedutil",
        temperature_mc: int = 35000,
        thermal_status: int = 0,
        max_payload: int = MAX_PAYLOAD,
        root: str | os.PathLike | None = None,
    ):
        if port in RESERVED_PORTS:
            raise ValueError(f"port {port} is in 5555-5585, which the adb server probes for emulators")
        if not MAX_PAYLOAD_V1 <= max_payload <= MAX_PAYLOAD:
            raise ValueError("max_payload must be between 4 KiB and 1 MiB")
        self.props: dict[str, str] = {**DEFAULT_PROPS, **(props or {})}
        for key in self.props:
            if not _PROP_KEY.match(key):
                raise ValueError(f"bad property name {key!r}")
        self.crlf = crlf
        self.unauthorized = unauthorized
        self.vanish_after_s = vanish_after_s
        self.vanish_on = vanish_on
        self.vanish_delay_s = vanish_delay_s
        self.cpu_max_freqs = list(cpu_max_freqs)
        self.governor = governor
        self.max_payload = max_payload
        self._requested_port = port
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="adbemu-") if root is None else root).resolve()
        if not _SAFE_PATH.match(str(self.root)):
            raise ValueError(f"sandbox root {self.root} must be a plain path (it is spliced into commands)")
        self.sandbox = self.root / "data_local_tmp"
        self.sysfs = self.root / "sys"
        self.bindir = self.root / "bin"
        self.host = "127.0.0.1"
        self.port = 0
        self.commands: list[str] = []  # every shell:/exec: command as received (device paths)
        self.services: list[str] = []  # every service opened
        self.vanished = threading.Event()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._conns: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._next_id = 1
        self._timers: list[threading.Timer] = []
        self._procs: list[subprocess.Popen] = []
        self._path_map = [  # device prefix -> host folder
            ("/data/local/tmp", self.sandbox),
            ("/system/bin", self.bindir),
            ("/sys", self.sysfs),
        ]
        self._build_sandbox(temperature_mc, thermal_status)
        self._env = dict(os.environ)
        self._env["PATH"] = f"{self.bindir}:{self._env.get('PATH', '/usr/bin:/bin')}"
        self._env["TMPDIR"] = str(self.sandbox)
        self._env.pop("ANDROID_ADB_SERVER_PORT", None)

    # ---- public API
    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """How many transport connections are open right now."""
        with self._lock:
            return sum(1 for c in self._conns if not c.closed)

    def start(self) -> "AdbEmulator":
        for _ in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            port = sock.getsockname()[1]
            if port in RESERVED_PORTS:  # an OS-chosen port landed in the probed range: try again
                sock.close()
                continue
            break
        else:
            raise RuntimeError("could not get a port outside 5555-5585")
        sock.listen(8)
        sock.settimeout(0.2)
        self._listener = sock
        self.port = port
        self._spawn(self._accept_loop, "adbemu-accept")
        if self.vanish_after_s is not None:
            self._timer(self.vanish_after_s)
        return self

    def disconnect(self) -> None:
        """The device vanishes: stop accepting, close every connection, kill running commands."""
        self.vanished.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            try:  # shutdown stops listening at once, even while the accept thread sits in poll()
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    def close(self) -> None:
        self._stopping.set()
        for t in self._timers:
            t.cancel()
        self.disconnect()
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout=5)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    stop = close

    def __enter__(self) -> "AdbEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def device_path(self, path: str) -> Path | None:
        """The host path behind a device path (None if the path is outside the sandbox)."""
        norm = posixpath.normpath("/" + path.lstrip("/")) if path else "/"
        for prefix, host in self._path_map:
            if norm == prefix or norm.startswith(prefix + "/"):
                return Path(str(host) + norm[len(prefix):])
        if norm == str(self.root) or norm.startswith(str(self.root) + "/"):
            return Path(norm)
        return None

    def live_processes(self) -> list[int]:
        """Pids of shell:/exec: commands still running."""
        with self._lock:
            self._procs = [p for p in self._procs if p.poll() is None]
            return [p.pid for p in self._procs]

    def set_temperature(self, millidegrees: int) -> None:
        (self.sysfs / "class/thermal/thermal_zone0/temp").write_text(f"{int(millidegrees)}\n")

    def set_thermal_status(self, status: int) -> None:
        (self.root / "dumpsys_thermalservice.txt").write_text(
            "IsStatusOverride: false\n"
            "ThermalEventListeners:\n\tcallbacks: 0\n"
            "ThermalStatusListeners:\n\tcallbacks: 0\n"
            f"Thermal Status: {int(status)}\n"
            "HAL Ready: true\n"
        )

    # ---- sandbox
    def _build_sandbox(self, temperature_mc: int, thermal_status: int) -> None:
        self.sandbox.mkdir(parents=True, exist_ok=True)
        self.bindir.mkdir(parents=True, exist_ok=True)
        cpu = self.sysfs / "devices/system/cpu"
        cpu.mkdir(parents=True, exist_ok=True)
        n = len(self.cpu_max_freqs)
        span = f"0-{n - 1}\n" if n > 1 else "0\n"
        for name in ("possible", "present", "online"):
            (cpu / name).write_text(span)
        for i, freq in enumerate(self.cpu_max_freqs):
            d = cpu / f"cpu{i}/cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            (d / "cpuinfo_max_freq").write_text(f"{freq}\n")
            (d / "cpuinfo_min_freq").write_text("300000\n")
            (d / "scaling_max_freq").write_text(f"{freq}\n")
            (d / "scaling_cur_freq").write_text(f"{freq}\n")
            (d / "scaling_governor").write_text(f"{self.governor}\n")
        tz = self.sysfs / "class/thermal/thermal_zone0"
        tz.mkdir(parents=True, exist_ok=True)
        (tz / "type").write_text("soc-thermal\n")
        self.set_temperature(temperature_mc)
        self.set_thermal_status(thermal_status)

        propdir = self.root / "props"
        propdir.mkdir(exist_ok=True)
        dump = []
        for key in sorted(self.props):
            value = str(self.props[key])
            (propdir / key).write_text(value + "\n")
            dump.append(f"[{key}]: [{value}]\n")
        (self.root / "props.txt").write_text("".join(dump))

        self._script("getprop", f"""\
            P={self.root}/props
            if [ $# -eq 0 ]; then cat {self.root}/props.txt; exit 0; fi
            case "$1" in ''|*/*|.|..) printf '%s\\n' "$2"; exit 0;; esac
            if [ -f "$P/$1" ]; then cat "$P/$1"; else printf '%s\\n' "$2"; fi
            """)
        self._script("dumpsys", f"""\
            case "$1" in
              thermalservice) cat {self.root}/dumpsys_thermalservice.txt ;;
              *) echo "Can't find service: $1" ;;
            esac
            """)
        real = shutil.which("taskset", path="/usr/bin:/bin:/usr/sbin:/sbin")
        hostmask = sum(1 << c for c in os.sched_getaffinity(0))
        if real is None:
            body = 'echo "taskset: util-linux taskset is not installed on the host" >&2; exit 127\n'
        else:
            body = f"""\
            # Runs the host's taskset with MASK intersected with the host CPUs ({hostmask:#x}); a mask
            # that names no host CPU falls back to all host CPUs. Other forms pass through unchanged.
            REAL={real}
            HOSTMASK={hostmask}
            opts=""; pidmode=0
            while [ $# -gt 0 ]; do
              case "$1" in
                -p|--pid) opts="$opts $1"; pidmode=1; shift ;;
                -a|--all-tasks) opts="$opts $1"; shift ;;
                -ap|-pa) opts="$opts $1"; pidmode=1; shift ;;
                -*) exec "$REAL" $opts "$@" ;;
                *) break ;;
              esac
            done
            if [ $# -lt 2 ]; then exec "$REAL" $opts "$@"; fi
            mask=$1; shift
            hex=${{mask#0[xX]}}
            case "$hex" in ''|*[!0-9a-fA-F]*) echo "taskset: bad mask '$mask'" >&2; exit 1 ;; esac
            eff=$(( 0x$hex & HOSTMASK ))
            [ "$eff" -ne 0 ] || eff=$HOSTMASK
            exec "$REAL" $opts "$(printf '%x' "$eff")" "$@"
            """
        self._script("taskset", body)

    def _script(self, name: str, body: str) -> None:
        path = self.bindir / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        path.chmod(0o755)

    def _rewrite_command(self, cmd: str) -> str:
        def repl(m: re.Match) -> str:
            for prefix, host in self._path_map:
                if m.group(1) == prefix:
                    return str(host)
            return m.group(0)

        return re.sub(r"(?<![\w.\-/])(/data/local/tmp|/system/bin|/sys)(?![\w.\-])", repl, cmd)

    # ---- threads
    def _spawn(self, fn, name: str, *args) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()
        return t

    def _timer(self, delay: float) -> None:
        t = threading.Timer(delay, self.disconnect)
        t.daemon = True
        self._timers.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set() and not self.vanished.is_set():
            listener = self._listener
            if listener is None:
                break
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns = [c for c in self._conns if not c.closed]
                self._conns.append(conn)
            if self.vanished.is_set():
                conn.close()
                break
            self._spawn(conn.run, "adbemu-conn")

    def _open_stream(self, conn: _Connection, remote_id: int, service: str) -> None:
        self.services.append(service)
        if service.startswith("shell:") or service.startswith("exec:"):
            kind, _, command = service.partition(":")
            if not command:  # interactive shell: not offered by this emulator
                conn.send(A_CLSE, 0, remote_id)
                return
            target = self._run_command
        elif service == "sync:":
            kind, command, target = "sync", "", self._run_sync
        else:
            conn.send(A_CLSE, 0, remote_id)  # unknown service: refused, as adbd does
            return
        with self._lock:
            local_id = self._next_id
            self._next_id += 1
        stream = _Stream(conn, local_id, remote_id, service)
        stream.ack_on_receive = kind != "sync"
        with conn.streams_lock:
            conn.streams[local_id] = stream
        conn.send(A_OKAY, local_id, remote_id)
        if kind != "sync":
            self.commands.append(command)
            if self.vanish_on is not None and self.vanish_on in command:
                self._timer(self.vanish_delay_s)
        self._spawn(target, f"adbemu-{kind}", stream, kind, command)

    # ---- shell:/exec:
    def _reverse_pairs(self) -> list[tuple[bytes, bytes]]:
        return [(str(host).encode(), prefix.encode()) for prefix, host in self._path_map]

    def _run_command(self, stream: _Stream, kind: str, command: str) -> None:
        pairs = self._reverse_pairs()
        longest = max(len(h) for h, _ in pairs)
        crlf = self.crlf and kind == "shell"
        pending = b""
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", self._rewrite_command(command)],
                cwd=self.sandbox, env=self._env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as e:
            try:
                stream.write(f"/system/bin/sh: {e}\n".encode())
            except (_Closed, OSError):
                pass
            stream.close_from_device()
            return
        stream.proc = proc
        with self._lock:
            self._procs.append(proc)
        if stream.closed:
            stream.kill()

        def emit(data: bytes) -> None:
            if crlf:
                data = data.replace(b"\n", b"\r\n")
            stream.write(data)
            stream.flush()

        try:
            fd = proc.stdout.fileno()
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data = pending + chunk
                for host, dev in pairs:
                    data = data.replace(host, dev)
                # hold back a tail that may be the start of a host path split across reads
                keep = 0
                for k in range(min(longest - 1, len(data)), 0, -1):
                    tail = data[-k:]
                    if any(h.startswith(tail) for h, _ in pairs):
                        keep = k
                        break
                pending = data[len(data) - keep:] if keep else b""
                out = data[: len(data) - keep]
                if out:
                    emit(out)
            if pending:
                emit(pending)
        except (_Closed, OSError):
            stream.kill()
        finally:
            proc.stdout.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stream.kill()
                proc.wait(timeout=5)
            stream.close_from_device()

    # ---- sync:
    def _run_sync(self, stream: _Stream, _kind: str, _command: str) -> None:
        try:
            while True:
                ident, length = SYNC_HEADER.unpack(stream.read_exact(8))
                if ident == b"QUIT":
                    break
                if ident not in (b"STAT", b"LIST", b"SEND", b"RECV"):
                    self._sync_fail(stream, f"unknown sync request {ident!r}")
                    break
                if length > 1024:
                    self._sync_fail(stream, "path too long")
                    break
                path = stream.read_exact(length).decode("utf-8", "surrogateescape")
                if ident == b"STAT":
                    self._sync_stat(stream, path)
                elif ident == b"LIST":
                    self._sync_list(stream, path)
                elif ident == b"SEND":
                    if not self._sync_send(stream, path):
                        break
                elif ident == b"RECV":
                    self._sync_recv(stream, path)
            stream.flush()
        except (_Closed, OSError, struct.error):
            pass
        finally:
            stream.close_from_device()

    @staticmethod
    def _sync_fail(stream: _Stream, message: str) -> None:
        msg = message.encode()
        stream.write(SYNC_HEADER.pack(b"FAIL", len(msg)) + msg)

    def _host(self, path: str) -> str | None:
        """device_path() as a string that keeps a trailing slash (so "file/" is not "file")."""
        host = self.device_path(path)
        if host is None:
            return None
        return str(host) + ("/" if path.endswith("/") and str(host) != "/" else "")

    def _sync_stat(self, stream: _Stream, path: str) -> None:
        host = self._host(path)
        mode = size = mtime = 0
        if host is not None:
            try:
                st = os.lstat(host)
                mode, size, mtime = st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF
            except OSError:
                pass
        stream.write(struct.pack("<4sIII", b"STAT", mode, size, mtime))

    def _sync_list(self, stream: _Stream, path: str) -> None:
        host = self._host(path)
        names = []
        if host is not None:
            try:
                names = [".", ".."] + sorted(os.listdir(host))
            except OSError:
                names = []
        for name in names:
            try:
                st = os.lstat(os.path.join(host, name))
            except OSError:
                continue
            raw = name.encode("utf-8", "surrogateescape")
            stream.write(struct.pack("<4sIIII", b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF,
                                     int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw)
        stream.write(struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))

    def _sync_send(self, stream: _Stream, spec: str) -> bool:
        path, sep, mode_s = spec.rpartition(",")
        error = None
        try:
            mode = int(mode_s) if sep else 0o100644
        except ValueError:
            path, mode, error = spec, 0o100644, "bad SEND mode"
        host = self.device_path(path) if error is None else None
        if error is None and host is None:
            error = f"{path}: Permission denied (outside the emulated device's writable folders)"
        elif error is None and path.endswith("/"):
            error = f"{path}: Is a directory"
        is_link = stat_mod.S_ISLNK(mode)
        tmp = None
        fh = None
        link_target = bytearray()
        if error is None:
            try:
                host.parent.mkdir(parents=True, exist_ok=True)
                if not is_link:
                    tmp = host.with_name(f".{host.name}.adbemu-{os.getpid()}-{id(stream)}")
                    fh = open(tmp, "wb")
            except OSError as e:
                error = f"{path}: {e.strerror or e}"
        mtime = 0
        try:
            while True:  # consume DATA... DONE even after an error, as adbd does
                ident, length = SYNC_HEADER.unpack(stream.read_exact(8))
                if ident == b"DONE":
                    mtime = length
                    break
                if ident != b"DATA" or length > SYNC_DATA_MAX:
                    self._sync_fail(stream, f"invalid data message {ident!r}")
                    return False
                data = stream.read_exact(length)
                if error is not None:
                    continue
                if is_link:
                    link_target += data
                else:
                    try:
                        fh.write(data)
                    except OSError as e:
                        error = f"{path}: {e.strerror or e}"
        finally:
            if fh is not None:
                fh.close()
        if error is None:
            try:
                if is_link:
                    if host.is_symlink() or host.exists():
                        host.unlink()
                    os.symlink(link_target.decode("utf-8", "surrogateescape"), host)
                else:
                    os.chmod(tmp, stat_mod.S_IMODE(mode) or 0o644)
                    os.replace(tmp, host)
                    tmp = None
                    os.utime(host, (mtime, mtime))
            except OSError as e:
                error = f"{path}: {e.strerror or e}"
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if error is None:
            stream.write(SYNC_HEADER.pack(b"OKAY", 0))
        else:
            self._sync_fail(stream, error)
        return True

    def _sync_recv(self, stream: _Stream, path: str) -> None:
        host = self._host(path)
        if host is None:
            self._sync_fail(stream, f"{path}: Permission denied")
            return
        try:
            fh = open(host, "rb")
        except OSError as e:
            self._sync_fail(stream, f"{path}: {e.strerror or e}")
            return
        with fh:
            while True:
                try:
                    data = fh.read(SYNC_DATA_MAX)
                except OSError as e:
                    self._sync_fail(stream, f"{path}: {e.strerror or e}")
                    return
                if not data:
                    break
                stream.write(SYNC_HEADER.pack(b"DATA", len(data)) + data)
        stream.write(SYNC_HEADER.pack(b"DONE", 0))


# --- an isolated adb server --------------------------------------------------------------------


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS and port != 5037:
            return port
    raise RuntimeError("no free port")


class AdbServer:
    """An adb server of its own for one test, connected to an emulator (or any serial).

    ``env`` is os.environ plus ANDROID_ADB_SERVER_PORT: pass it to every adb subprocess. The server
    runs with a private HOME so its keys (~/.android/adbkey) are throwaway. On exit: adb disconnect,
    adb kill-server; every call has a timeout.

    ``expect`` is the state to wait for in `adb devices` (``"device"``, or ``"unauthorized"``).
    """

    def __init__(self, device: "AdbEmulator | str | None" = None, *, adb: str = "adb",
                 expect: str = "device", timeout: float = 20.0):
        self.adb = adb
        self.serial = device.serial if isinstance(device, AdbEmulator) else device
        self.expect = expect
        self.timeout = timeout
        self.port = 0
        self.env: dict[str, str] = {}
        self._tmp: Path | None = None
        self._server_env: dict[str, str] = {}

    def run(self, *args: str, timeout: float = 30.0, check: bool = False,
            text: bool = True) -> subprocess.CompletedProcess:
        """Runs `adb ARGS...` against this server."""
        return subprocess.run([self.adb, *args], env=self.env, capture_output=True, text=text,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=check)

    def devices(self) -> dict[str, str]:
        """serial -> state, from `adb devices`."""
        out = self.run("devices", timeout=10).stdout
        states = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1]
        return states

    def log(self) -> str:
        """The adb server's log (for failure messages)."""
        try:
            return (self._tmp / "adb.log").read_text(errors="replace")[-4000:]
        except (OSError, TypeError):
            return ""

    def connect(self, serial: str, expect: str = "device", timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        last = ""
        while time.monotonic() < deadline:
            res = self.run("connect", serial, timeout=10)
            last = (res.stdout + res.stderr).strip()
            # wait for the state; re-issue connect only if the device drops out of the list
            while time.monotonic() < deadline:
                state = self.devices().get(serial)
                if state == expect:
                    return
                if state is None:
                    break
                time.sleep(0.1)
            time.sleep(0.2)
        raise RuntimeError(f"adb never listed {serial} as {expect!r} (last connect: {last!r}; "
                           f"devices: {self.devices()})\n{self.log()}")

    def __enter__(self) -> "AdbServer":
        self._tmp = Path(tempfile.mkdtemp(prefix="adbsrv-"))
        self.port = _free_port()
        self.env = dict(os.environ)
        self.env["ANDROID_ADB_SERVER_PORT"] = str(self.port)
        self.env.pop("ANDROID_SERIAL", None)
        self._server_env = dict(self.env)
        self._server_env["HOME"] = str(self._tmp)
        self._server_env["ANDROID_ADB_LOG_PATH"] = str(self._tmp / "adb.log")
        try:
            subprocess.run([self.adb, "start-server"], env=self._server_env, capture_output=True,
                           timeout=30, stdin=subprocess.DEVNULL, check=True)
            if self.serial is not None:
                self.connect(self.serial, self.expect)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.serial is not None:
                try:
                    self.run("disconnect", self.serial, timeout=10)
                except (subprocess.TimeoutExpired, OSError):
                    pass
            try:
                self.run("kill-server", timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                pass
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

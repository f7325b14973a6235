"""Benchmarks .tflite files on several devices at once: one worker thread per device, never two
runs on one device at the same time (a lock per device, also across targets naming the same
device), results merged into one BenchRun. A device that fails is reported with its reason and
the other devices' results are kept. Ctrl-C stops every running command, removes each device's
run folder, then re-raises."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gzip
import hashlib
import platform
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from edgeprune import progress
from edgeprune.bench import proc
from edgeprune.bench.device import DeviceSession, cpu_mask
from edgeprune.bench.inventory import DeviceSpec, Inventory, resolve_targets
from edgeprune.bench.results import BenchResult, BenchRun, BenchSettings, DeviceInfo, Failure, ModelFile
from edgeprune.bench.runners import (
    Combined,
    Measurement,
    MeasurementError,
    combine,
    command_prefix,
    make_runner,
)
from edgeprune.bench.stats import summarize
from edgeprune.errors import DeviceError, InputFileError

TFLITE_MAGIC = b"TFL3"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def device_lock(identity: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(identity, threading.Lock())


def inspect_model(path: str | Path) -> ModelFile:
    """Checks that `path` is a readable .tflite flatbuffer whose structure holds together (see
    tflite_file.read) and measures it: bytes, gzip bytes (level 9, a proxy for what compression of
    the download buys) and sha256."""
    from edgeprune import tflite_file

    p = Path(path)
    if not p.exists():
        raise InputFileError(f"model {p} does not exist", "give the path of a .tflite file")
    if not p.is_file():
        raise InputFileError(f"model {p} is not a file", "give the path of a .tflite file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputFileError(f"cannot read model {p}: {e.strerror}") from None
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise InputFileError(
            f"{p} is not a TFLite model (no TFL3 identifier at byte 4)",
            "export a .tflite first, e.g. with `edgeprune export`",
        )
    tflite_file.read(data, name=str(p))
    return ModelFile(
        name=p.name,
        path=str(p.resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)),
    )


def check_models_run(paths: list[str | Path], use_xnnpack: bool = True) -> None:
    """Loads and runs every model once in LiteRT on this host, in a child process, before any
    device is touched: a file the interpreter refuses or crashes on is refused by its own path,
    not by the temp path it would have on the device."""
    from edgeprune import tflite_file

    hint = "check it with `edgeprune inspect` and export it again" + (
        "; if XNNPACK cannot run it (sparse int8), bench with --no-xnnpack" if use_xnnpack else ""
    )
    for p in paths:
        with progress.task(f"checking {Path(p).name} in LiteRT", None):
            tflite_file.check_runs(p, use_xnnpack, hint=hint)


def _unavailable(spec: DeviceSpec, error: DeviceError) -> DeviceInfo:
    text = error.one_line()
    low = text.lower()
    unauthorized = "unauthorized" in low or "authentication failed" in low
    # an unauthorized device answered, so it is reachable; otherwise we cannot tell it apart
    return DeviceInfo(
        name=spec.name,
        target=spec.target,
        kind=spec.kind,
        reachable=unauthorized,
        authorized=False,
        error=text,
    )


def probe_devices(
    targets: list[str | DeviceSpec] | None = None,
    inventory: Inventory | None = None,
    extra_binaries: dict[str, str] | None = None,
) -> list[DeviceInfo]:
    """Probes every target in parallel (one worker per device); an unreachable or unauthorized
    device comes back with reachable/authorized False and the reason in `error`."""
    specs = [_with_binaries(s, extra_binaries) for s in resolve_targets(list(targets or []), inventory)]

    def one(spec: DeviceSpec) -> DeviceInfo:
        with progress.task(f"{spec.name}: probing", None) as t:
            with device_lock(spec.make_transport().identity):
                session = DeviceSession(spec)
                try:
                    info = session.probe()
                    t.advance(1, "ok")
                    return info
                except DeviceError as e:
                    t.advance(1, "failed")
                    return _unavailable(spec, e)
                finally:
                    session.close()

    return _in_parallel(one, specs)


def _in_parallel(fn, specs):
    proc.reset_cancel()
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="bench") as ex:
        futures = [ex.submit(fn, s) for s in specs]
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_EXCEPTION)
        except KeyboardInterrupt:
            proc.cancel_all()  # kills running commands; workers then clean up and return
            wait(futures)
            raise
        return [f.result() for f in futures]


def _with_binaries(spec: DeviceSpec, binaries: dict[str, str] | None) -> DeviceSpec:
    if not binaries:
        return spec
    table = dict(spec.benchmark_model)
    table.update({abi: str(Path(p).resolve()) for abi, p in binaries.items()})
    return dataclasses.replace(spec, benchmark_model=tuple(sorted(table.items())))


def _remote_name(name: str) -> str:
    """The model keeps its own name on the device (every use is quoted); only characters that
    sftp's batch syntax cannot carry are replaced."""
    return re.sub(r"[\"\\*?\[\]\n\r\x00/]", "_", name) or "model.tflite"


@dataclasses.dataclass
class _DeviceOutcome:
    info: DeviceInfo
    results: list[BenchResult]
    failures: list[Failure]
    overhead_s: float | None


def _bench_device(
    spec: DeviceSpec, models: list[ModelFile], settings: BenchSettings, run_id: str
) -> _DeviceOutcome:
    threads = settings.threads or list(spec.threads or [1])
    runner_name = settings.runner or spec.runner or "python"
    rounds = settings.rounds_for(runner_name)
    keys = [(i, t) for i in range(len(models)) for t in threads]
    done: dict[tuple[int, int], list[Measurement]] = {k: [] for k in keys}
    started: dict[tuple[int, int], str] = {}
    wall: dict[tuple[int, int], float] = dict.fromkeys(keys, 0.0)
    failed: set[tuple[int, int]] = set()
    cool_notes: dict[tuple[int, int], str] = {}
    failures: list[Failure] = []
    info: DeviceInfo | None = None
    measured_s = 0.0
    cooled_s = 0.0
    affinity, mask, cpus, prefix_notes = "", None, [], []
    start = time.monotonic()
    with progress.task(spec.name, len(keys) * rounds) as task:
        lock = device_lock(spec.make_transport().identity)
        if lock.locked():
            task.advance(0, "waiting: another run holds the device")
        with lock:
            session = DeviceSession(spec, run_id)
            try:
                task.advance(0, "probing")
                info = session.probe()
                session.open_folders(model_dirs=len(models))
                task.advance(0, "taking the device")
                session.acquire_lock(settings.lock_wait_s)
                runner = make_runner(runner_name)
                task.advance(0, f"preparing the {runner.name} runner")
                runner.prepare(session)
                affinity = settings.affinity or spec.affinity or ("big" if spec.kind == "adb" else "all")
                mask, cpus = cpu_mask(session.cores, affinity)
                all_mask, _ = cpu_mask(session.cores, "all")
                prefix, prefix_notes = command_prefix(session, mask, all_mask)
                remote = [f"{session.run_dir}/m{i}/{_remote_name(m.name)}" for i, m in enumerate(models)]
                task.advance(0, f"copying {len(models)} model(s)")
                session.push_many([(Path(m.path), remote[i], m.sha256) for i, m in enumerate(models)])
                first = True
                # whole rounds over the matrix, so that the device warming up is spread over every model
                for r in range(rounds):
                    for key in keys:
                        if key in failed:
                            continue
                        i, t = key
                        label = f"{models[i].name} x{t}" + (f" round {r + 1}/{rounds}" if rounds > 1 else "")
                        if not first and settings.cooldown_s > 0:
                            task.advance(0, f"cooling down {settings.cooldown_s:g} s")
                            proc.sleep(settings.cooldown_s)
                            cooled_s += settings.cooldown_s
                        first = False
                        if settings.cool_to_c is not None:
                            waited, hot = _cool_down(session, settings, task)
                            cooled_s += waited
                            if hot is not None:
                                cool_notes[key] = (
                                    f"still {hot:.1f} C after waiting {settings.cool_wait_max_s:g} s to cool to "
                                    f"{settings.cool_to_c:g} C"
                                )
                        task.advance(0, label)
                        t0 = time.monotonic()
                        started.setdefault(
                            key, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
                        )
                        try:
                            meas = runner.measure(session, remote[i], t, prefix, settings)
                        except MeasurementError as e:
                            failed.add(key)
                            failures.append(Failure(spec.name, spec.target, e.one_line(), models[i].name, t))
                            task.advance(rounds - r, f"{label} failed")
                            continue
                        finally:
                            measured_s += time.monotonic() - t0
                            wall[key] += time.monotonic() - t0
                        done[key].append(meas)
                        task.advance(1, f"{label}: median {meas.median_us / 1000:.3f} ms")
            except DeviceError as e:
                failures.append(Failure(spec.name, spec.target, e.one_line()))
                task.advance(0, "failed")
            finally:
                try:
                    session.close()
                except DeviceError as e:  # the run folder could not be removed: say so, keep the results
                    failures.append(
                        Failure(
                            spec.name, spec.target, "the run folder may remain on the device: " + e.one_line()
                        )
                    )
    results = [
        _result(
            spec,
            models[i],
            t,
            runner_name,
            combine(runner_name, done[(i, t)]),
            rounds,
            settings,
            affinity,
            mask,
            cpus,
            prefix_notes + ([cool_notes[(i, t)]] if (i, t) in cool_notes else []),
            wall[(i, t)],
            started[(i, t)],
        )
        for (i, t) in keys
        if done[(i, t)] and (i, t) not in failed
    ]
    if info is None:
        info = _unavailable(spec, DeviceError(failures[0].reason if failures else "not probed"))
    total = time.monotonic() - start
    overhead = total - measured_s - cooled_s if results else None
    return _DeviceOutcome(info, results, failures, overhead)


def _cool_down(session: DeviceSession, settings: BenchSettings, task) -> tuple[float, float | None]:
    """Waits until the hottest thermal zone is at most settings.cool_to_c, reading it every 2 s,
    for at most cool_wait_max_s. Returns (seconds waited, the temperature if still too hot). A
    device without readable zones does not wait."""
    start = time.monotonic()
    while True:
        hot = session.thermal().max_temp_c
        if hot is None or hot <= settings.cool_to_c:
            return time.monotonic() - start, None
        waited = time.monotonic() - start
        if waited >= settings.cool_wait_max_s:
            return waited, hot
        task.advance(0, f"cooling: {hot:.1f} C > {settings.cool_to_c:g} C")
        proc.sleep(min(2.0, settings.cool_wait_max_s - waited))


def _result(
    spec: DeviceSpec,
    m: ModelFile,
    t: int,
    runner: str,
    c: Combined,
    rounds: int,
    settings: BenchSettings,
    affinity: str,
    mask: str | None,
    cpus: list[int],
    prefix_notes: list[str],
    wall: float,
    started: str,
) -> BenchResult:
    """One BenchResult with its flags: throttled (any snapshot), high_cv, unstable_median (the
    Python runner's round medians disagree), oversubscribed."""
    flags: list[str] = []
    notes = list(prefix_notes) + c.notes
    reasons = [x for th in c.thermal for x in th.throttle_reasons()]
    if reasons:
        flags.append("throttled")
        notes.append("throttling: " + "; ".join(dict.fromkeys(reasons)))
    if c.stats.cv > settings.max_cv:
        flags.append("high_cv")
    if runner == "python" and len(c.repeat_medians_us) >= 2:
        spread = summarize(c.repeat_medians_us)
        if spread.cv > settings.max_cv / 2:
            flags.append("unstable_median")
            notes.append(f"the round medians vary by {spread.cv:.1%} (CV)")
    if len(c.repeat_medians_us) < rounds:
        notes.append(f"only {len(c.repeat_medians_us)} of {rounds} rounds finished before the device failed")
    if t > len(cpus):
        flags.append("oversubscribed")
        notes.append(f"{t} threads on {len(cpus)} CPU(s) of mask {mask}")
    governors = [th.governors for th in c.thermal if th.governors]
    if governors and any(g != governors[0] for g in governors):
        notes.append("the CPU governor changed during the run")
    return BenchResult(
        model=m.name,
        model_sha256=m.sha256,
        model_bytes=m.bytes,
        gzip_bytes=m.gzip_bytes,
        device=spec.name,
        target=spec.target,
        runner=runner,
        runner_detail=c.runner_detail,
        threads=t,
        affinity=affinity,
        cpu_mask=mask,
        xnnpack=settings.use_xnnpack,
        warmup=settings.warmup,
        runs_requested=settings.runs,
        min_secs=settings.min_secs,
        stats=c.stats,
        samples_us=c.samples_us,
        repeat_medians_us=c.repeat_medians_us,
        tool=c.tool,
        init_us=c.init_us,
        first_us=c.first_us,
        memory=c.memory,
        thermal_before=c.thermal[0] if c.thermal else None,
        thermal_after=c.thermal[-1] if c.thermal else None,
        flags=flags,
        notes=notes,
        wall_s=wall,
        started=started,
    )


def bench_models(
    paths: list[str | Path],
    targets: list[str | DeviceSpec] | None = None,
    settings: BenchSettings | None = None,
    inventory: Inventory | str | Path | None = None,
    benchmark_model: dict[str, str] | None = None,
) -> BenchRun:
    """Benchmarks every .tflite in `paths` on every target (`local`, `adb:SERIAL`,
    `ssh:[user@]host[:port]`, an inventory device name, or a DeviceSpec) and returns one BenchRun.
    Devices run in parallel, one worker each; a device that fails is listed in `failures` and the
    others' results are kept. `benchmark_model` maps ABI -> binary path for every device.
    Raises InputFileError for a bad model file (damaged, or one that does not load and run once in
    LiteRT on this host) and DeviceError for an unknown target, before any device is touched."""
    from edgeprune.bench.inventory import load_inventory

    settings = settings or BenchSettings()
    if not paths:
        raise InputFileError("no model to benchmark", "give one or more .tflite files")
    if isinstance(inventory, (str, Path)):
        inventory = load_inventory(inventory)
    models = [inspect_model(p) for p in paths]
    specs = [_with_binaries(s, benchmark_model) for s in resolve_targets(list(targets or []), inventory)]
    check_models_run(paths, settings.use_xnnpack)
    run_id = time.strftime("%Y%m%d-%H%M%S")  # each device session adds its own suffix
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    outcomes = _in_parallel(lambda s: _bench_device(s, models, settings, run_id), specs)
    run = BenchRun(
        created=created, settings=settings, models=models, host=_host(), edgeprune_version=_version()
    )
    for o in outcomes:
        run.devices.append(o.info)
        run.results.extend(o.results)
        run.failures.extend(o.failures)
        if o.overhead_s is not None:
            run.overhead_s[o.info.name] = round(o.overhead_s, 3)
    return run


def _host() -> dict[str, str]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeprune")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"

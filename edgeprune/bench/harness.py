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
from edgeprune.bench.results import (
    BenchResult,
    BenchRun,
    BenchSettings,
    DeviceInfo,
    Failure,
    ModelFile,
    PairedRatio,
    WeightTensor,
)
from edgeprune.bench.runners import (
    Combined,
    Measurement,
    MeasurementError,
    combine,
    command_prefix,
    make_runner,
    measure_group,
    paired_note,
)
from edgeprune.bench.stats import RATIO_DRIFT, paired_ratio, summarize
from edgeprune.errors import DeviceError, EdgepruneError, InputFileError

TFLITE_MAGIC = b"TFL3"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def device_lock(identity: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(identity, threading.Lock())


def inspect_model(path: str | Path) -> ModelFile:
    """Checks that `path` is a readable .tflite flatbuffer whose structure holds together (see
    tflite_file.read) and measures it: bytes, gzip bytes (level 9, a proxy for what compression of
    the download buys), sha256, and the zeros of its weights (the constant-tensor zero fraction
    and every weight tensor's zeros), so that a report never reads the file again."""
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
    info = tflite_file.read(data, name=str(p))
    return ModelFile(
        name=p.name,
        path=str(p.resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)),
        zero_fraction=round(info.constant_zero_fraction(), 6),
        weights=weight_tensors(info),
    )


def weight_tensors(info) -> list[WeightTensor]:
    """The weight tensors of a read .tflite (tflite_file.TFLiteInfo): constant, rank 2 or more,
    at least 64 elements, with a known zero fraction."""
    out = []
    for t in info.tensors:
        size = 1
        for d in t.shape:
            size *= d
        if not t.is_constant or len(t.shape) < 2 or size < 64 or t.zero_fraction is None:
            continue
        out.append(WeightTensor(t.name, t.dtype, list(t.shape), size, round(t.zero_fraction * size), t.sparse))
    return out


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
    ratios: list[PairedRatio] = dataclasses.field(default_factory=list)


def _bench_device(
    spec: DeviceSpec,
    models: list[ModelFile],
    settings: BenchSettings,
    run_id: str,
    groups: list[tuple[int, ...]],
) -> _DeviceOutcome:
    threads = settings.threads or list(spec.threads or [1])
    runner_name = settings.runner or spec.runner or "python"
    rounds = settings.rounds_for(runner_name)
    keys = [(i, t) for i in range(len(models)) for t in threads]
    units = [(g, t) for g in groups for t in threads]  # one model, or a paired group
    group_of = {i: g for g in groups for i in g}
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
    with progress.task(spec.name, len(units) * rounds) as task:
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
                    for group, t in units:
                        live = [i for i in group if (i, t) not in failed]
                        if not live:
                            continue
                        what = models[live[0]].name if len(group) == 1 else f"{len(live)} models paired"
                        label = f"{what} x{t}" + (f" round {r + 1}/{rounds}" if rounds > 1 else "")
                        if not first and settings.cooldown_s > 0:
                            task.advance(0, f"cooling down {settings.cooldown_s:g} s")
                            proc.sleep(settings.cooldown_s)
                            cooled_s += settings.cooldown_s
                        first = False
                        if settings.cool_to_c is not None:
                            waited, hot = _cool_down(session, settings, task)
                            cooled_s += waited
                            if hot is not None:
                                for i in live:
                                    cool_notes[(i, t)] = (
                                        f"still {hot:.1f} C after waiting {settings.cool_wait_max_s:g} s to cool "
                                        f"to {settings.cool_to_c:g} C"
                                    )
                        task.advance(0, label)
                        t0 = time.monotonic()
                        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
                        for i in live:
                            started.setdefault((i, t), now)
                        try:
                            got, bad = measure_group(runner, session, live, t, remote, prefix, settings, r)
                        finally:
                            spent = time.monotonic() - t0
                            measured_s += spent
                            for i in live:
                                wall[(i, t)] += spent / len(live)
                        for i, e in bad.items():
                            failed.add((i, t))
                            failures.append(Failure(spec.name, spec.target, e.one_line(), models[i].name, t))
                        for i, meas in got.items():
                            done[(i, t)].append(meas)
                        if not got:
                            task.advance(rounds - r, f"{label} failed")
                            continue
                        medians = ", ".join(f"{got[i].median_us / 1000:.3f}" for i in live if i in got)
                        task.advance(1, f"{label}: median{'s' if len(got) > 1 else ''} {medians} ms")
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
    results: list[BenchResult] = []
    by_key: dict[tuple[int, int], BenchResult] = {}
    for i, t in keys:
        if not done[(i, t)] or (i, t) in failed:
            continue
        notes = prefix_notes + ([cool_notes[(i, t)]] if (i, t) in cool_notes else [])
        if settings.paired:
            note = paired_note(runner_name, [models[j].name for j in group_of[i] if j != i], settings)
            notes += [note] if note else []
        by_key[(i, t)] = _result(
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
                notes,
                wall[(i, t)],
                started[(i, t)],
        )
        results.append(by_key[(i, t)])
    if info is None:
        info = _unavailable(spec, DeviceError(failures[0].reason if failures else "not probed"))
    total = time.monotonic() - start
    overhead = total - measured_s - cooled_s if results else None
    ratios = _ratios(spec, groups, threads, by_key, runner_name, settings) if settings.paired else []
    return _DeviceOutcome(info, results, failures, overhead, ratios)


def _ratios(spec, groups, threads, by_key, runner: str, settings: BenchSettings) -> list[PairedRatio]:
    """Every model of a paired group against the group's first model, per thread count, where
    both were measured. The Python runner's samples pair by their blocks; benchmark_model's
    round medians by their round."""
    out = []
    for group in groups:
        for t in threads:
            found = [by_key.get((i, t)) for i in group]
            ref = found[0]
            if ref is None:
                continue
            for res in found[1:]:
                if res is None:
                    continue
                if runner == "benchmark_model":
                    xs, xb = res.repeat_medians_us, list(range(len(res.repeat_medians_us)))
                    rs, rb = ref.repeat_medians_us, list(range(len(ref.repeat_medians_us)))
                    method = "alternating rounds"
                    note = (
                        "benchmark_model cannot interleave models in one process: whole invocations alternated, "
                        "and the ratio is of the medians of the per-round medians, resampled by round"
                    )
                else:
                    xs, xb, rs, rb = res.samples_us, res.sample_blocks, ref.samples_us, ref.sample_blocks
                    method = "interleaved"
                    note = "timed interleaved in one process; the ratio is of the medians of every sample"
                ri = paired_ratio(xs, xb, rs, rb, seed=settings.seed)
                flags = ["unstable_ratio"] if ri.drift > RATIO_DRIFT else []
                if flags:
                    note += (
                        f"; the ratio moved from {ri.halves[0]:.3f} in the first half of the blocks to "
                        f"{ri.halves[1]:.3f} in the second: the load changed in a way that did not hit both alike"
                    )
                out.append(
                    PairedRatio(
                        model=res.model,
                        reference=ref.model,
                        device=spec.name,
                        target=spec.target,
                        threads=t,
                        ratio=ri.ratio,
                        low=ri.low,
                        high=ri.high,
                        method=method,
                        blocks=ri.blocks,
                        note=note,
                        halves=list(ri.halves or ()),
                        flags=flags,
                    )
                )
    return out


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
        sample_blocks=c.sample_blocks,
    )


def bench_models(
    paths: list[str | Path],
    targets: list[str | DeviceSpec] | None = None,
    settings: BenchSettings | None = None,
    inventory: Inventory | str | Path | None = None,
    benchmark_model: dict[str, str] | None = None,
    pair_groups: list[list[int]] | None = None,
) -> BenchRun:
    """Benchmarks every .tflite in `paths` on every target (`local`, `adb:SERIAL`,
    `ssh:[user@]host[:port]`, an inventory device name, or a DeviceSpec) and returns one BenchRun.
    Devices run in parallel, one worker each; a device that fails is listed in `failures` and the
    others' results are kept. `benchmark_model` maps ABI -> binary path for every device.

    With settings.paired, the models are measured side by side, on each device and at each thread
    count, and run.ratios holds each model against its group's reference (PairedRatio).
    `pair_groups` are groups of indices into `paths`, each measured on its own with its first
    model as the reference (e.g. variants at one input size with their baseline first, and the
    same variants at another size); by default one group holds every model, `paths[0]` the
    reference. A model in no group is measured alone. Groups need settings.paired.

    Raises InputFileError for a bad model file (damaged, or one that does not load and run once in
    LiteRT on this host), EdgepruneError for bad pair_groups and DeviceError for an unknown target,
    before any device is touched."""
    from edgeprune.bench.inventory import load_inventory

    settings = settings or BenchSettings()
    if not paths:
        raise InputFileError("no model to benchmark", "give one or more .tflite files")
    groups = _pair_groups(len(paths), pair_groups, settings.paired)
    if isinstance(inventory, (str, Path)):
        inventory = load_inventory(inventory)
    models = [inspect_model(p) for p in paths]
    specs = [_with_binaries(s, benchmark_model) for s in resolve_targets(list(targets or []), inventory)]
    check_models_run(paths, settings.use_xnnpack)
    run_id = time.strftime("%Y%m%d-%H%M%S")  # each device session adds its own suffix
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    outcomes = _in_parallel(lambda s: _bench_device(s, models, settings, run_id, groups), specs)
    run = BenchRun(
        created=created, settings=settings, models=models, host=_host(), edgeprune_version=_version()
    )
    for o in outcomes:
        run.devices.append(o.info)
        run.results.extend(o.results)
        run.failures.extend(o.failures)
        run.ratios.extend(o.ratios)
        if o.overhead_s is not None:
            run.overhead_s[o.info.name] = round(o.overhead_s, 3)
    return run


def _pair_groups(n: int, pair_groups: list[list[int]] | None, paired: bool) -> list[tuple[int, ...]]:
    """The measuring units: every model alone, or when paired the groups (default: one of all
    models) followed by every model no group holds, alone."""
    if pair_groups is not None and not paired:
        raise EdgepruneError("pair_groups were given but the settings do not ask for paired measurement",
                             "set BenchSettings(paired=True)")
    if not paired:
        return [(i,) for i in range(n)]
    if pair_groups is None:
        return [tuple(range(n))]
    seen: set[int] = set()
    groups = []
    for g in pair_groups:
        if not isinstance(g, (list, tuple)) or not g:
            raise EdgepruneError(f"pair group {g!r} is not a non-empty list of model indices",
                                 f"give lists of indices 0..{n - 1} into the model paths")
        for i in g:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise EdgepruneError(f"pair group {list(g)} holds {i!r}, which is not an index of the {n} model(s)",
                                     f"use indices 0..{n - 1}")
            if i in seen:
                raise EdgepruneError(f"model index {i} is in more than one pair group",
                                     "put each model in at most one group")
            seen.add(i)
        groups.append(tuple(g))
    return groups + [(i,) for i in range(n) if i not in seen]


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

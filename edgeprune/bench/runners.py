"""The two runners. Both are run through the device's transport with explicit threads and CPU
mask, and return a Measurement.

- PythonRunner: android_bench/litert_runner.py (stdlib + numpy + ai_edge_litert, falling back to
  tflite_runtime, then tensorflow.lite), copied into the device's cache once. It times every
  invoke and prints one JSON object: raw samples.
- BenchmarkModelRunner: the user's TFLite/LiteRT `benchmark_model` binary for the device's ABI,
  copied into the cache once by sha256 and run with explicit flags. It prints summaries only.

A Measurement is one invocation. The harness runs `repeats` rounds over the whole model x threads
matrix and `combine` merges a key's rounds: pooled samples for the Python runner, the statistics
of the per-round medians for benchmark_model (its only source of spread).

Paired (BenchSettings.paired): PythonRunner.measure_paired runs the runner once with several
models, which it times side by side in blocks, and returns one Measurement per model, each sample
with its block. benchmark_model cannot do that: the harness alternates its whole invocations."""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import android_bench
from edgeprune.bench.device import DeviceSession
from edgeprune.bench.parse_benchmark_model import parse
from edgeprune.bench.results import BenchSettings, MemoryUse, ThermalState
from edgeprune.bench.stats import LatencyStats, summarize
from edgeprune.errors import DeviceError

RUNNER_FILE = Path(android_bench.__file__).with_name("litert_runner.py")
BINARIES_HINT = (
    'give the binary for this ABI with --benchmark-model ABI=PATH or benchmark_model = { ABI = "PATH" } in the '
    "inventory; prebuilt nightly binaries (android_aarch64, android_arm, linux_aarch64, linux_x86-64) are linked "
    "from the LiteRT performance-measurement docs, or build //tflite/tools/benchmark:benchmark_model with Bazel"
)


class MeasurementError(DeviceError):
    """One model x thread count could not be measured; the device itself is fine. `model` is the
    remote path of the model at fault when the runner names one (a paired invocation)."""

    def __init__(self, message: str, hint: str | None = None, model: str | None = None):
        super().__init__(message, hint)
        self.model = model


@dataclass
class Measurement:
    """One runner invocation: its median, raw samples where the runner gives them, and the
    conditions around it."""

    median_us: float
    runner_detail: dict[str, str | None]
    samples_us: list[float] = field(default_factory=list)
    tool: dict = field(default_factory=dict)
    init_us: float | None = None
    first_us: float | None = None
    memory: MemoryUse | None = None
    notes: list[str] = field(default_factory=list)
    thermal_before: ThermalState | None = None
    thermal_after: ThermalState | None = None
    sample_blocks: list[int] = field(default_factory=list)  # paired: the block of every sample
    blocks: int = 0  # paired: how many blocks the invocation ran
    wall_s: float | None = None  # paired: the invocation's timing wall time (shared by its models)


@dataclass
class Combined:
    """A key's rounds merged: what goes into one BenchResult."""

    stats: LatencyStats
    samples_us: list[float]
    repeat_medians_us: list[float]
    runner_detail: dict[str, str | None]
    tool: dict
    init_us: float | None
    first_us: float | None
    memory: MemoryUse | None
    notes: list[str]
    thermal: list[ThermalState]
    sample_blocks: list[int] = field(default_factory=list)


def combine(runner: str, rounds: list[Measurement]) -> Combined:
    """Python runner: statistics over every round's samples pooled. benchmark_model: statistics of
    the per-round medians (source "repeats"). Memory is the highest any round measured. Paired
    rounds' block numbers are shifted so that they count on across rounds (round r's blocks
    follow round r - 1's): the models of one paired invocation share its blocks, so their
    numbering stays the same."""
    if not rounds:
        raise ValueError("combine needs at least one measurement")
    medians = [m.median_us for m in rounds]
    samples = [x for m in rounds for x in m.samples_us]
    blocks: list[int] = []
    offset = 0
    for m in rounds:
        blocks += [b + offset for b in m.sample_blocks]
        offset += m.blocks
    notes = list(dict.fromkeys(n for m in rounds for n in m.notes))
    if runner == "benchmark_model":
        stats = summarize(medians, "repeats")
        if len(rounds) < 3:
            notes.append(f"spread from {len(rounds)} invocation(s) only: use --repeats 3 or more")
    else:
        stats = summarize(samples, "samples")
    mems = [m.memory for m in rounds if m.memory is not None and m.memory.mb is not None]
    return Combined(
        stats=stats,
        samples_us=samples,
        repeat_medians_us=medians,
        runner_detail=rounds[-1].runner_detail,
        tool=rounds[-1].tool,
        init_us=rounds[0].init_us,
        first_us=rounds[0].first_us,
        memory=max(mems, key=lambda m: m.mb) if mems else rounds[-1].memory,
        notes=notes,
        thermal=[t for m in rounds for t in (m.thermal_before, m.thermal_after) if t is not None],
        sample_blocks=blocks if len(blocks) == len(samples) else [],
    )


def run_timeout(settings: BenchSettings, models: int = 1) -> float:
    """A bound for one runner invocation: loading, warm-up and at most max_secs of runs per model."""
    return settings.max_secs * models * 1.5 + 60.0 + 60.0 * models


def command_prefix(session: DeviceSession, mask: str | None, all_mask: str) -> tuple[list[str], list[str]]:
    """(argv prefix applying env and CPU affinity, notes)."""
    argv: list[str] = []
    notes: list[str] = []
    if session.spec.env:
        argv += ["env", *[f"{k}={v}" for k, v in session.spec.env]]
    if mask is not None:
        if session.has_taskset:
            argv += ["taskset", mask]
        elif mask == all_mask:
            notes.append(
                "taskset is missing on the device: ran without pinning (the mask covers every CPU anyway)"
            )
        else:
            raise DeviceError(
                f"{session.label}: affinity mask {mask} needs `taskset`, which the device lacks",
                'install util-linux (Linux) or use affinity = "all"',
            )
    return argv, notes


class Runner(ABC):
    name: str = ""

    @abstractmethod
    def prepare(self, session: DeviceSession) -> None:
        """Checks the runner can work on this device and copies what it needs (once, cached)."""

    @abstractmethod
    def measure(
        self,
        session: DeviceSession,
        remote_model: str,
        threads: int,
        prefix: list[str],
        settings: BenchSettings,
    ) -> Measurement:
        """Measures one model at one thread count."""


def _runtime_hint(python: str, abi: str | None, py_version: str | None) -> str:
    """What to install, given what ai-edge-litert has wheels for (64-bit Linux and macOS, CPython
    3.10-3.13; no 32-bit ARM wheel)."""
    install = (
        f"install one on the device: `{python} -m pip install ai-edge-litert` (on Raspberry Pi OS inside a "
        'venv, then set python = "/path/to/venv/bin/python" in the inventory)'
    )
    if abi and (abi.startswith("armv7") or abi.startswith("armv6") or abi == "armeabi-v7a"):
        return (
            f"ai-edge-litert has no wheel for 32-bit ARM ({abi}): install a 64-bit OS, or use the benchmark_model "
            "runner with a binary built for this ABI"
        )
    try:
        minor = tuple(int(x) for x in (py_version or "").split(".")[:2])
    except ValueError:
        minor = ()
    if minor and not (3, 10) <= minor <= (3, 13):
        return f"ai-edge-litert wheels need Python 3.10-3.13 (the device has {py_version}): {install}"
    return install


class PythonRunner(Runner):
    name = "python"

    def __init__(self) -> None:
        self.remote_script: str | None = None
        self.script_sha: str | None = None

    def prepare(self, session: DeviceSession) -> None:
        info = session.info
        if info is None:
            raise RuntimeError("probe the device first")
        if info.python_version is None:
            hint = (
                "phones rarely run Python from adb shell: use --runner benchmark_model with "
                "--benchmark-model arm64-v8a=PATH, or set python to Termux's interpreter in the inventory"
                if session.spec.kind == "adb"
                else 'install Python 3 there, or set python = "/path/to/python3" for this device in the inventory'
            )
            raise DeviceError(
                f"{session.label}: the Python interpreter '{session.python}' does not run on the device", hint
            )
        if not info.runtimes:
            raise DeviceError(
                f"{session.label}: no TFLite runtime for {session.python} (Python {info.python_version}): none of "
                "ai_edge_litert, tflite_runtime or tensorflow imports",
                _runtime_hint(session.python, info.abi, info.python_version),
            )
        self.remote_script, self.script_sha = session.cached(RUNNER_FILE)

    def _argv(self, session, models: list[str], threads: int, prefix: list[str], settings, paired: bool) -> list[str]:
        argv = [
            *prefix,
            session.python,
            self.remote_script,
            *(["--paired"] if paired else []),
            *models,
            "--threads",
            str(threads),
            "--runs",
            str(settings.runs),
            "--warmup",
            str(settings.warmup),
            "--min-secs",
            f"{settings.min_secs:g}",
            "--max-secs",
            f"{settings.max_secs:g}",
            "--seed",
            str(settings.seed),
        ]
        if paired:
            argv += ["--block-runs", str(settings.block_runs), "--block-secs", f"{settings.block_secs:g}"]
        if not settings.use_xnnpack:
            argv.append("--no-xnnpack")
        return argv

    def _run(self, session, models, threads, prefix, settings, paired) -> tuple[dict, ThermalState, ThermalState]:
        r, before, after = session.run_measured(
            self._argv(session, models, threads, prefix, settings, paired), run_timeout(settings, len(models))
        )
        data = _last_json(r.stdout)
        if data is None:
            raise MeasurementError(
                f"{session.label}: the Python runner gave no result (exit code {r.returncode}): "
                f"{r.tail() or 'no output'}"
            )
        if "error" in data:
            raise MeasurementError(f"{session.label}: {data['error']}", model=data.get("model"))
        if r.returncode != 0:
            raise MeasurementError(
                f"{session.label}: the Python runner failed (exit code {r.returncode}): {r.tail()}"
            )
        return data, before, after

    def _detail(self, data: dict) -> dict[str, str | None]:
        return {
            "runner_version": str(data.get("runner_version")),
            "runner_sha256": self.script_sha,
            "runtime": data.get("runtime"),
            "runtime_version": data.get("runtime_version"),
            "python": data.get("python"),
            "machine": data.get("machine"),
        }

    def measure(self, session, remote_model, threads, prefix, settings) -> Measurement:
        data, before, after = self._run(session, [remote_model], threads, prefix, settings, False)
        samples = _samples(session, data)
        mem = data.get("memory") or {}
        return Measurement(
            median_us=summarize(samples).median_us,
            samples_us=samples,
            runner_detail=self._detail(data),
            init_us=data.get("init_us"),
            first_us=data.get("first_us"),
            memory=MemoryUse(
                kind="peak_rss",
                mb=mem.get("peak_rss_mb"),
                label="peak RSS of the Python runner process (interpreter + runtime + model)",
                details={"peak_rss_delta_mb": mem.get("peak_rss_delta_mb")},
            ),
            thermal_before=before,
            thermal_after=after,
        )

    def measure_paired(self, session, remote_models: list[str], threads, prefix, settings) -> list[Measurement]:
        """One runner invocation timing every model side by side in blocks; one Measurement per
        model, in the order given. A model that does not load or run fails the invocation with
        MeasurementError.model naming its remote path."""
        data, before, after = self._run(session, remote_models, threads, prefix, settings, True)
        return self._paired_measurements(session, data, before, after, len(remote_models))

    def _paired_measurements(self, session, data, before, after, n: int) -> list[Measurement]:
        models = data.get("models")
        if data.get("mode") != "paired" or not isinstance(models, list) or len(models) != n:
            raise MeasurementError(f"{session.label}: the Python runner's paired output is not what was asked for")
        mem = data.get("memory") or {}
        memory = MemoryUse(
            kind="peak_rss_all_models",
            mb=mem.get("peak_rss_mb"),
            label=f"peak RSS of the paired Python runner process, which held all {n} model(s) at once",
            details={"peak_rss_delta_mb": mem.get("peak_rss_delta_mb")},
        )
        out = []
        for m in models:
            samples = _samples(session, m)
            blocks = [int(b) for b in m.get("blocks", [])]
            if len(blocks) != len(samples):
                raise MeasurementError(f"{session.label}: the Python runner gave samples without their blocks")
            out.append(
                Measurement(
                    median_us=summarize(samples).median_us,
                    samples_us=samples,
                    runner_detail=self._detail(data),
                    init_us=m.get("init_us"),
                    first_us=m.get("first_us"),
                    memory=memory,
                    thermal_before=before,
                    thermal_after=after,
                    sample_blocks=blocks,
                    blocks=int(data.get("blocks", 0)),
                    wall_s=data.get("wall_s"),
                )
            )
        return out


def _samples(session, data: dict) -> list[float]:
    samples = [round(float(x), 3) for x in data.get("samples_us") or []]  # ns resolution keeps bench.json small
    if not samples:
        raise MeasurementError(f"{session.label}: the Python runner returned no samples")
    return samples


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


class BenchmarkModelRunner(Runner):
    name = "benchmark_model"

    def __init__(self) -> None:
        self.remote_binary: str | None = None
        self.binary_sha: str | None = None
        self.local_binary: str | None = None

    def prepare(self, session: DeviceSession) -> None:
        abi = session.info.abi if session.info else None
        path = session.spec.binary_for(abi)
        if path is None:
            raise DeviceError(
                f"{session.label}: no benchmark_model binary for ABI {abi or 'unknown'}", BINARIES_HINT
            )
        local = Path(path)
        if not local.is_file():
            raise DeviceError(
                f"{session.label}: the benchmark_model binary {local} does not exist", BINARIES_HINT
            )
        self.local_binary = str(local)
        self.remote_binary, self.binary_sha = session.cached(local, executable=True)

    def measure(self, session, remote_model, threads, prefix, settings) -> Measurement:
        argv = [
            *prefix,
            self.remote_binary,
            f"--graph={remote_model}",
            f"--num_threads={threads}",
            f"--warmup_runs={settings.warmup}",
            f"--num_runs={settings.runs}",
            f"--min_secs={settings.min_secs:g}",
            f"--max_secs={settings.max_secs:g}",
            f"--use_xnnpack={'true' if settings.use_xnnpack else 'false'}",
        ]
        if settings.peak_memory:
            argv.append("--report_peak_memory_footprint=true")
        r, before, after = session.run_measured(argv, run_timeout(settings), redirect_stderr=True)
        try:
            out = parse(r.stdout + r.stderr)
        except DeviceError as e:
            raise MeasurementError(f"{session.label}: {e.message} (exit code {r.returncode})") from None
        if r.returncode != 0:
            raise MeasurementError(f"{session.label}: benchmark_model exited with {r.returncode}: {r.tail()}")
        notes = []
        median = out.median_us
        if median is None:
            median = out.inference_avg_us
            notes.append("this build prints no median: the average stands in")
        if settings.peak_memory:
            notes.append("peak memory was sampled by a monitoring thread, which can slow the runs")
        inf = out.inference
        tool = {
            "format": out.format,
            "count": inf.count if inf else None,
            "avg_us": out.inference_avg_us,
            "median_us": out.median_us,
            "min_us": inf.min_us if inf else None,
            "max_us": inf.max_us if inf else None,
            "std_us": inf.std_us if inf else None,
            "p5_us": inf.p5_us if inf else None,
            "p95_us": inf.p95_us if inf else None,
            "warmup_avg_us": out.warmup_avg_us,
            "model_size_mb": out.model_size_mb,
            "delegates": "; ".join(
                f"{d.delegate}: {d.replaced_nodes}/{d.total_nodes} nodes" for d in out.delegates
            )
            or None,
        }
        footprint = {"init_mb": out.footprint_init_mb, "overall_mb": out.footprint_overall_mb}
        if out.peak_memory_mb is not None:
            memory = MemoryUse(
                "peak_footprint",
                out.peak_memory_mb,
                "benchmark_model peak memory footprint (periodic monitoring)",
                footprint,
            )
        else:
            memory = MemoryUse(
                "footprint_delta",
                out.footprint_overall_mb,
                "benchmark_model memory footprint delta since the tool started (ru_maxrss high-water)",
                footprint,
            )
        return Measurement(
            median_us=median,
            runner_detail={
                "binary": self.local_binary,
                "binary_sha256": self.binary_sha,
                "format": out.format,
            },
            tool=tool,
            init_us=out.init_us,
            first_us=out.first_us,
            memory=memory,
            notes=notes,
            thermal_before=before,
            thermal_after=after,
        )


def measure_group(runner, session, live, t, remote, prefix, settings: BenchSettings, r: int):
    """Measures the models `live` (indices) at `t` threads, once: one model alone when not
    paired; else the Python runner times them side by side in one invocation (a model the
    runner names as failing is dropped and the others measured again) and benchmark_model runs
    them one after the other in a shuffled order (seeded by the settings' seed, the round and
    the group). Returns ({index: Measurement}, {index: MeasurementError})."""
    got: dict[int, Measurement] = {}
    bad: dict[int, MeasurementError] = {}
    if not settings.paired or runner.name == "benchmark_model":
        order = list(live)
        if settings.paired:
            random.Random(f"{settings.seed}:{r}:{t}:{order}").shuffle(order)
        for i in order:
            try:
                got[i] = runner.measure(session, remote[i], t, prefix, settings)
            except MeasurementError as e:
                bad[i] = e
        return got, bad
    todo = list(live)
    while todo:
        try:
            got.update(zip(todo, runner.measure_paired(session, [remote[i] for i in todo], t, prefix, settings)))
            break
        except MeasurementError as e:
            at_fault = [i for i in todo if e.model is not None and e.model == remote[i]]
            if not at_fault:
                bad.update(dict.fromkeys(todo, e))
                break
            bad[at_fault[0]] = e
            todo.remove(at_fault[0])
    return got, bad


def paired_note(runner: str, others: list[str], s: BenchSettings) -> str:
    """What a paired BenchResult says about how it was measured with `others` (file names)."""
    if not others:
        return ""
    with_ = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    if runner == "benchmark_model":
        return (
            f"paired with {with_} in alternating rounds: benchmark_model cannot hold several models, so whole "
            "invocations alternated, one per model per round in a shuffled order"
        )
    return (
        f"paired with {with_}: all loaded in one process and timed interleaved, in blocks of at least "
        f"{s.block_runs} invoke(s) and {s.block_secs:g} s per model, in a shuffled order"
    )


def make_runner(name: str) -> Runner:
    if name == "python":
        return PythonRunner()
    if name == "benchmark_model":
        return BenchmarkModelRunner()
    raise DeviceError(f"unknown runner '{name}'", "use python or benchmark_model")

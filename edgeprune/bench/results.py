"""The harness's saved values: typed, immutable where they can be, each with to_dict/from_dict.
A BenchRun (bench.json) carries a schema name and version; an unknown version is refused.

Version 2 adds paired measurement (BenchSettings.paired, BenchResult.sample_blocks,
BenchRun.ratios) and what a report needs about each file (ModelFile.zero_fraction, .weights).
Version 1 files still load: they have no ratios, and their ModelFiles no weight tensors."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.bench.stats import HOT_C, LatencyStats
from edgeprune.errors import InputFileError, SchemaError

SCHEMA = "edgeprune-bench"
SCHEMA_VERSION = 2
#: every version this edgeprune reads
READABLE_VERSIONS = (1, 2)


def _to_plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def _build(tp, value, where: str):
    """Builds a value of type `tp` from plain JSON data, checking the shape as it goes."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where} should be a list, got {type(value).__name__}")
        (inner,) = typing.get_args(tp)
        return [_build(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where} should be an object, got {type(value).__name__}")
        _, inner = typing.get_args(tp)
        return {k: _build(inner, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _from_plain(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise SchemaError(f"{where} should be {tp.__name__}, got {value!r}")
    return value


def _from_plain(cls, d, where: str):
    if not isinstance(d, dict):
        raise SchemaError(f"{where} should be an object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(d) - names
    if unknown:
        raise SchemaError(f"{where} has unknown keys {sorted(unknown)}", f"expected only {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in d:
            kwargs[f.name] = _build(hints[f.name], d[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{where} lacks the key '{f.name}'")
    return cls(**kwargs)


class _Plain:
    def to_dict(self) -> dict:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict):
        return _from_plain(cls, d, cls.__name__)


@dataclass(frozen=True)
class ThermalState(_Plain):
    """The device's thermal state at one moment. Temperatures in C by thermal zone; Android's
    `Thermal Status` (0 none .. 6 shutdown); Raspberry Pi's `vcgencmd get_throttled` bits; the
    scaling governor and current clock per CPU."""

    temps_c: dict[str, float] = field(default_factory=dict)
    thermal_status: int | None = None
    throttled_bits: int | None = None
    governors: dict[str, str] = field(default_factory=dict)
    cur_freq_khz: dict[str, int] = field(default_factory=dict)

    @property
    def max_temp_c(self) -> float | None:
        return max(self.temps_c.values()) if self.temps_c else None

    def throttle_reasons(self) -> list[str]:
        reasons = []
        if self.thermal_status is not None and self.thermal_status >= 1:
            reasons.append(f"Android thermal status {self.thermal_status}")
        if self.throttled_bits is not None:
            names = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}
            now = [n for b, n in names.items() if self.throttled_bits & (1 << b)]
            if now:
                reasons.append("vcgencmd: " + ", ".join(now))
        t = self.max_temp_c
        if t is not None and t >= HOT_C:
            reasons.append(f"{t:.1f} C")
        return reasons


@dataclass(frozen=True)
class CpuCore(_Plain):
    index: int
    max_freq_khz: int | None = None


@dataclass(frozen=True)
class DeviceInfo(_Plain):
    """What `edgeprune devices` reports about one target, and what travels with every result."""

    name: str
    target: str
    kind: str
    reachable: bool
    authorized: bool
    error: str | None = None
    model: str | None = None
    manufacturer: str | None = None
    soc: str | None = None
    abi: str | None = None
    abilist: list[str] = field(default_factory=list)
    os: str | None = None
    android_sdk: int | None = None
    kernel: str | None = None
    cores: list[CpuCore] = field(default_factory=list)
    python: str | None = None
    python_version: str | None = None
    runtimes: list[str] = field(default_factory=list)
    runners: list[str] = field(default_factory=list)
    thermal: ThermalState | None = None


@dataclass(frozen=True)
class MemoryUse(_Plain):
    """Memory as the runner really measured it. `kind`: "peak_rss" (ru_maxrss of the runner
    process: interpreter + runtime + model), "footprint_delta" (benchmark_model's ru_maxrss
    high-water delta since the tool started), "peak_footprint" (benchmark_model's periodic
    monitoring). `label` says it in words for the report."""

    kind: str
    mb: float | None
    label: str
    details: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightTensor(_Plain):
    """One constant weight tensor of a .tflite file (rank 2 or more, at least 64 elements), as
    the file holds it. `name` is the converter's tensor name (often several op names joined by
    ';'); `zeros` counts the elements equal to zero (to the zero point for int8/uint8 with one
    zero point); `sparse` says the file stores it in its sparse encoding."""

    name: str
    dtype: str
    shape: list[int]
    size: int
    zeros: int
    sparse: bool = False

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass(frozen=True)
class ModelFile(_Plain):
    """A benchmarked file. `zero_fraction` is the zero fraction over its constant tensors of at
    least 64 elements (tflite_file.TFLiteInfo.constant_zero_fraction) and `weights` its weight
    tensors, so that reports never need the .tflite again. Files of version 1 runs have neither
    (None and [])."""

    name: str
    path: str
    sha256: str
    bytes: int
    gzip_bytes: int
    zero_fraction: float | None = None
    weights: list[WeightTensor] = field(default_factory=list)


@dataclass(frozen=True)
class BenchSettings(_Plain):
    """How to measure. `repeats` rounds run over the whole model x threads matrix in turn, so
    that drift in the device's temperature spreads over every model (see rounds_for). `threads` None means each device's own list from the inventory, else [1];
    `affinity` None means the device's own (inventory, else `big` on Android and `all`
    elsewhere); `runner` None means the device's runner from the inventory, else the Python
    runner. What was really used is recorded in every BenchResult.

    `paired` measures the models of a device and thread count together (see PairedRatio): the
    Python runner loads them in one process and times them in blocks, each block running every
    model in a shuffled order for at least `block_runs` invokes and `block_secs` seconds;
    benchmark_model alternates whole invocations, one per model per round."""

    threads: list[int] | None = None
    runs: int = 50
    warmup: int = 5
    min_secs: float = 1.0
    max_secs: float = 150.0
    cooldown_s: float = 0.0
    repeats: int | None = None
    use_xnnpack: bool = True
    max_cv: float = 0.10
    seed: int = 0
    runner: str | None = None
    affinity: str | None = None
    lock_wait_s: float = 600.0
    peak_memory: bool = False  # benchmark_model --report_peak_memory_footprint (a sampling thread)
    cool_to_c: float | None = None  # before each run, wait until the hottest zone is at most this
    cool_wait_max_s: float = 300.0
    paired: bool = False
    block_runs: int = 2
    block_secs: float = 0.01

    def rounds_for(self, runner: str) -> int:
        """How many rounds over the model x threads matrix: `repeats`, else 3 for benchmark_model
        (its only source of spread; 5 when paired, since its rounds are the blocks a paired
        ratio is resampled from) and 1 for the Python runner (raw samples carry the spread)."""
        if self.repeats is not None:
            return self.repeats
        if runner == "benchmark_model":
            return 5 if self.paired else 3
        return 1

    def __post_init__(self):
        from edgeprune.errors import EdgepruneError

        if self.threads is not None and (
            not self.threads
            or any((not isinstance(t, int)) or isinstance(t, bool) or t < 1 for t in self.threads)
        ):
            raise EdgepruneError(
                f"threads must be positive integers, got {self.threads}", "e.g. --threads 1,4"
            )
        if self.runs < 1:
            raise EdgepruneError(f"runs must be at least 1, got {self.runs}")
        if self.repeats is not None and self.repeats < 1:
            raise EdgepruneError(f"repeats must be at least 1, got {self.repeats}")
        if self.warmup < 0:
            raise EdgepruneError(f"warmup must be 0 or more, got {self.warmup}")
        if self.min_secs < 0 or self.cooldown_s < 0:
            raise EdgepruneError("min-secs and cooldown must be 0 or more")
        if self.max_secs <= 0 or self.max_secs < self.min_secs:
            raise EdgepruneError(
                f"max-secs ({self.max_secs}) must be positive and at least min-secs ({self.min_secs})"
            )
        if self.cool_to_c is not None and not 0 < self.cool_to_c < 150:
            raise EdgepruneError(
                f"cool-to must be a temperature in C between 0 and 150, got {self.cool_to_c}"
            )
        if isinstance(self.block_runs, bool) or not isinstance(self.block_runs, int) or self.block_runs < 1:
            raise EdgepruneError(
                f"block-runs must be a whole number of at least 1, got {self.block_runs!r}",
                "it is how many invokes of each model a paired block holds, e.g. --block-runs 2",
            )
        if not 0 <= self.block_secs <= 60:
            raise EdgepruneError(
                f"block-secs must be between 0 and 60 seconds, got {self.block_secs!r}",
                "it is how long each model runs at least in a paired block, e.g. 0.01",
            )
        if self.runner not in (None, "python", "benchmark_model"):
            raise EdgepruneError(f"unknown runner '{self.runner}'", "use python or benchmark_model")


@dataclass(frozen=True)
class BenchResult(_Plain):
    """One model x device x thread count."""

    model: str
    model_sha256: str
    model_bytes: int
    gzip_bytes: int
    device: str
    target: str
    runner: str
    runner_detail: dict[str, str | None]
    threads: int
    affinity: str
    cpu_mask: str | None
    xnnpack: bool
    warmup: int
    runs_requested: int
    min_secs: float
    stats: LatencyStats
    samples_us: list[float] = field(default_factory=list)
    repeat_medians_us: list[float] = field(default_factory=list)
    tool: dict[str, float | int | str | None] = field(default_factory=dict)
    init_us: float | None = None
    first_us: float | None = None
    memory: MemoryUse | None = None
    thermal_before: ThermalState | None = None
    thermal_after: ThermalState | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    started: str = ""  # UTC, ISO 8601 with milliseconds: when the runner command was sent
    # paired Python runner: the block of every sample (same order as samples_us), numbered across
    # rounds; empty otherwise
    sample_blocks: list[int] = field(default_factory=list)


PAIRED_METHODS = ("interleaved", "alternating rounds")


@dataclass(frozen=True)
class PairedRatio(_Plain):
    """`model` against `reference` (file names, as BenchResult.model), both measured together on
    one device at one thread count: ratio = median latency of model / median of reference
    (> 1: the model is slower; its speed-up is 1 / ratio), with the percentile-bootstrap interval
    [low, high] (95 %) from resampling `blocks` blocks, the same ones for both models.

    `method` "interleaved": the Python runner held both in one process and timed them in
    randomised blocks of a few invokes; the medians are over every sample. "alternating rounds":
    benchmark_model cannot hold two models, so whole invocations alternate (one per model per
    round, in a shuffled order); each round is a block and the medians are over the rounds'
    medians. `note` says so in words.

    `halves` holds the ratio over the first and over the second half of the blocks; `flags` has
    "unstable_ratio" when they differ by more than stats.RATIO_DRIFT: the load changed during the
    run in a way that did not hit both models alike, so the ratio is not to be trusted either."""

    model: str
    reference: str
    device: str
    target: str
    threads: int
    ratio: float
    low: float
    high: float
    method: str
    blocks: int
    note: str = ""
    halves: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return 1.0 / self.ratio

    @property
    def speedup_interval(self) -> tuple[float, float]:
        return 1.0 / self.high, 1.0 / self.low

    def __post_init__(self):
        if self.method not in PAIRED_METHODS:
            raise SchemaError(f"paired ratio method {self.method!r} is unknown", f"expected one of {PAIRED_METHODS}")


@dataclass(frozen=True)
class Failure(_Plain):
    """A device (model None) or one measurement that failed, with the reason."""

    device: str
    target: str
    reason: str
    model: str | None = None
    threads: int | None = None


@dataclass
class BenchRun(_Plain):
    created: str
    settings: BenchSettings
    models: list[ModelFile]
    devices: list[DeviceInfo] = field(default_factory=list)
    results: list[BenchResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    host: dict[str, str] = field(default_factory=dict)
    edgeprune_version: str = ""
    overhead_s: dict[str, float] = field(default_factory=dict)
    ratios: list[PairedRatio] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **_to_plain(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "BenchRun":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise SchemaError(
                f"not an edgeprune bench result (schema {d.get('schema') if isinstance(d, dict) else None!r})",
                f"expected schema '{SCHEMA}'",
            )
        version = d.get("schema_version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise SchemaError(
                f"bench result schema version {version!r} is not supported",
                f"this edgeprune reads versions {', '.join(map(str, READABLE_VERSIONS))}; use the edgeprune "
                "that wrote it",
            )
        body = {k: v for k, v in d.items() if k not in ("schema", "schema_version")}
        if version == 1 and "ratios" in body:
            raise SchemaError("a version 1 bench result holds 'ratios', which came in version 2")
        return _from_plain(cls, body, "bench")

    @classmethod
    def load(cls, path: str | Path) -> "BenchRun":
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise InputFileError(f"cannot read {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path} is not JSON: {e}") from None
        return cls.from_dict(data)

    def ok(self) -> bool:
        return not self.failures

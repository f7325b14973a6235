"""The one results model: what runs and benches measured, as typed values that every renderer
(HTML, markdown, CSV, JSON, the terminal summaries, `compare`) reads, never the files.

    Source       one results file: a pipeline run (report.json) or a bench run (bench.json)
    Variant      one model file, with its size, accuracy and what was pruned
    DeviceCard   one device's identity; two devices are never merged into one card
    Measurement  the latency of one variant on one device at one thread count, with raw samples
                 and the conditions it was measured under
    Ratio        a paired latency ratio (variant / reference, measured side by side) with its
                 bootstrap 95 % interval
    Report       all of the above, merged from one or more sources (edgeprune.results.readers)

`Report.to_dict()` is the `edgeprune.report` schema (`edgeprune report --format json`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgeprune.bench.results import _from_plain, _to_plain
from edgeprune.errors import SchemaError

MERGED_SCHEMA = "edgeprune.report"
MERGED_VERSION = 2
READS_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Source:
    """One results file: where it is, what wrote it, and how. A pipeline run also records the run's
    own facts (model, data, baseline, machine), which its report prints in the header."""

    label: str
    path: str
    kind: str  # "run" (a pipeline run) | "bench" (a bench run)
    schema: str
    version: int
    created: str
    title: str
    versions: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    recipe_text: str | None = None
    settings: dict[str, Any] | None = None
    host: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    model: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None


@dataclass(frozen=True)
class Variant:
    """One model file: a pipeline variant, or a model a bench run measured. A variant re-exported at
    another input size (`[bench] input_shapes`) is its own Variant, with `of` naming the variant
    and `input_shape` the size."""

    name: str
    source: str
    status: str = "ok"
    file: str | None = None
    bytes: int | None = None
    gzip_bytes: int | None = None
    sha256: str | None = None
    accuracy: float | None = None
    agreement: float | None = None
    keras_accuracy: float | None = None
    params: int | None = None
    prune: str | None = None
    quantize: str | None = None
    zeros: float | None = None  # fraction of zero weights in the file
    sparsity_method: str | None = None
    sparsity_layers: list[dict[str, Any]] = field(default_factory=list)  # {name, kind, weights, sparsity, targeted, reason}
    channel_layers: list[dict[str, Any]] = field(default_factory=list)  # {layer, type, before, after}
    failures: list[str] = field(default_factory=list)
    of: str | None = None
    input_shape: list[int] | None = None
    export: str | None = None  # how an `of` variant was exported, e.g. "int8 (for pqat)"
    details: dict[str, Any] = field(default_factory=dict)  # a pipeline variant's run record (spec, verification...)

    @property
    def pruned_fraction(self) -> float:
        """How much was removed: the larger of the zero-weight fraction and the parameter reduction."""
        zeros = self.zeros or 0.0
        if self.channel_layers:
            before = sum(c["before"] for c in self.channel_layers)
            after = sum(c["after"] for c in self.channel_layers)
            zeros = max(zeros, 1 - after / before if before else 0.0)
        return zeros


@dataclass(frozen=True)
class Measurement:
    """The latency of one variant on one device at one thread count, in milliseconds. `samples_ms`
    are the raw values the statistics came from (every invoke, or one median per benchmark_model
    invocation); a version-1 pipeline run kept none."""

    source: str
    variant: str
    device: str
    target: str
    threads: int
    median_ms: float
    p5_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    cv: float | None
    count: int
    stats_source: str  # "samples" (every invoke) | "repeats" (one median per invocation) | "summary"
    samples_ms: list[float] = field(default_factory=list)
    runner: str = ""
    flags: list[str] = field(default_factory=list)
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    affinity: str | None = None
    cpu_mask: str | None = None
    memory_mb: float | None = None
    memory_label: str | None = None
    paired: bool = False  # measured interleaved with the other models of its group

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.device, self.threads)


@dataclass(frozen=True)
class Ratio:
    """Median latency of `variant` over that of `reference`, both measured side by side on one
    device at one thread count (above 1: slower), with a bootstrap 95 % interval [low, high].
    `method`: "interleaved" (one process alternating the models in short blocks) or "alternating
    rounds" (whole invocations in turn, for benchmark_model)."""

    source: str
    variant: str
    reference: str
    device: str
    threads: int
    ratio: float
    low: float
    high: float
    method: str
    blocks: int = 0
    flags: list[str] = field(default_factory=list)  # e.g. "unstable_ratio": the halves of the blocks disagree

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.device, self.threads)

    @property
    def speedup(self) -> tuple[float, float, float]:
        """(speed-up, low, high) of the variant against the reference: 1 / ratio and its interval."""
        return 1 / self.ratio, 1 / self.high, 1 / self.low

    def excludes_one(self) -> bool:
        return self.low > 1 or self.high < 1


@dataclass(frozen=True)
class DeviceCard:
    name: str
    target: str
    source: str
    kind: str = ""
    model: str | None = None
    manufacturer: str | None = None
    soc: str | None = None
    abi: str | None = None
    cores: int | None = None
    clusters: str | None = None
    os: str | None = None
    runners: list[str] = field(default_factory=list)
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    flags: dict[str, int] = field(default_factory=dict)  # flag -> number of measurements carrying it
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def identity(self) -> str:
        return " ".join(x for x in (self.manufacturer, self.model, self.soc, self.abi) if x)


@dataclass
class Report:
    sources: list[Source]
    variants: list[Variant] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    devices: list[DeviceCard] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    overlaps: dict = field(default_factory=dict, repr=False)  # (source, source, kept) -> count

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def main_variants(self) -> list[Variant]:
        """The variants at the model's own input size (not the re-exports at other sizes)."""
        return [v for v in self.variants if v.of is None]

    def resized(self, variant: str, shape: list[int]) -> Variant | None:
        return next((v for v in self.variants if v.of == variant and v.input_shape == list(shape)), None)

    def input_shapes(self) -> list[list[int]]:
        """The other input sizes variants were re-exported at, in order of appearance."""
        out: list[list[int]] = []
        for v in self.variants:
            if v.input_shape is not None and v.of is not None and v.input_shape not in out:
                out.append(v.input_shape)
        return out

    def baseline(self) -> Variant | None:
        """The variant named `baseline` (None when it failed), else the first variant with a size."""
        named = self.variant("baseline")
        if named is not None:
            return named if named.bytes else None
        return next((v for v in self.main_variants() if v.bytes), None)

    def ratio(self, v: Variant, key: str = "bytes") -> float | None:
        b = self.baseline()
        if v.of is not None:
            b = self.resized(b.name, v.input_shape) if b is not None else None
        if b is None or getattr(v, key) is None or not getattr(b, key):
            return None
        return getattr(v, key) / getattr(b, key)

    def columns(self) -> list[tuple[str, int]]:
        """(device, threads) pairs in the order devices were first met, threads ascending."""
        order = {d.name: i for i, d in enumerate(self.devices)}
        pairs = {(m.device, m.threads) for m in self.measurements}
        return sorted(pairs, key=lambda p: (order.get(p[0], len(order)), p[0], p[1]))

    def measurement(self, variant: str, device: str, threads: int) -> Measurement | None:
        return next((m for m in self.measurements if m.key == (variant, device, threads)), None)

    def paired(self, variant: str, device: str, threads: int) -> Ratio | None:
        return next((r for r in self.ratios if r.key == (variant, device, threads)), None)

    def speedup(self, v: Variant, device: str, threads: int) -> tuple[float, float | None, float | None] | None:
        """The variant's speed-up over its baseline (the baseline at the same input size) on one
        device: the paired ratio and its interval when measured side by side, else the ratio of the
        two medians (no interval)."""
        b = self.baseline()
        if b is not None and v.of is not None:
            b = self.resized(b.name, v.input_shape)
        if b is None or b.name == v.name:
            return None
        r = self.paired(v.name, device, threads)
        if r is not None:
            return r.speedup
        mb = self.measurement(b.name, device, threads)
        mv = self.measurement(v.name, device, threads)
        if mb is None or mv is None or mv.median_ms <= 0:
            return None
        return mb.median_ms / mv.median_ms, None, None

    def device(self, name: str) -> DeviceCard | None:
        return next((d for d in self.devices if d.name == name), None)

    def most_pruned(self) -> Variant | None:
        with_layers = [
            v for v in self.variants if v.status == "ok" and (v.sparsity_layers or v.channel_layers)
        ]
        if not with_layers:
            return None
        return max(with_layers, key=lambda v: v.pruned_fraction)

    def run_sources(self) -> list[Source]:
        return [s for s in self.sources if s.kind == "run"]

    def to_dict(self) -> dict:
        return {
            "schema": MERGED_SCHEMA,
            "version": MERGED_VERSION,
            **{k: _to_plain(getattr(self, k)) for k in _PARTS},
            "failures": list(self.failures),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        """Reads what to_dict wrote (`edgeprune report --format json`), versions 1 and 2."""
        if not isinstance(d, dict) or d.get("schema") != MERGED_SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else None
            raise SchemaError(
                f"not a merged edgeprune report (schema {got!r})", f"expected schema '{MERGED_SCHEMA}'"
            )
        if d.get("version") not in READS_VERSIONS:
            raise SchemaError(
                f"merged report version {d.get('version')!r} is not supported",
                f"this edgeprune reads versions {', '.join(map(str, READS_VERSIONS))}",
            )
        parts = {}
        for key, kind in _PARTS.items():
            rows = d.get(key, [])
            if not isinstance(rows, list):
                raise SchemaError(f"{key} should be a list, got {type(rows).__name__}")
            parts[key] = [_from_plain(kind, row, f"{key}[{i}]") for i, row in enumerate(rows)]
        return cls(**parts, failures=list(d.get("failures", [])), notes=list(d.get("notes", [])))


_PARTS = {"sources": Source, "variants": Variant, "measurements": Measurement, "devices": DeviceCard,
          "ratios": Ratio}


def replace(value, **changes):
    return dataclasses.replace(value, **changes)

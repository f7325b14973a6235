"""One model of what several run folders measured: pipeline runs (report.json) and bench runs
(bench.json), merged into variants, measurements (one per variant x device x thread count),
device cards and the provenance of every source. Every renderer (HTML, markdown, CSV, JSON,
compare) reads this model, never the files.

A bench run's model is joined to a pipeline run's variant when the file is the same (sha256 of
the run folder's .tflite) or, failing that, when the file name is the variant name plus .tflite.
When two sources measured the same variant x device x thread count, the bench run's
measurement is kept (it has raw samples), else the later source's; the other is noted."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from edgeprune.errors import InputFileError, SchemaError

MERGED_SCHEMA = "edgeprune.report"
MERGED_VERSION = 1
RESULT_FILES = ("report.json", "bench.json")


@dataclass(frozen=True)
class Source:
    """One results file: where it is, what wrote it, and how."""

    label: str
    path: str
    kind: str  # "run" (a pipeline run) | "bench" (a bench run)
    schema: str
    version: int
    created: str
    title: str
    versions: dict = field(default_factory=dict)
    recipe: dict | None = None
    recipe_text: str | None = None
    settings: dict | None = None
    host: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """One model file: a pipeline variant, or a model a bench run measured."""

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
    sparsity_layers: list = field(default_factory=list)  # {name, kind, weights, sparsity, targeted, reason}
    channel_layers: list = field(default_factory=list)  # {layer, type, before, after}
    failures: list = field(default_factory=list)

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
    """The latency of one variant on one device at one thread count."""

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
    samples_ms: list = field(default_factory=list)
    runner: str = ""
    flags: list = field(default_factory=list)
    temp_before_c: float | None = None
    temp_after_c: float | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.device, self.threads)


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
    runners: list = field(default_factory=list)
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    flags: dict = field(default_factory=dict)  # flag -> number of measurements carrying it
    notes: list = field(default_factory=list)
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
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    overlaps: dict = field(default_factory=dict, repr=False)  # (source, source, kept) -> count

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def baseline(self) -> Variant | None:
        """The variant named `baseline` (None when it failed), else the first variant with a size."""
        named = self.variant("baseline")
        if named is not None:
            return named if named.bytes else None
        return next((v for v in self.variants if v.bytes), None)

    def ratio(self, v: Variant, key: str = "bytes") -> float | None:
        b = self.baseline()
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

    def device(self, name: str) -> DeviceCard | None:
        return next((d for d in self.devices if d.name == name), None)

    def most_pruned(self) -> Variant | None:
        with_layers = [
            v for v in self.variants if v.status == "ok" and (v.sparsity_layers or v.channel_layers)
        ]
        if not with_layers:
            return None
        return max(with_layers, key=lambda v: v.pruned_fraction)

    def to_dict(self) -> dict:
        return {
            "schema": MERGED_SCHEMA,
            "version": MERGED_VERSION,
            "sources": [asdict(s) for s in self.sources],
            "variants": [asdict(v) for v in self.variants],
            "measurements": [asdict(m) for m in self.measurements],
            "devices": [asdict(d) for d in self.devices],
            "failures": list(self.failures),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        """Reads what to_dict wrote (`edgeprune report --format json`); other versions are refused."""
        if not isinstance(d, dict) or d.get("schema") != MERGED_SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else None
            raise SchemaError(
                f"not a merged edgeprune report (schema {got!r})", f"expected schema '{MERGED_SCHEMA}'"
            )
        if d.get("version") != MERGED_VERSION:
            raise SchemaError(
                f"merged report version {d.get('version')!r} is not supported",
                f"this edgeprune reads version {MERGED_VERSION}",
            )

        def build(kind, rows, where):
            names = {f.name for f in fields(kind)}
            out = []
            for i, row in enumerate(rows):
                unknown = set(row) - names
                if unknown:
                    raise SchemaError(f"{where}[{i}] has unknown keys {sorted(unknown)}")
                try:
                    out.append(kind(**row))
                except TypeError as e:
                    raise SchemaError(f"{where}[{i}]: {e}") from None
            return out

        return cls(
            sources=build(Source, d.get("sources", []), "sources"),
            variants=build(Variant, d.get("variants", []), "variants"),
            measurements=build(Measurement, d.get("measurements", []), "measurements"),
            devices=build(DeviceCard, d.get("devices", []), "devices"),
            failures=list(d.get("failures", [])),
            notes=list(d.get("notes", [])),
        )


# ---------------------------------------------------------------- loading folders


def result_files(folder: Path | str) -> list[Path]:
    """The results files in a run folder (or the file itself). Refuses a missing or empty
    folder and one that holds no edgeprune results."""
    p = Path(folder)
    if p.is_file():
        if p.name not in RESULT_FILES:
            raise InputFileError(f"{p} is not a results file", "give a run folder, report.json or bench.json")
        return [p]
    if not p.exists():
        raise InputFileError(
            f"{p} does not exist", "give the folder of an `edgeprune run` or `edgeprune bench`"
        )
    if not p.is_dir():
        raise InputFileError(
            f"{p} is not a folder", "give the folder of an `edgeprune run` or `edgeprune bench`"
        )
    found = [p / n for n in RESULT_FILES if (p / n).is_file()]
    if not found:
        if not any(p.iterdir()):
            raise InputFileError(
                f"the run folder {p} is empty",
                "give the folder an `edgeprune run` or `edgeprune bench --out` wrote",
            )
        raise InputFileError(
            f"{p} holds no results (neither report.json nor bench.json)",
            "give the folder an `edgeprune run` or `edgeprune bench --out` wrote",
        )
    return found


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputFileError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SchemaError(f"{path} is not UTF-8 text", "the file is corrupt: write it again") from None
    if not text.strip():
        raise SchemaError(f"{path} is empty", "the run did not finish: run it again")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(
            f"{path} is not valid JSON (line {e.lineno}: {e.msg})",
            "the file is truncated or corrupt: run it again",
        ) from None
    if not isinstance(data, dict):
        raise SchemaError(
            f"{path} holds a JSON {type(data).__name__}, not an object",
            "give a report.json or bench.json edgeprune wrote",
        )
    return data


def load_pipeline(path: Path) -> dict:
    """A pipeline run's report.json, version-checked by its own loader."""
    from edgeprune.report.run import load_run_report

    _read_json(path)  # a clear message for an empty or truncated file, naming it
    return load_run_report(path)


def load_bench(path: Path):
    """A bench run's bench.json through the harness's own BenchRun loader, errors naming the file."""
    from edgeprune.bench.results import BenchRun

    data = _read_json(path)
    try:
        return BenchRun.from_dict(data)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e.message}", e.hint) from None


def load(folders: list[Path | str], labels: list[str] | None = None) -> Report:
    """Loads and merges run folders (or their report.json / bench.json files). `labels` name the
    sources (default: the folder names, with more of the path where they repeat)."""
    if not folders:
        raise InputFileError(
            "no run folder given", "give one or more folders `edgeprune run` or `bench` wrote"
        )
    parts = []
    labels = labels or source_labels([Path(f) for f in folders])
    for folder, label in zip(folders, labels):
        for f in result_files(folder):
            if f.name == "report.json":
                parts.append(("run", label, f, load_pipeline(f)))
            else:
                parts.append(("bench", label, f, load_bench(f)))
    multi = {label for _, label, _, _ in parts if sum(1 for p in parts if p[1] == label) > 1}
    report = Report(sources=[])
    for kind, label, path, data in parts:
        name = f"{label}/{path.name}" if label in multi else label
        if kind == "run":
            _add_pipeline(report, data, name, path)
        else:
            _add_bench(report, data, name, path)
    return _finish(report)


def source_labels(paths: list[Path]) -> list[str]:
    """Short names for the sources: the folder name, or more of the path where names repeat."""

    def name(p: Path, depth: int) -> str:
        p = p.parent if p.is_file() else p
        parts = p.resolve().parts[-depth:]
        return "/".join(parts)

    for depth in range(1, 8):
        labels = [name(p, depth) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def from_run_dict(report: dict, label: str | None = None, path: Path | None = None) -> Report:
    """The model of one pipeline run's report dict (what pipeline.run() holds in memory)."""
    r = Report(sources=[])
    _add_pipeline(r, report, label or report.get("recipe", {}).get("name", "run"), path)
    return _finish(r)


def from_bench_run(run, label: str = "bench", path: Path | None = None) -> Report:
    """The model of one BenchRun (or its to_dict())."""
    if isinstance(run, dict):
        from edgeprune.bench.results import BenchRun

        run = BenchRun.from_dict(run)
    r = Report(sources=[])
    _add_bench(r, run, label, path)
    return _finish(r)


# ---------------------------------------------------------------- pipeline runs


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _recipe_text(report: dict, path: Path | None) -> str:
    if path is not None and (path.parent / "recipe.toml").is_file():
        return (path.parent / "recipe.toml").read_text(encoding="utf-8", errors="replace")
    return to_toml(report.get("recipe", {}))


def _add_pipeline(report: Report, data: dict, label: str, path: Path | None) -> None:
    m = data.get("machine", {})
    report.sources.append(
        Source(
            label=label,
            path=str(path) if path else "",
            kind="run",
            schema=data["schema"],
            version=data["version"],
            created=data.get("created", ""),
            title=f"edgeprune run {data.get('recipe', {}).get('name', '')}".strip(),
            versions=dict(data.get("versions", {})),
            recipe=data.get("recipe"),
            recipe_text=_recipe_text(data, path),
            host=dict(m),
        )
    )
    rows = [x for v in data.get("variants", []) for x in v.get("latency", []) if "median_ms" in x]
    device = "local"
    if rows:
        runtimes = sorted({x.get("runtime") or "?" for x in rows})
        device = _claim_device(
            report,
            DeviceCard(
                name="local",
                target="local",
                source=label,
                kind="host",
                model=m.get("machine"),
                soc=m.get("cpu"),
                abi=m.get("machine"),
                cores=m.get("cores"),
                os=" ".join(x for x in (m.get("system"), m.get("release")) if x) or None,
                runners=[f"pipeline host timing ({r})" for r in runtimes],
                notes=[f"host {m.get('hostname')}; pipeline runs record no thermal state"],
            ),
        )
    for v in data.get("variants", []):
        spec = v.get("spec", {})
        sp = v.get("sparsity") or {}
        info = v.get("tflite_info") or {}
        ch = v.get("channels") or {}
        file = v.get("tflite")
        sha = _sha256(path.parent / file) if (path is not None and file) else None
        variant = Variant(
            name=v["name"],
            source=label,
            status=v.get("status", "ok"),
            file=file,
            bytes=v.get("bytes"),
            gzip_bytes=v.get("gzip_bytes"),
            sha256=sha,
            accuracy=v.get("accuracy"),
            agreement=v.get("agreement"),
            keras_accuracy=v.get("keras_accuracy"),
            params=v.get("params"),
            prune=spec.get("prune"),
            quantize=spec.get("quantize"),
            zeros=info.get("weights_zero_fraction"),
            sparsity_method=sp.get("method"),
            sparsity_layers=list(sp.get("layers", [])),
            channel_layers=[
                {
                    "layer": c.get("layer", c.get("name")),
                    "type": c.get("type"),
                    "before": c.get("before"),
                    "after": c.get("after"),
                }
                for c in ch.get("layers", [])
            ],
            failures=list(v.get("failures", [])),
        )
        _put_variant(report, variant)
        for x in v.get("latency", []):
            if "median_ms" not in x:
                report.failures.append(
                    f"{label}: {v['name']} on {x.get('target', 'local')} x{x.get('threads')}: "
                    f"{x.get('error', 'no latency')}"
                )
                continue
            _put_measurement(
                report,
                Measurement(
                    source=label,
                    variant=v["name"],
                    device=device,
                    target=x.get("target", "local"),
                    threads=int(x["threads"]),
                    median_ms=x["median_ms"],
                    p5_ms=x.get("p5_ms"),
                    p90_ms=x.get("p90_ms"),
                    p95_ms=x.get("p95_ms"),
                    mean_ms=x.get("mean_ms"),
                    cv=x.get("cv"),
                    count=int(x.get("runs", 0)),
                    stats_source="summary",
                    runner=f"pipeline host timing ({x.get('runtime', '?')})",
                ),
            )
        for f in v.get("failures", []) if v.get("status") != "ok" else []:
            report.failures.append(f"{label}: variant {v['name']} failed: {f}")


def _claim_device(report: Report, card: DeviceCard) -> str:
    """Adds a source's device card and returns the name its measurements go by: the device's own,
    unless another source holds a different device (model, SoC, ABI) under that name, which is
    then told apart as NAME@SOURCE, never mixed into one population."""
    old = report.device(card.name)
    if old is None:
        report.devices.append(card)
        return card.name
    if old.identity and card.identity and old.identity != card.identity:
        name = f"{card.name}@{card.source}"
        report.notes.append(
            f"{card.name} is '{old.identity}' in {old.source} but '{card.identity}' in {card.source}: "
            f"shown apart as {name}"
        )
        report.devices.append(replace(card, name=name))
        return name
    if old.kind == "host" and card.kind != "host":  # a bench run's card knows more than a pipeline's
        report.devices[report.devices.index(old)] = card
    return card.name


# ---------------------------------------------------------------- bench runs


def _runner_text(r) -> str:
    d = r.runner_detail or {}
    if r.runner == "python":
        return (
            f"python runner v{d.get('runner_version', '?')} ({d.get('runtime') or '?'} "
            f"{d.get('runtime_version') or '?'})"
        )
    sha = (d.get("binary_sha256") or "")[:12]
    return f"{r.runner} ({d.get('format') or '?'} output{', sha256 ' + sha if sha else ''})"


def _clusters(cores) -> str | None:
    freqs = sorted({c.max_freq_khz for c in cores if c.max_freq_khz})
    if not freqs:
        return None
    return "+".join(f"{sum(c.max_freq_khz == f for c in cores)}x{f / 1e6:.2f}" for f in freqs) + " GHz"


_WEIGHT_OP = re.compile(r"/(Conv2D|MatMul|depthwise|conv2d|dense|kernel)\d*$", re.I)


def _tensor_label(name: str) -> str:
    """A readable name for a converter tensor name such as 'm/relu;m/conv/BiasAdd;m/conv/Conv2D1'."""
    parts = name.split(";")
    return next((p for p in parts if _WEIGHT_OP.search(p)), parts[-1])


def _file_layers(path: str) -> dict:
    """Zeros per weight tensor, read from a bench run's .tflite when it is still on this machine
    (bench runs record files, not layers). Empty when the file is gone or unreadable."""
    from edgeprune.errors import EdgepruneError

    if not path or not Path(path).is_file():
        return {}
    from edgeprune import tflite_file

    try:
        info = tflite_file.read(path)
    except EdgepruneError:
        return {}
    layers = []
    for t in info.tensors:
        size = 1
        for d in t.shape:
            size *= d
        if not t.is_constant or len(t.shape) < 2 or size < 64 or t.zero_fraction is None:
            continue
        layers.append(
            {
                "name": _tensor_label(t.name),
                "kind": f"{t.dtype} {'x'.join(map(str, t.shape))}",
                "weights": size,
                "zeros": round(t.zero_fraction * size),
                "sparsity": round(t.zero_fraction, 6),
                "targeted": t.zero_fraction >= 0.05,
                "reason": "sparse-encoded in the file" if t.sparse else "",
            }
        )
    return {
        "zeros": round(info.constant_zero_fraction(), 6),
        "sparsity_method": "file",
        "sparsity_layers": layers,
    }


def _add_bench(report: Report, run, label: str, path: Path | None) -> None:
    report.sources.append(
        Source(
            label=label,
            path=str(path) if path else "",
            kind="bench",
            schema="edgeprune-bench",
            version=1,
            created=run.created,
            title="edgeprune bench",
            versions={"edgeprune": run.edgeprune_version},
            settings=run.settings.to_dict(),
            host=dict(run.host),
        )
    )
    by_sha = {v.sha256: v.name for v in report.variants if v.sha256}
    names: dict[str, str] = {}
    for mf in run.models:
        stem = mf.name[: -len(".tflite")] if mf.name.endswith(".tflite") else mf.name
        name = by_sha.get(mf.sha256) or stem
        names[mf.name] = name
        existing = report.variant(name)
        if existing is not None:
            if existing.sha256 and existing.sha256 != mf.sha256:
                report.notes.append(
                    f"{label}: {mf.name} is not the file {existing.source} calls {name} "
                    f"(sha256 differs): measured as {name}@{label}"
                )
                names[mf.name] = f"{name}@{label}"
                report.variants.append(
                    Variant(
                        name=f"{name}@{label}",
                        source=label,
                        **_file_layers(mf.path),
                        file=mf.path,
                        bytes=mf.bytes,
                        gzip_bytes=mf.gzip_bytes,
                        sha256=mf.sha256,
                    )
                )
            elif not existing.sha256:
                report.variants[report.variants.index(existing)] = replace(existing, sha256=mf.sha256)
            continue
        report.variants.append(
            Variant(
                name=name,
                source=label,
                **_file_layers(mf.path),
                file=mf.path,
                bytes=mf.bytes,
                gzip_bytes=mf.gzip_bytes,
                sha256=mf.sha256,
            )
        )
    devices: dict[str, str] = {}
    for d in run.devices:
        rows = [r for r in run.results if r.device == d.name]
        flags: dict[str, int] = {}
        for r in rows:
            for f in r.flags:
                flags[f] = flags.get(f, 0) + 1
        before = next(
            (
                r.thermal_before.max_temp_c
                for r in rows
                if r.thermal_before and r.thermal_before.max_temp_c is not None
            ),
            None,
        )
        after = next(
            (
                r.thermal_after.max_temp_c
                for r in reversed(rows)
                if r.thermal_after and r.thermal_after.max_temp_c is not None
            ),
            None,
        )
        if before is None and d.thermal is not None:
            before = d.thermal.max_temp_c
        card = DeviceCard(
            name=d.name,
            target=d.target,
            source=label,
            kind=d.kind,
            model=d.model,
            manufacturer=d.manufacturer,
            soc=d.soc,
            abi=d.abi,
            cores=len(d.cores) or None,
            clusters=_clusters(d.cores),
            os=d.os,
            runners=sorted({_runner_text(r) for r in rows}),
            temp_before_c=before,
            temp_after_c=after,
            flags=flags,
            notes=sorted({n for r in rows for n in r.notes}),
            error=None if (d.reachable and d.authorized) else (d.error or "unavailable"),
        )
        devices[d.name] = _claim_device(report, card)
    for r in run.results:
        s = r.stats
        raw = r.samples_us if r.samples_us else r.repeat_medians_us
        _put_measurement(
            report,
            Measurement(
                source=label,
                variant=names.get(r.model, r.model),
                device=devices.get(r.device, r.device),
                target=r.target,
                threads=r.threads,
                median_ms=s.median_us / 1e3,
                p5_ms=s.p5_us / 1e3,
                p90_ms=s.p90_us / 1e3,
                p95_ms=s.p95_us / 1e3,
                mean_ms=s.mean_us / 1e3,
                cv=s.cv,
                count=s.count,
                stats_source=s.source,
                samples_ms=[x / 1e3 for x in raw],
                runner=_runner_text(r),
                flags=list(r.flags),
                temp_before_c=r.thermal_before.max_temp_c if r.thermal_before else None,
                temp_after_c=r.thermal_after.max_temp_c if r.thermal_after else None,
            ),
        )
    for f in run.failures:
        what = f" {f.model} x{f.threads}" if f.model else ""
        report.failures.append(f"{label}: {f.device}{what}: {f.reason}")


# ---------------------------------------------------------------- merging


def _put_variant(report: Report, v: Variant) -> None:
    old = report.variant(v.name)
    if old is None:
        report.variants.append(v)
        return
    report.notes.append(f"variant {v.name} is in {old.source} and {v.source}: showing {v.source}")
    report.variants[report.variants.index(old)] = v


_KIND_RANK = {"run": 0, "bench": 1}


def _put_measurement(report: Report, m: Measurement) -> None:
    """Adds a measurement; of two for the same variant x device x threads, the bench run's (raw
    samples) is kept, else the later source's."""
    old = report.measurement(*m.key)
    if old is None:
        report.measurements.append(m)
        return
    kind = {s.label: s.kind for s in report.sources}
    keep_new = _KIND_RANK[kind[m.source]] >= _KIND_RANK[kind[old.source]]
    kept = m if keep_new else old
    pair = (old.source, m.source, kept.source)
    report.overlaps[pair] = report.overlaps.get(pair, 0) + 1
    if keep_new:
        report.measurements[report.measurements.index(old)] = m


def _finish(report: Report) -> Report:
    for (a, b, kept), n in report.overlaps.items():
        report.notes.append(f"{a} and {b} both measured {n} variant x device x threads: showing {kept}'s")
    if not report.variants and not report.measurements:
        where = ", ".join(s.path or s.label for s in report.sources)
        raise InputFileError(
            f"{where} holds no results: no variant and no measurement",
            "every variant or device failed; see the run's own report for why",
        )
    return report


# ---------------------------------------------------------------- the recipe as TOML


def _toml_value(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return repr(x)
    if isinstance(x, str):
        return json.dumps(x)
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_toml_value(i) for i in x) + "]"
    if isinstance(x, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in x.items() if v is not None) + " }"
    return json.dumps(str(x))


def to_toml(recipe: dict) -> str:
    """The resolved recipe (every default filled in) as TOML. Unset keys (None) are comments."""
    lines = []

    def table(d: dict) -> None:
        for k, v in d.items():
            lines.append(f"# {k} (unset)" if v is None else f"{k} = {_toml_value(v)}")

    top = {k: v for k, v in recipe.items() if not isinstance(v, dict) and k != "variants"}
    top.pop("source", None)
    table(top)
    for k, v in recipe.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"]
            table(v)
    for v in recipe.get("variants", []):
        lines += ["", "[[variant]]"]
        table(v)
    return "\n".join(lines).lstrip("\n") + "\n"

"""Reading results files into the one results model (edgeprune.results.model): pipeline runs
(report.json, versions 1 and 2) and bench runs (bench.json, versions 1 and 2), merged into one
Report. Nothing here reads a model file: what a report shows about a .tflite was recorded when it
was exported or measured.

A bench run's model is joined to a pipeline run's variant when the file is the same (sha256) or,
failing that, when the file name is the variant name plus .tflite. When two sources measured the
same variant x device x thread count, the bench run's measurement is kept, else the later
source's; the other is noted. A version-2 pipeline run holds its own bench run (every measurement,
the host's and the devices', with raw samples and paired ratios)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgeprune.errors import InputFileError, SchemaError
from edgeprune.results.model import DeviceCard, Measurement, Ratio, Report, Source, Variant, replace

RUN_SCHEMA = "edgeprune.run"
RUN_VERSIONS = (1, 2)
RESULT_FILES = ("report.json", "bench.json")


# ---------------------------------------------------------------- files and folders


def result_files(folder: Path | str) -> list[Path]:
    """The results files in a run folder (or the file itself). Refuses a missing or empty
    folder and one that holds no edgeprune results."""
    p = Path(folder)
    hint = "give the folder an `edgeprune run` or `edgeprune bench --out` wrote"
    if p.is_file():
        if p.name not in RESULT_FILES:
            raise InputFileError(f"{p} is not a results file", "give a run folder, report.json or bench.json")
        return [p]
    if not p.exists():
        raise InputFileError(f"{p} does not exist", "give the folder of an `edgeprune run` or `edgeprune bench`")
    if not p.is_dir():
        raise InputFileError(f"{p} is not a folder", "give the folder of an `edgeprune run` or `edgeprune bench`")
    found = [p / n for n in RESULT_FILES if (p / n).is_file()]
    if not found:
        if not any(p.iterdir()):
            raise InputFileError(f"the run folder {p} is empty", hint)
        raise InputFileError(f"{p} holds no results (neither report.json nor bench.json)", hint)
    return found


def read_json(path: Path) -> dict:
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
            f"{path} is not valid JSON (line {e.lineno}: {e.msg})", "the file is truncated or corrupt: run it again"
        ) from None
    if not isinstance(data, dict):
        raise SchemaError(
            f"{path} holds a JSON {type(data).__name__}, not an object", "give a report.json or bench.json edgeprune wrote"
        )
    return data


def load_run_report(path: Path | str) -> dict:
    """A pipeline run's report.json (a folder or the file), schema- and version-checked."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputFileError(f"no report.json in {p.parent}", "give the folder of an `edgeprune run`")
    data = read_json(p)
    if data.get("schema") != RUN_SCHEMA:
        raise SchemaError(
            f"{p} is not an edgeprune run report (schema {data.get('schema')!r})",
            "give a report.json written by `edgeprune run`",
        )
    version = data.get("version")
    if version not in RUN_VERSIONS:
        older = isinstance(version, int) and version < min(RUN_VERSIONS)
        raise SchemaError(
            f"{p} has report schema version {version!r}{', written by an older edgeprune' if older else ''}; "
            f"this edgeprune reads versions {', '.join(map(str, RUN_VERSIONS))}",
            "rerun the recipe to write it again" if older else "upgrade edgeprune to read it",
        )
    return data


def load_bench(path: Path):
    """A bench run's bench.json through the harness's own BenchRun loader, errors naming the file.
    Returns (BenchRun, the file's schema version)."""
    from edgeprune.bench.results import BenchRun

    data = read_json(path)
    try:
        return BenchRun.from_dict(data), data.get("schema_version")
    except SchemaError as e:
        raise SchemaError(f"{path}: {e.message}", e.hint) from None


def load(folders: list[Path | str], labels: list[str] | None = None) -> Report:
    """Loads and merges run folders (or their report.json / bench.json files). `labels` name the
    sources (default: the folder names, with more of the path where they repeat). Every file is
    loaded before any is merged, so one unreadable file fails the whole, naming it."""
    if not folders:
        raise InputFileError("no run folder given", "give one or more folders `edgeprune run` or `bench` wrote")
    parts = []
    labels = labels or source_labels([Path(f) for f in folders])
    for folder, label in zip(folders, labels):
        for f in result_files(folder):
            if f.name == "report.json":
                parts.append(("run", label, f, load_run_report(f)))
            else:
                parts.append(("bench", label, f, load_bench(f)))
    multi = {label for _, label, _, _ in parts if sum(1 for p in parts if p[1] == label) > 1}
    report = Report(sources=[])
    for kind, label, path, data in parts:
        name = f"{label}/{path.name}" if label in multi else label
        if kind == "run":
            add_run(report, data, name, path)
        else:
            add_bench(report, data[0], name, path, version=data[1])
    return finish(report)


def source_labels(paths: list[Path]) -> list[str]:
    """Short names for the sources: the folder name, or more of the path where names repeat."""

    def name(p: Path, depth: int) -> str:
        p = p.parent if p.is_file() else p
        return "/".join(p.resolve().parts[-depth:])

    for depth in range(1, 8):
        labels = [name(p, depth) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def from_run_dict(report: dict, label: str | None = None, path: Path | None = None) -> Report:
    """The model of one pipeline run's report dict (what pipeline.run() holds in memory)."""
    r = Report(sources=[])
    add_run(r, report, label or report.get("recipe", {}).get("name", "run"), path)
    return finish(r)


def from_bench_run(run, label: str = "bench", path: Path | None = None) -> Report:
    """The model of one BenchRun (or its to_dict())."""
    if isinstance(run, dict):
        from edgeprune.bench.results import BenchRun

        run = BenchRun.from_dict(run)
    r = Report(sources=[])
    add_bench(r, run, label, path)
    return finish(r)


# ---------------------------------------------------------------- pipeline runs


def _recipe_text(data: dict, path: Path | None) -> str:
    if path is not None and (path.parent / "recipe.toml").is_file():
        return (path.parent / "recipe.toml").read_text(encoding="utf-8", errors="replace")
    return to_toml(data.get("recipe", {}))


_DETAIL_KEYS = ("spec", "verification", "sparse_encoding", "blocks", "channels", "tflite_info", "seconds",
                "traceback")


def _variant(row: dict, label: str) -> Variant:
    spec = row.get("spec", {})
    sp = row.get("sparsity") or {}
    info = row.get("tflite_info") or {}
    ch = row.get("channels") or {}
    return Variant(
        name=row["name"], source=label, status=row.get("status", "ok"), file=row.get("tflite"),
        bytes=row.get("bytes"), gzip_bytes=row.get("gzip_bytes"), sha256=row.get("sha256"),
        accuracy=row.get("accuracy"), agreement=row.get("agreement"), keras_accuracy=row.get("keras_accuracy"),
        params=row.get("params"), prune=spec.get("prune"), quantize=spec.get("quantize"),
        zeros=info.get("weights_zero_fraction"), sparsity_method=sp.get("method"),
        sparsity_layers=list(sp.get("layers", [])),
        channel_layers=[{"layer": c.get("layer", c.get("name")), "type": c.get("type"), "before": c.get("before"),
                         "after": c.get("after")} for c in ch.get("layers", [])],
        failures=list(row.get("failures", [])),
        details={k: row[k] for k in _DETAIL_KEYS if row.get(k) is not None}
        | ({"sparsity": {k: v for k, v in sp.items() if k != "layers"}} if sp else {}),
    )


def _run_source(data: dict, label: str, path: Path | None) -> Source:
    return Source(
        label=label, path=str(path) if path else "", kind="run", schema=data["schema"], version=data["version"],
        created=data.get("created", ""), title=f"edgeprune run {data.get('recipe', {}).get('name', '')}".strip(),
        versions=dict(data.get("versions", {})), recipe=data.get("recipe"), recipe_text=_recipe_text(data, path),
        host=dict(data.get("machine", {})), seconds=data.get("seconds"), model=data.get("model"),
        data=data.get("data"), baseline=data.get("baseline"),
    )


def add_run(report: Report, data: dict, label: str, path: Path | None) -> None:
    report.sources.append(_run_source(data, label, path))
    rows = data.get("variants", [])
    for row in rows:
        put_variant(report, _variant(row, label))
        for f in row.get("failures", []) if row.get("status") != "ok" else []:
            report.failures.append(f"{label}: variant {row['name']} failed: {f}")
    if data["version"] == 1:
        _add_run_v1_latency(report, data, label)
        return
    for row in rows:
        for e in row.get("exports", []):
            name = f"{row['name']}@{'x'.join(map(str, e['input_shape'][:2]))}"
            if e.get("error"):
                report.failures.append(f"{label}: {name} not measured: {e['error']}")
                continue
            put_variant(report, Variant(
                name=name, source=label, file=e.get("tflite"), bytes=e.get("bytes"), gzip_bytes=e.get("gzip_bytes"),
                sha256=e.get("sha256"), prune=row.get("spec", {}).get("prune"), quantize=e.get("export"),
                of=row["name"], input_shape=list(e["input_shape"]), export=e.get("export")))
    if data.get("bench"):
        from edgeprune.bench.results import BenchRun

        try:
            bench = BenchRun.from_dict(data["bench"])
        except SchemaError as e:
            raise SchemaError(f"{path or label}: its measurements: {e.message}", e.hint) from None
        add_bench(report, bench, label, path, embedded=True)


def _host_card(m: dict, label: str, runtimes: list[str]) -> DeviceCard:
    return DeviceCard(
        name="local", target="local", source=label, kind="host", model=m.get("machine"), soc=m.get("cpu"),
        abi=m.get("machine"), cores=m.get("cores"),
        os=" ".join(x for x in (m.get("system"), m.get("release")) if x) or None,
        runners=[f"pipeline host timing ({r})" for r in runtimes],
        notes=[f"host {m.get('hostname')}; pipeline runs record no thermal state"],
    )


def _add_run_v1_latency(report: Report, data: dict, label: str) -> None:
    """A version-1 run kept summary statistics per variant, target and thread count: the host's
    rows under `local`, each device's under the device's own name and card."""
    from edgeprune.bench.results import DeviceInfo

    rows = [x for v in data.get("variants", []) for x in v.get("latency", []) if "median_ms" in x]
    names: dict[str, str] = {}
    local = [x for x in rows if x.get("target", "local") == "local"]
    if local:
        runtimes = sorted({x.get("runtime") or "?" for x in local})
        names["local"] = claim_device(report, _host_card(data.get("machine", {}), label, runtimes))
    for d in data.get("devices", []):
        info = DeviceInfo.from_dict(d)
        runners = sorted({f"{x.get('runtime', '?')} runner" for x in rows if x.get("target") == info.name})
        names[info.name] = claim_device(report, replace(_card(info, label, []), runners=runners))
    for v in data.get("variants", []):
        for x in v.get("latency", []):
            target = x.get("target", "local")
            if "median_ms" not in x:
                report.failures.append(
                    f"{label}: {v['name']} on {target} x{x.get('threads')}: {x.get('error', 'no latency')}")
                continue
            runner = (f"pipeline host timing ({x.get('runtime', '?')})" if target == "local"
                      else f"{x.get('runtime', '?')} runner")
            put_measurement(report, Measurement(
                source=label, variant=v["name"], device=names.get(target, target), target=target,
                threads=int(x["threads"]), median_ms=x["median_ms"], p5_ms=x.get("p5_ms"), p90_ms=x.get("p90_ms"),
                p95_ms=x.get("p95_ms"), mean_ms=x.get("mean_ms"), cv=x.get("cv"), count=int(x.get("runs", 0)),
                stats_source=x.get("stats_source", "summary"), runner=runner, flags=list(x.get("flags", []))))
    for f in data.get("device_failures", []):
        what = f" {f['model']} x{f.get('threads')}" if f.get("model") else ""
        report.failures.append(f"{label}: {f['device']}{what}: {f['reason']}")


def claim_device(report: Report, card: DeviceCard) -> str:
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
    if old.kind == "host" and card.kind != "host":  # a bench run's card knows more than a v1 pipeline's
        report.devices[report.devices.index(old)] = card
    return card.name


# ---------------------------------------------------------------- bench runs


def runner_text(r) -> str:
    d = r.runner_detail or {}
    if r.runner == "python":
        return (f"python runner v{d.get('runner_version', '?')} ({d.get('runtime') or '?'} "
                f"{d.get('runtime_version') or '?'})")
    sha = (d.get("binary_sha256") or "")[:12]
    return f"{r.runner} ({d.get('format') or '?'} output{', sha256 ' + sha if sha else ''})"


def _clusters(cores) -> str | None:
    freqs = sorted({c.max_freq_khz for c in cores if c.max_freq_khz})
    if not freqs:
        return None
    return "+".join(f"{sum(c.max_freq_khz == f for c in cores)}x{f / 1e6:.2f}" for f in freqs) + " GHz"


def _card(d, label: str, rows) -> DeviceCard:
    flags: dict[str, int] = {}
    for r in rows:
        for f in r.flags:
            flags[f] = flags.get(f, 0) + 1
    before = next((r.thermal_before.max_temp_c for r in rows
                   if r.thermal_before and r.thermal_before.max_temp_c is not None), None)
    after = next((r.thermal_after.max_temp_c for r in reversed(rows)
                  if r.thermal_after and r.thermal_after.max_temp_c is not None), None)
    if before is None and d.thermal is not None:
        before = d.thermal.max_temp_c
    return DeviceCard(
        name=d.name, target=d.target, source=label, kind=d.kind, model=d.model, manufacturer=d.manufacturer,
        soc=d.soc, abi=d.abi, cores=len(d.cores) or None, clusters=_clusters(d.cores), os=d.os,
        runners=sorted({runner_text(r) for r in rows}), temp_before_c=before, temp_after_c=after, flags=flags,
        notes=sorted({n for r in rows for n in r.notes}),
        error=None if (d.reachable and d.authorized) else (d.error or "unavailable"),
    )


_WEIGHT_OP = re.compile(r"/(Conv2D|MatMul|depthwise|conv2d|dense|kernel)\d*$", re.I)


def _tensor_label(name: str) -> str:
    """A readable name for a converter tensor name such as 'm/relu;m/conv/BiasAdd;m/conv/Conv2D1'."""
    parts = name.split(";")
    return next((p for p in parts if _WEIGHT_OP.search(p)), parts[-1])


def _file_variant(mf, name: str, label: str) -> Variant:
    """A file a bench run measured, with the zeros the harness recorded for it when it measured it
    (a version-1 bench run recorded none)."""
    layers = [{"name": _tensor_label(t.name), "kind": f"{t.dtype} {'x'.join(map(str, t.shape))}", "weights": t.size,
               "zeros": t.zeros, "sparsity": round(t.zero_fraction, 6), "targeted": t.zero_fraction >= 0.05,
               "reason": "sparse-encoded in the file" if t.sparse else ""} for t in mf.weights]
    return Variant(name=name, source=label, file=mf.path, bytes=mf.bytes, gzip_bytes=mf.gzip_bytes, sha256=mf.sha256,
                   zeros=None if mf.zero_fraction is None else round(mf.zero_fraction, 6),
                   sparsity_method="file" if layers else None, sparsity_layers=layers)


def add_bench(report: Report, run, label: str, path: Path | None, embedded: bool = False,
              version: int | None = None) -> None:
    """A bench run's models, devices, measurements and paired ratios. `embedded`: the bench run of a
    pipeline run, whose models are the run's own variants (joined by sha256) and whose source is the
    run's."""
    if not embedded:
        report.sources.append(Source(
            label=label, path=str(path) if path else "", kind="bench", schema="edgeprune-bench",
            version=version if version is not None else _bench_version(), created=run.created,
            title="edgeprune bench", versions={"edgeprune": run.edgeprune_version}, settings=run.settings.to_dict(),
            host=dict(run.host)))
    by_sha = {v.sha256: v.name for v in report.variants if v.sha256}
    names: dict[str, str] = {}
    for mf in run.models:
        stem = mf.name[: -len(".tflite")] if mf.name.endswith(".tflite") else mf.name
        name = by_sha.get(mf.sha256) or stem
        names[mf.name] = name
        existing = report.variant(name)
        if existing is None:
            report.variants.append(_file_variant(mf, name, label))
        elif existing.sha256 and existing.sha256 != mf.sha256:
            report.notes.append(f"{label}: {mf.name} is not the file {existing.source} calls {name} "
                                f"(sha256 differs): measured as {name}@{label}")
            names[mf.name] = f"{name}@{label}"
            report.variants.append(_file_variant(mf, f"{name}@{label}", label))
        elif not existing.sha256:
            report.variants[report.variants.index(existing)] = replace(existing, sha256=mf.sha256)
    devices = {d.name: claim_device(report, _card(d, label, [r for r in run.results if r.device == d.name]))
               for d in run.devices}
    paired = bool(getattr(run.settings, "paired", False))
    for r in run.results:
        s = r.stats
        raw = r.samples_us if r.samples_us else r.repeat_medians_us
        put_measurement(report, Measurement(
            source=label, variant=names.get(r.model, r.model), device=devices.get(r.device, r.device),
            target=r.target, threads=r.threads, median_ms=s.median_us / 1e3, p5_ms=s.p5_us / 1e3,
            p90_ms=s.p90_us / 1e3, p95_ms=s.p95_us / 1e3, mean_ms=s.mean_us / 1e3, cv=s.cv, count=s.count,
            stats_source=s.source, samples_ms=[x / 1e3 for x in raw], runner=runner_text(r), flags=list(r.flags),
            temp_before_c=r.thermal_before.max_temp_c if r.thermal_before else None,
            temp_after_c=r.thermal_after.max_temp_c if r.thermal_after else None, affinity=r.affinity,
            cpu_mask=r.cpu_mask, memory_mb=r.memory.mb if r.memory else None,
            memory_label=r.memory.label if r.memory else None, paired=paired))
    for p in getattr(run, "ratios", []):
        report.ratios.append(Ratio(
            source=label, variant=names.get(p.model, p.model), reference=names.get(p.reference, p.reference),
            device=devices.get(p.device, p.device), threads=p.threads, ratio=p.ratio, low=p.low, high=p.high,
            method=p.method, blocks=p.blocks, flags=list(p.flags)))
    for f in run.failures:
        what = f" {f.model} x{f.threads}" if f.model else ""
        report.failures.append(f"{label}: {f.device}{what}: {f.reason}")


def _bench_version() -> int:
    from edgeprune.bench.results import SCHEMA_VERSION

    return SCHEMA_VERSION


# ---------------------------------------------------------------- merging


def put_variant(report: Report, v: Variant) -> None:
    old = report.variant(v.name)
    if old is None:
        report.variants.append(v)
        return
    report.notes.append(f"variant {v.name} is in {old.source} and {v.source}: showing {v.source}")
    report.variants[report.variants.index(old)] = v


_KIND_RANK = {"run": 0, "bench": 1}


def put_measurement(report: Report, m: Measurement) -> None:
    """Adds a measurement; of two for the same variant x device x threads, the bench run's is kept,
    else the later source's."""
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
        report.ratios = [r for r in report.ratios if not (r.key == m.key and r.source == old.source)]


def finish(report: Report) -> Report:
    for (a, b, kept), n in report.overlaps.items():
        report.notes.append(f"{a} and {b} both measured {n} variant x device x threads: showing {kept}'s")
    if not report.variants and not report.measurements:
        where = ", ".join(s.path or s.label for s in report.sources)
        raise InputFileError(f"{where} holds no results: no variant and no measurement",
                             "every variant or device failed; see the run's own report for why")
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

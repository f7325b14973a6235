"""Building a latency table on a device: export every layer unit of a model at its profiled widths,
measure them all through the harness (edgeprune.bench.bench_models, the one timing path) in one
call, and derive the fixed cost from the full model.

    probe = HarnessProbe("adb:R58M123", mode="int8", threads=4)
    table = build_table(model, probe)
    table.predict({"block_1_expand:out": 24})

`HarnessProbe` is also what latency-aware channel pruning measures the real model with."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import tempfile
from pathlib import Path

import numpy as np

from edgeprune import progress
from edgeprune.channels.allocate import uniform_counts
from edgeprune.channels.config import ChannelConfig
from edgeprune.channels.graph import ChannelGraph
from edgeprune.errors import DeviceError, InternalError
from edgeprune.latency_table import LatencyCache, LatencyTable, make_unit, measurement_context
from edgeprune.latency_units import DEFAULT_FRACTIONS, empty_model, find_units, unit_model, untabled_ops

MODES = ("float32", "int8")


def random_inputs(model, n: int = 8, seed: int = 0) -> np.ndarray:
    shape = [d if d is not None else 1 for d in model.inputs[0].shape[1:]]
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def convert_unit(model, mode: str) -> bytes:
    """A unit model as a flatbuffer. int8 units take and give int8 tensors, so that no QUANTIZE or
    DEQUANTIZE op is timed with them: inside a full int8 model a layer reads and writes int8, and
    the model's one quantize and dequantize are part of its fixed cost."""
    if mode == "float32":
        from edgeprune.export import convert

        return convert(model, "float32")
    import warnings

    from edgeprune._native import quiet_native_stderr
    from edgeprune._tf import tf

    reps = random_inputs(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.experimental_lower_to_saved_model = False
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([reps[i:i + 1]] for i in range(len(reps)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return converter.convert()
    except Exception as e:  # the converter raises many unrelated types; keep the cause
        raise InternalError(f"the TFLite converter failed for a layer unit: {type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]}", "report this with the model") from e


@dataclasses.dataclass
class HarnessProbe:
    """Measures tf_keras models on one target through edgeprune.bench.bench_models: exports each
    (as `mode`; a full model's int8 export calibrates on `representative`, or on random inputs of
    its shape) and returns medians in ms. `context` is the measurement context of the last call
    (device identity, runner and runtime version, threads, mode...), which keys the table cache.

    The models of one call are measured side by side (BenchSettings.paired): loaded in one process
    and run in blocks of `block_runs` invokes each, in a new order every block, until every model
    has `runs` samples; a change of the device's load then hits every model alike. No minimum time
    (min_secs 0): a unit of a microsecond would otherwise run for hundreds of thousands of invokes."""

    target: object = "local"
    mode: str = "float32"
    threads: int = 1
    representative: np.ndarray | None = None
    runs: int = 300
    warmup: int = 5
    min_secs: float = 0.0
    repeats: int | None = None
    paired: bool = True
    block_runs: int = 10
    block_secs: float = 0.0
    runner: str | None = None
    affinity: str | None = None
    inventory: object = None
    benchmark_model: dict | None = None
    keep_models: int = 2  # whole-model exports kept for reuse (the full model between a table's two calls)
    conversions: int = 0
    benches: int = 0
    context: dict | None = None
    last_run: object = dataclasses.field(default=None, repr=False)
    _memo: dict = dataclasses.field(default_factory=dict, repr=False)  # exports of units by name, of models

    def __post_init__(self):
        from edgeprune.errors import RecipeError

        if self.mode not in MODES:
            raise RecipeError(f"unknown latency mode {self.mode!r}", "use 'float32' or 'int8'")

    def settings(self):
        from edgeprune.bench import BenchSettings

        blocks = {"block_runs": self.block_runs, "block_secs": self.block_secs} if self.paired else {}
        return BenchSettings(threads=[int(self.threads)], runs=self.runs, warmup=self.warmup,
                             min_secs=self.min_secs, repeats=self.repeats, runner=self.runner,
                             affinity=self.affinity, paired=self.paired, **blocks)

    def __call__(self, model) -> float:
        return self.measure_many([model])[0]

    def _export(self, model, unit: bool, name: str | None = None) -> bytes:
        """The model's flatbuffer, converted once: a unit by its name (which names its shape, so the
        same at every thread count), a whole model by identity (the object is kept with its export,
        for the last few models only: each holds its weights)."""
        if unit and name:
            key = (self.mode, "unit", name)
            if key not in self._memo:
                self._memo[key] = (None, self._convert(model, unit))
            return self._memo[key][1]
        key = (self.mode, "model", id(model))
        hit = self._memo.get(key)
        if hit is not None and hit[0] is model:
            return hit[1]
        content = self._convert(model, unit)
        kept = [k for k in self._memo if k[1] == "model"]  # oldest first
        for k in kept[:max(0, len(kept) - self.keep_models + 1)]:
            del self._memo[k]
        self._memo[key] = (model, content)
        return content

    def _convert(self, model, unit: bool) -> bytes:
        self.conversions += 1
        if unit:
            return convert_unit(model, self.mode)
        from edgeprune.export import convert

        if self.mode == "float32":
            return convert(model, "float32")
        reps = self.representative
        want = tuple(d if d is not None else 1 for d in model.inputs[0].shape[1:])
        if reps is None or tuple(np.shape(reps)[1:]) != want:
            reps = random_inputs(model, 16)
        return convert(model, "int8", representative=reps)

    def measure_many(self, models: list, units: list[bool] | bool = False, names: list[str] | None = None,
                     label: str = "exporting") -> list[float]:
        """Median latency (ms) of every model, all measured in one bench call, in order. `units`
        marks layer-unit models (exported with int8 I/O in int8 mode)."""
        from edgeprune.bench import bench_models

        flags = [units] * len(models) if isinstance(units, bool) else list(units)
        with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as tmp:
            paths = []
            with progress.task(f"{label} {len(models)} model(s) ({self.mode})", len(models)) as t:
                for i, (m, unit) in enumerate(zip(models, flags, strict=True)):
                    name = names[i] if names else ("unit" if unit else "model")
                    p = Path(tmp) / f"{i:04d}-{name}.tflite"
                    p.write_bytes(self._export(m, unit, names[i] if names else None))
                    paths.append(p)
                    t.advance(1)
            run = bench_models(paths, [self.target], self.settings(), self.inventory, self.benchmark_model)
        self.benches += 1
        self.last_run = run
        if run.failures:
            f = run.failures[0]
            what = f"{f.model} x{f.threads} on " if f.model else ""
            raise DeviceError(f"latency measurement failed: {what}{f.reason}".rstrip("."),
                              f"{len(run.failures)} failure(s) in all; check the target with "
                              "`edgeprune devices`")
        by_name = {r.model: r for r in run.results}
        out = []
        for p in paths:
            r = by_name.get(p.name)
            if r is None:
                raise DeviceError(f"the harness returned no result for {p.name}", "rerun the measurement")
            out.append(r.stats.median_us / 1000.0)
        r0 = run.results[0]
        self.context = measurement_context(run.devices[0], r0.runner, r0.runner_detail, r0.threads, self.mode,
                                           r0.xnnpack, r0.cpu_mask)
        return out


def _measure(probe, models, units, names, label):
    """One batch through the probe: batched when it can (HarnessProbe), else one model at a time
    (any callable model -> ms)."""
    if hasattr(probe, "measure_many"):
        return list(probe.measure_many(models, units=units, names=names, label=label))
    with progress.task(label, len(models)) as t:
        out = []
        for m in models:
            out.append(float(probe(m)))
            t.advance(1)
        return out


def uniform_widths(graph: ChannelGraph, ratio: float, round_to: int = 8,
                   max_ratio: float = 0.9) -> dict[str, int]:
    """Kept channel counts (by group key) of uniform pruning at `ratio`, as the channel pruner rounds."""
    counts = uniform_counts(graph, ChannelConfig(round_to=round_to, max_ratio=max_ratio), ratio)
    return {graph.group_of_root[r].key: n for r, n in counts.items()}


def global_widths(model, graph: ChannelGraph, ratio: float, round_to: int = 8,
                  max_ratio: float = 0.9) -> dict[str, int]:
    """Kept channel counts (by group key) of global L2 pruning at `ratio`: uneven widths."""
    from edgeprune.channels.allocate import global_counts
    from edgeprune.channels.importance import make_criterion, score_groups

    cfg = ChannelConfig(round_to=round_to, max_ratio=max_ratio, allocation="global")
    counts = global_counts(graph, score_groups(model, graph, make_criterion("l2", None)), cfg, ratio)
    return {graph.group_of_root[r].key: n for r, n in counts.items()}


def pruned_to(graph: ChannelGraph, widths: dict[str, int]):
    """The graph's model with each group cut to its first widths[key] channels (which channels does
    not change latency)."""
    from edgeprune.channels.surgery import rebuild

    return rebuild(graph, {g.root: np.arange(widths.get(g.key, g.size)) for g in graph.groups})


def calibrate(full_ms: float, full_sum: float, cal_ms: float | None,
              cal_sum: float | None) -> tuple[float, float]:
    """(scale, fixed_ms) such that scale x (sum of unit entries) + fixed_ms gives the full model's and
    the calibration variant's measured latencies. A unit measured alone runs faster than inside its
    model, most likely because alone its weights and activations stay in cache between invokes,
    and by a share that grows with the model's width: with a fixed cost alone, pruned variants are
    over-predicted (MobileNetV2 0.35 at 224, float32, one thread, all measured in one paired call:
    +7 % with half the channels, +12 % with a quarter; calibrated: 0 % and -2.5 %).

    Without a usable calibration (none, a variant whose units sum to nearly the full model's, or a
    scale outside [0.5, 2], which is measurement noise rather than a property of the device) the
    scale is 1 and fixed_ms is the full model's latency minus the sum."""
    if cal_ms is None or cal_sum is None or full_sum - cal_sum < 0.1 * full_sum:
        return 1.0, full_ms - full_sum
    scale = (full_ms - cal_ms) / (full_sum - cal_sum)
    if not 0.5 <= scale <= 2.0:
        return 1.0, full_ms - full_sum
    return scale, full_ms - scale * full_sum


def build_table(model, probe, *, fractions=DEFAULT_FRACTIONS, round_to: int = 8, max_ratio: float = 0.9,
                protect=(), graph: ChannelGraph | None = None, use_cache: bool = True,
                calibrate_ratio: float | None = 0.5, check_ratio: float | None = 0.5,
                cache_directory: Path | None = None) -> LatencyTable:
    """The latency table of `model` measured through `probe` (a HarnessProbe, or any callable
    model -> ms).

    Two bench calls. The first measures the full model and the empty model; it tells the
    measurement context, hence the cache file. The second measures side by side (the probe's
    paired mode): the full model, the empty model, the calibration variant (uniform pruning at
    `calibrate_ratio`; None: a fixed cost only), the check variant (global L2 pruning at
    `check_ratio`, uneven widths; None: no check) and every unit shape the cache lacks. Unit
    entries are their median minus the empty model's in that call; `calibrate` fits scale and
    fixed_ms to the full model and the calibration variant of that call. `checks` compare
    predictions with measurements the table was not fitted to: the full model in the first call,
    and the check variant."""
    graph = graph if graph is not None else ChannelGraph(model, protect)
    units = find_units(graph, fractions, round_to, max_ratio)
    needed: dict[str, tuple] = {}
    for u in units:
        for cin, cout in u.grid():
            needed.setdefault(u.shape_key(cin, cout), (u, cin, cout))
    empty = empty_model()
    # the full model first: a paired call compares every model with its first, which should not be
    # a model of a microsecond
    full1_ms, _ = _measure(probe, [model, empty], [False, True], ["full", "empty"],
                           "latency table: full model")
    context = getattr(probe, "context", None)
    cache = LatencyCache(context, cache_directory) if (use_cache and context is not None) else None
    entries: dict[str, float] = {}
    if cache is not None:
        for key in needed:
            ms = cache.get(key)
            if ms is not None:
                entries[key] = ms
    missing = [k for k in needed if k not in entries]
    batch, flags, names = [model, empty], [False, True], ["full", "empty"]
    variants: dict[str, tuple[int, dict]] = {}
    if calibrate_ratio:
        variants["calibration"] = (len(batch), uniform_widths(graph, calibrate_ratio, round_to, max_ratio))
    if check_ratio:
        variants["check"] = (len(batch) + len(variants), global_widths(model, graph, check_ratio, round_to,
                                                                        max_ratio))
    with progress.task("latency table: building the variants", len(variants)) as t:
        for name, (_, widths) in variants.items():
            batch.append(pruned_to(graph, widths))
            flags.append(False)
            names.append(name)
            t.advance(1)
    head = len(batch)
    with progress.task("latency table: building unit models", len(missing)) as t:
        for k in missing:
            u, cin, cout = needed[k]
            batch.append(unit_model(u, cin, cout))
            flags.append(True)
            names.append("unit-" + hashlib.sha256(k.encode()).hexdigest()[:12])
            t.advance(1)
    second = _measure(probe, batch, flags, names, f"latency table: {len(missing)} unit shape(s)")
    full_ms, empty_ms = second[0], second[1]
    for k, raw in zip(missing, second[head:], strict=True):
        entries[k] = raw - empty_ms
        if cache is not None:
            cache.put(k, raw - empty_ms, raw, empty_ms)
    if cache is not None:
        cache.save()
    table_units = [make_unit(u, entries) for u in units]

    def units_sum(widths):
        return sum(u.at_widths(widths) for u in table_units)

    cal = variants.get("calibration")
    scale, fixed = calibrate(full_ms, units_sum({}), second[cal[0]] if cal else None,
                             units_sum(cal[1]) if cal else None)
    table = LatencyTable(
        model=model.name, input_shape=[int(d) for d in model.inputs[0].shape[1:]],
        mode=getattr(probe, "mode", "float32"), threads=int(getattr(probe, "threads", 1)),
        context=context or {}, context_key=cache.key if cache is not None else None, units=table_units,
        empty_ms=empty_ms, full_ms=full_ms, fixed_ms=fixed, scale=scale,
        untabled_ops=untabled_ops(graph, units),
        measured_shapes=len(missing), cached_shapes=len(needed) - len(missing),
        cache_file=str(cache.path) if cache is not None else None,
        settings={"fractions": list(fractions), "round_to": round_to, "max_ratio": max_ratio,
                  "protect": list(protect), "calibrate_ratio": calibrate_ratio, "check_ratio": check_ratio,
                  **_probe_settings(probe)},
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if cal:
        table.calibration = {"name": f"uniform {calibrate_ratio:.0%}", "widths": cal[1],
                             "measured_ms": second[cal[0]], "units_ms": units_sum(cal[1])}
    table.checks.append(_check("full model, separate call", {}, table.predict({}), full1_ms))
    if "check" in variants:
        i, widths = variants["check"]
        table.checks.append(_check(f"global L2 {check_ratio:.0%}", widths, table.predict(widths), second[i]))
    return table


def _check(name: str, widths: dict, predicted: float, measured: float) -> dict:
    return {"name": name, "widths": dict(widths), "predicted_ms": predicted, "measured_ms": measured,
            "error": predicted / measured - 1.0 if measured > 0 else None}


def _probe_settings(probe) -> dict:
    keys = ("target", "runs", "warmup", "min_secs", "repeats", "paired", "runner", "affinity")
    out = {k: getattr(probe, k) for k in keys if hasattr(probe, k)}
    if "target" in out and not isinstance(out["target"], str):
        out["target"] = getattr(out["target"], "name", str(out["target"]))
    return out

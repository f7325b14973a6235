"""Per-device latency tables (NetAdapt, AMC): each layer unit's latency measured once per device at
a few channel widths, so that the latency of any channel-pruned variant of a model is predicted as

    predicted = scale x (sum over units of the unit's latency at its widths, interpolated) + fixed_ms

without exporting or measuring the variant. With scale 1, `fixed_ms` is the measured full model's
latency minus the sum of its units' entries: the invoke, the ops no unit covers (Add, pooling,
reshapes, softmax, the int8 model's quantize and dequantize) and the per-op dispatch of every unit.
A unit measured alone runs faster than inside its model, by a share that grows with the width, so
the table is calibrated on a second measured model, a uniformly pruned variant: `scale` and
`fixed_ms` make both the full model and that variant come out as measured (see
latency_profile.calibrate).

Unit entries are the unit model's median minus the median of `empty_model()` (one 1x1 conv on a
1x1x8 tensor) measured in the same bench call: what any one-op model pays per invoke is taken out
once per unit, so that the full model's invoke is counted once, in fixed_ms.

Entries are cached across runs and models in EDGEPRUNE_CACHE_DIR/latency-tables/ (default
~/.cache/edgeprune/latency-tables/), one JSON file per measurement context (device identity,
runner, runtime and its version, threads, mode, XNNPACK, CPU mask), each entry keyed by the unit's
shape key (see edgeprune.latency_units)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
from bisect import bisect_left
from pathlib import Path

from edgeprune.errors import InputFileError, SchemaError
from edgeprune.latency_units import Axis, Unit

TABLE_SCHEMA = "edgeprune-latency-table"
CACHE_SCHEMA = "edgeprune-latency-cache"
SCHEMA_VERSION = 1


# ---------------------------------------------------------------- interpolation

def _weights(xs: list[int], x: float) -> list[tuple[int, float]]:
    """(index, weight) pairs that interpolate linearly at x on the ascending grid xs; outside the
    grid the nearest segment is extended (a width below the smallest profiled one)."""
    if len(xs) == 1:
        return [(0, 1.0)]
    k = min(max(bisect_left(xs, x) - 1, 0), len(xs) - 2)
    if x == xs[k + 1]:
        return [(k + 1, 1.0)]
    t = (x - xs[k]) / (xs[k + 1] - xs[k])
    return [(k, 1.0 - t), (k + 1, t)]


def interpolate(in_widths, out_widths, ms, cin: float, cout: float | None) -> float:
    """Piecewise bilinear interpolation of the grid ms[i][j] (input width i, output width j) at
    (cin, cout); a depthwise grid has one column and cout None. Not clipped at 0: an entry is a
    difference of two medians (the unit's and the empty model's), and a unit that costs less than
    the empty model's one op may come out slightly negative; summed over a model, unclipped
    entries stay unbiased."""
    value = 0.0
    cols = [(0, 1.0)] if cout is None else _weights(list(out_widths), cout)
    for i, wi in _weights(list(in_widths), cin):
        for j, wj in cols:
            value += wi * wj * ms[i][j]
    return value


# ---------------------------------------------------------------- the table

@dataclasses.dataclass
class TableUnit:
    """A unit with its measured grid: ms[i][j] at input width inp.widths[i] and output width
    out.widths[j] (one column for a depthwise conv, whose out is None)."""

    layer: str
    kind: str
    ops: list[str]
    signature: str
    spatial: list[int]
    inp: Axis
    out: Axis | None
    ms: list[list[float]]
    keys: list[list[str]]

    def at(self, cin: float, cout: float | None) -> float:
        return interpolate(self.inp.widths, self.out.widths if self.out else [0], self.ms, cin,
                           None if self.out is None else cout)

    def at_widths(self, widths: dict[str, int]) -> float:
        return self.at(self.inp.count(widths), None if self.out is None else self.out.count(widths))

    def groups(self) -> set[str]:
        return {g for ax in (self.inp, self.out) if ax is not None for g, _ in ax.parts if g is not None}

    def to_dict(self) -> dict:
        return {"layer": self.layer, "kind": self.kind, "ops": list(self.ops), "signature": self.signature,
                "spatial": list(self.spatial), "in": self.inp.to_dict(),
                "out": None if self.out is None else self.out.to_dict(), "ms": self.ms, "keys": self.keys}

    @classmethod
    def from_dict(cls, d: dict) -> "TableUnit":
        return cls(layer=d["layer"], kind=d["kind"], ops=list(d["ops"]), signature=d["signature"],
                   spatial=list(d["spatial"]), inp=Axis.from_dict(d["in"]),
                   out=None if d["out"] is None else Axis.from_dict(d["out"]),
                   ms=[[float(v) for v in row] for row in d["ms"]], keys=[list(r) for r in d["keys"]])


@dataclasses.dataclass
class LatencyTable:
    """A model's latency table on one device (see the module docstring). `full_ms` is the full
    model's median in the first bench call, from which `fixed_ms` is derived; `checks` are later
    measurements compared with the table's predictions: the full model again ("full") and, when
    profiled with a check ratio, a uniformly pruned variant ("uniform-50%")."""

    model: str
    input_shape: list[int]
    mode: str
    threads: int
    context: dict
    context_key: str | None
    units: list[TableUnit]
    empty_ms: float
    full_ms: float
    fixed_ms: float
    scale: float = 1.0
    calibration: dict | None = None
    untabled_ops: dict[str, int] = dataclasses.field(default_factory=dict)
    checks: list[dict] = dataclasses.field(default_factory=list)
    measured_shapes: int = 0
    cached_shapes: int = 0
    cache_file: str | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    created: str = ""

    @property
    def layers_ms(self) -> float:
        """The units' entries summed at full width."""
        return self.units_ms({})

    def units_ms(self, widths: dict[str, int] | None = None) -> float:
        """The units' entries summed at these widths (unscaled, without the fixed cost)."""
        return sum(u.at_widths(widths or {}) for u in self.units)

    def predict(self, widths: dict[str, int] | None = None) -> float:
        """Predicted latency (ms) when each prunable group keeps widths[group key] channels
        (groups not named keep all)."""
        return self.scale * self.units_ms(widths) + self.fixed_ms

    def groups(self) -> dict[str, int]:
        """Every prunable group the units read or write, with its full size."""
        out: dict[str, int] = {}
        for u in self.units:
            for ax in (u.inp, u.out):
                for g, n in (ax.parts if ax is not None else ()):
                    if g is not None:
                        out[g] = n
        return out

    def uniform_widths(self, keep: float) -> dict[str, int]:
        """Each group's allowed count nearest to `keep` of its channels, as the table was profiled
        (its round_to and max_ratio)."""
        from edgeprune.channels.allocate import round_kept

        r, mr = int(self.settings.get("round_to", 8)), float(self.settings.get("max_ratio", 0.9))
        return {g: round_kept(n, keep * n, r, mr) for g, n in self.groups().items()}

    def predict_model(self, model) -> float:
        """Predicted latency of `model`, a channel-pruned (or block-removed) variant of the table's
        model: each unit's widths are read from the variant's layer of the same name; a unit whose
        layer the variant lacks (a removed block) counts nothing. The fixed cost is the full
        model's, so ops that a removed block took with it (its Add) are still counted."""
        layers = {layer.name: layer for layer in model.layers}
        total = 0.0
        for u in self.units:
            layer = layers.get(u.layer)
            if layer is None:
                continue
            cin = int(layer.input[0].shape[-1] if isinstance(layer.input, list) else layer.input.shape[-1])
            cout = None if u.out is None else int(layer.output.shape[-1])
            total += u.at(cin, cout)
        return self.scale * total + self.fixed_ms

    def to_dict(self) -> dict:
        return {"schema": TABLE_SCHEMA, "schema_version": SCHEMA_VERSION, "model": self.model,
                "input_shape": list(self.input_shape), "mode": self.mode, "threads": self.threads,
                "context": self.context, "context_key": self.context_key, "created": self.created,
                "settings": self.settings, "empty_ms": self.empty_ms, "full_ms": self.full_ms,
                "layers_ms": self.layers_ms, "scale": self.scale, "fixed_ms": self.fixed_ms,
                "calibration": self.calibration, "untabled_ops": self.untabled_ops,
                "checks": self.checks, "measured_shapes": self.measured_shapes,
                "cached_shapes": self.cached_shapes, "cache_file": self.cache_file,
                "units": [u.to_dict() for u in self.units]}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        if not isinstance(d, dict) or d.get("schema") != TABLE_SCHEMA:
            raise SchemaError("not an edgeprune latency table", f"expected schema '{TABLE_SCHEMA}'")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"latency table schema version {d.get('schema_version')!r} is not supported",
                              f"this edgeprune reads version {SCHEMA_VERSION}; profile the model again")
        try:
            return cls(model=d["model"], input_shape=list(d["input_shape"]), mode=d["mode"],
                       threads=int(d["threads"]), context=dict(d["context"]), context_key=d["context_key"],
                       units=[TableUnit.from_dict(u) for u in d["units"]], empty_ms=float(d["empty_ms"]),
                       full_ms=float(d["full_ms"]), fixed_ms=float(d["fixed_ms"]),
                       scale=float(d.get("scale", 1.0)),
                       calibration=d.get("calibration"),
                       untabled_ops=dict(d.get("untabled_ops", {})), checks=list(d.get("checks", [])),
                       measured_shapes=int(d.get("measured_shapes", 0)),
                       cached_shapes=int(d.get("cached_shapes", 0)), cache_file=d.get("cache_file"),
                       settings=dict(d.get("settings", {})), created=d.get("created", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise SchemaError(f"malformed latency table ({type(e).__name__}: {e})",
                              "profile the model again") from None

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except OSError as e:
            raise InputFileError(f"cannot read {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path} is not JSON: {e}") from None


def make_unit(unit: Unit, entries: dict[str, float]) -> TableUnit:
    """A Unit with its grid filled from measured entries (by shape key)."""
    outs = [None] if unit.out is None else list(unit.out.widths)
    keys = [[unit.shape_key(i, o) for o in outs] for i in unit.inp.widths]
    return TableUnit(layer=unit.layer, kind=unit.kind, ops=list(unit.ops), signature=unit.signature,
                     spatial=list(unit.spatial), inp=unit.inp, out=unit.out,
                     ms=[[float(entries[k]) for k in row] for row in keys], keys=keys)


# ---------------------------------------------------------------- measurement context and cache

def cache_dir() -> Path:
    """Where latency tables are cached: $EDGEPRUNE_CACHE_DIR/latency-tables (the pipeline's cache
    root, default ~/.cache/edgeprune), read when called so that the variable can change."""
    root = Path(os.environ.get("EDGEPRUNE_CACHE_DIR", Path.home() / ".cache" / "edgeprune"))
    return root / "latency-tables"


def device_identity(info) -> dict:
    """What identifies a device's hardware and system in a DeviceInfo (not its name, address or
    temperature: the same phone over adb or ssh, today or tomorrow, is one device)."""
    return {"kind": info.kind, "model": info.model, "manufacturer": info.manufacturer, "soc": info.soc,
            "abi": info.abi, "os": info.os, "android_sdk": info.android_sdk, "kernel": info.kernel,
            "cores": len(info.cores),
            "max_freq_khz": sorted({c.max_freq_khz for c in info.cores if c.max_freq_khz})}


_RUNNER_FIELDS = ("runner_version", "runtime", "runtime_version", "binary_sha256", "format")


def measurement_context(info, runner: str, runner_detail: dict, threads: int, mode: str, xnnpack: bool = True,
                        cpu_mask: str | None = None) -> dict:
    """Everything a latency entry depends on besides the layer shape: the device, the runner and the
    runtime with its version (or the benchmark_model binary's sha256), threads, mode, XNNPACK, CPU
    mask."""
    detail = {k: runner_detail.get(k) for k in _RUNNER_FIELDS if runner_detail.get(k) is not None}
    return {"device": device_identity(info), "runner": runner, "runner_detail": detail,
            "threads": int(threads), "mode": mode, "xnnpack": bool(xnnpack), "cpu_mask": cpu_mask}


def context_key(context: dict) -> str:
    """A file name for the context: readable device, mode and threads, then a hash of all of it."""
    digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
    dev = context.get("device", {})
    name = "-".join(str(x) for x in (dev.get("model"), dev.get("soc")) if x) or "device"
    name = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:40]
    return f"{name}-{context.get('mode')}-t{context.get('threads')}-{digest}"


class LatencyCache:
    """The cached entries of one measurement context: {shape key: entry}. `save` merges with what
    another process may have written meanwhile, then replaces the file atomically."""

    def __init__(self, context: dict, directory: Path | str | None = None):
        self.context = context
        self.key = context_key(context)
        self.path = (Path(directory) if directory is not None else cache_dir()) / f"{self.key}.json"
        self.entries: dict[str, dict] = self._read()
        self.new: dict[str, dict] = {}

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError):
            return {}  # an unreadable cache is rebuilt, never trusted
        if (not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA
                or data.get("schema_version") != SCHEMA_VERSION or data.get("context") != self.context):
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items()
                if isinstance(v, dict) and isinstance(v.get("ms"), (int, float))}

    def get(self, shape_key: str) -> float | None:
        e = self.entries.get(shape_key)
        return None if e is None else float(e["ms"])

    def put(self, shape_key: str, ms: float, raw_ms: float, empty_ms: float) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        entry = {"ms": float(ms), "raw_ms": float(raw_ms), "empty_ms": float(empty_ms), "measured": now}
        self.entries[shape_key] = entry
        self.new[shape_key] = entry

    def save(self) -> None:
        if not self.new:
            return
        from edgeprune.runfolder import write_json_atomic

        merged = {**self._read(), **self.new}
        write_json_atomic(self.path, {"schema": CACHE_SCHEMA, "schema_version": SCHEMA_VERSION,
                                      "context": self.context, "entries": dict(sorted(merged.items()))})
        self.entries = merged
        self.new = {}

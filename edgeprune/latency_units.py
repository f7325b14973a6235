"""The layer units a latency table measures: every conv, depthwise conv, separable conv and dense
layer of a model, with what the converter folds or fuses into it (a ZeroPadding2D feeding it alone,
the BatchNormalization after it, the activation after that), and the channel widths its input and
output can take when the model is channel-pruned.

A unit's input and output are *axes*: the channel counts of the tensor it reads and the one it
writes, as the ChannelGraph lays them out from prunable groups (a fixed axis keeps its size). The
widths profiled on each axis are the group's allowed counts nearest to a few fractions of its size
(as the channel pruner rounds them, see edgeprune.channels.allocate), plus the smallest count the
pruner may reach, so that every width the pruner visits lies inside the measured grid.

Each (unit, input width, output width) has a `shape key`: a readable string that fixes everything
the latency depends on (layer type, kernel, strides, padding, the fused layers, the input's spatial
size and both channel counts) and nothing else, so that identical layers of different models share
one measurement in the cache."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgeprune.channels.allocate import allowed_counts, min_kept, round_kept
from edgeprune.channels.graph import ChannelGraph
from edgeprune.channels.handlers import (ConvHandler, DenseHandler, DepthwiseHandler, FrozenHandler,
                                         SeparableHandler)

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
ACTIVATION_KINDS = ("ReLU", "Activation", "LeakyReLU", "ELU")
# the config fields that decide a layer's latency (everything else is initializers and names), with
# the short names shape keys use
_SHORT = {"kernel_size": "k", "strides": "s", "padding": "", "dilation_rate": "d", "groups": "g",
          "depth_multiplier": "m", "use_bias": "", "activation": ""}
_LATENCY_FIELDS = {
    "Conv": ("kernel_size", "strides", "padding", "dilation_rate", "groups", "use_bias", "activation"),
    "DepthwiseConv": ("kernel_size", "strides", "padding", "dilation_rate", "depth_multiplier", "use_bias",
                      "activation"),
    "SeparableConv": ("kernel_size", "strides", "padding", "dilation_rate", "depth_multiplier", "use_bias",
                      "activation"),
    "Dense": ("use_bias", "activation"),
}


@dataclasses.dataclass(frozen=True)
class Axis:
    """A unit's input or output channels: the pieces they are laid out from, each a prunable group
    (by key) or fixed (group None), and the widths profiled on it (ascending)."""

    parts: tuple[tuple[str | None, int], ...]
    widths: tuple[int, ...]

    @property
    def size(self) -> int:
        return sum(n for _, n in self.parts)

    def count(self, widths: dict[str, int]) -> int:
        """The axis' channel count when each group keeps widths[group] (missing groups: all)."""
        return sum(n if g is None else int(widths.get(g, n)) for g, n in self.parts)

    def to_dict(self) -> dict:
        return {"parts": [{"group": g, "size": n} for g, n in self.parts], "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "Axis":
        parts = tuple((p["group"], int(p["size"])) for p in d["parts"])
        return cls(parts, tuple(int(w) for w in d["widths"]))


@dataclasses.dataclass
class Unit:
    """One conv/depthwise/separable/dense layer with what is folded into it. `out` is None for a
    depthwise conv (its output channels are its input channels)."""

    layer: str
    kind: str
    ops: list[str]  # the model's layers this unit stands for, in order
    spatial: tuple[int, ...]  # the input's spatial size (after nothing: a fused pad is part of the unit)
    inp: Axis
    out: Axis | None
    signature: str  # the layer and its fused neighbours, without channel counts
    build: dict = dataclasses.field(default_factory=dict, repr=False)  # configs to rebuild it (not saved)

    def shape_key(self, cin: int, cout: int | None) -> str:
        spatial = "x".join(map(str, self.spatial))
        dims = f"{spatial}x{cin}" if spatial else f"{cin}"
        return f"{self.signature} {dims}->{cin if self.out is None else cout}"

    def grid(self) -> list[tuple[int, int | None]]:
        outs = [None] if self.out is None else list(self.out.widths)
        return [(i, o) for i in self.inp.widths for o in outs]


def _canon(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_canon(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return ",".join(f"{k}={_canon(v)}" for k, v in sorted(value.items()))
    return str(value)


def _latency_config(layer) -> str:
    """'Conv2D k3x3 s2x2 same d1x1 g1 nobias linear': the layer type and every config field its
    latency depends on."""
    config = layer.get_config()
    kind = type(layer).__name__
    fields = _LATENCY_FIELDS.get(kind.rstrip("123D"), ())
    words = [kind]
    for f in fields:
        if f not in config:
            continue
        if f == "use_bias":
            words.append("bias" if config[f] else "nobias")
        else:
            words.append(_SHORT[f] + _canon(config[f]))
    return " ".join(words)


def _activation_signature(layer) -> str:
    """relu, relu6, relu(max=..,slope=..,thr=..), or the Activation's function name."""
    config = layer.get_config()
    kind = type(layer).__name__
    if kind == "Activation":
        return str(config.get("activation"))
    if kind == "ReLU":
        mx, slope, thr = config.get("max_value"), config.get("negative_slope", 0), config.get("threshold", 0)
        if not slope and not thr and mx in (None, 6, 6.0):
            return "relu" if mx is None else "relu6"
        return f"relu(max={_canon(mx)},slope={_canon(slope)},thr={_canon(thr)})"
    keep = {k: v for k, v in config.items() if k not in ("name", "trainable", "dtype", "batch_input_shape")}
    return f"{kind.lower()}({_canon(keep)})"


def _strip(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("name", "batch_input_shape")}


def axis_widths(graph: ChannelGraph, parts: list[tuple[str | None, int]], fractions, round_to: int,
                max_ratio: float) -> tuple[int, ...]:
    """Widths profiled on an axis: for a single prunable group its allowed counts nearest to each
    fraction and its smallest allowed count; for a fixed axis its size; for an axis laid out from
    several pieces (a Concatenate) each fraction applied to every prunable piece."""
    size = sum(n for _, n in parts)
    if all(g is None for g, _ in parts):
        return (size,)
    if len(parts) == 1:
        n = parts[0][1]
        widths = {round_kept(n, f * n, round_to, max_ratio) for f in fractions}
        widths |= {n, allowed_counts(n, round_to, max_ratio)[0]}
        return tuple(sorted(widths))
    widths = {size}
    for f in (*fractions, 0.0):
        total = 0
        for g, n in parts:
            total += n if g is None else (min_kept(n, max_ratio) if f == 0.0 else
                                          round_kept(n, f * n, round_to, max_ratio))
        widths.add(total)
    return tuple(sorted(widths))


def _axis(graph: ChannelGraph, layer: str, port: str, fractions, round_to, max_ratio) -> Axis:
    def pieces(root: int) -> list[int]:  # the classes a (possibly laid-out) class is made of, in order
        if root in graph.definition:
            return [r for part in graph.definition[root] for r in pieces(part)]
        return [root]

    parts = []
    for part in pieces(graph.port_root(layer, port)):
        g = graph.group_of_root.get(part)
        parts.append((g.key if g is not None else None, graph.root_size(part)))
    merged: list[tuple[str | None, int]] = []
    for g, n in parts:  # neighbouring fixed pieces are one fixed piece
        if merged and g is None and merged[-1][0] is None:
            merged[-1] = (None, merged[-1][1] + n)
        else:
            merged.append((g, n))
    return Axis(tuple(merged), axis_widths(graph, merged, fractions, round_to, max_ratio))


def _base_handler(graph: ChannelGraph, name: str):
    h = graph.handlers[name]
    return h.base if isinstance(h, FrozenHandler) else h


def find_units(graph: ChannelGraph, fractions=DEFAULT_FRACTIONS, round_to: int = 8,
               max_ratio: float = 0.9) -> list[Unit]:
    """Every conv, depthwise, separable and dense layer call of the graph's model as a Unit, in
    model order (a layer called twice is two units: both calls cost time)."""
    trace = graph.trace
    consumers: dict[str, list] = {}
    producer: dict[str, Any] = {}
    for op in trace.ops:
        for key in op.inputs:
            consumers.setdefault(key, []).append(op)
        for key in op.outputs:
            producer[key] = op

    def sole_consumer(key, kinds):
        users = consumers.get(key, [])
        if len(users) == 1 and users[0].kind in kinds and key not in trace.outputs:
            return users[0]
        return None

    units: list[Unit] = []
    for op in trace.ops:
        base = _base_handler(graph, op.name)
        if not isinstance(base, (ConvHandler, DepthwiseHandler, SeparableHandler, DenseHandler)):
            continue
        ops, parts, build = [op.name], [], {"core": (type(op.layer), _strip(op.layer.get_config()))}
        in_key = op.inputs[0]
        pad_op = producer.get(in_key)
        if (pad_op is not None and pad_op.kind in ("ZeroPadding1D", "ZeroPadding2D")
                and len(consumers.get(in_key, [])) == 1):
            ops.insert(0, pad_op.name)
            parts.append(f"pad({_canon(pad_op.layer.get_config()['padding'])})")
            build["pad"] = (type(pad_op.layer), _strip(pad_op.layer.get_config()))
            in_key = pad_op.inputs[0]
        parts.append(_latency_config(op.layer))
        out_key = op.outputs[0]
        bn = sole_consumer(out_key, ("BatchNormalization",))
        if bn is not None:
            ops.append(bn.name)
            parts.append("bn")
            build["bn"] = (type(bn.layer), _strip(bn.layer.get_config()))
            out_key = bn.outputs[0]
        act = sole_consumer(out_key, ACTIVATION_KINDS)
        if act is not None:
            ops.append(act.name)
            parts.append(_activation_signature(act.layer))
            build["act"] = (type(act.layer), _strip(act.layer.get_config()))
        shape = trace.shapes[in_key]
        if shape is None or any(d is None for d in shape[1:]):
            from edgeprune.errors import ModelError

            raise ModelError(f"layer {op.name!r} has an input of unknown size {shape}",
                             "give the model a fully defined input shape (--input-shape H,W,C)")
        port_in = "io" if isinstance(base, DepthwiseHandler) else "in"
        inp = _axis(graph, op.name, port_in, fractions, round_to, max_ratio)
        out = None
        if not isinstance(base, DepthwiseHandler):
            out = _axis(graph, op.name, "out", fractions, round_to, max_ratio)
        units.append(Unit(layer=op.name, kind=op.kind, ops=ops, spatial=tuple(int(d) for d in shape[1:-1]),
                          inp=inp, out=out, signature=" + ".join(parts), build=build))
    return units


def unit_model(unit: Unit, cin: int, cout: int | None):
    """A tf_keras model of the unit alone at these channel counts (random weights), batch 1."""
    from edgeprune._tf import keras

    inp = keras.Input(shape=(*unit.spatial, cin), batch_size=1)
    x = inp
    if "pad" in unit.build:
        cls, cfg = unit.build["pad"]
        x = cls.from_config(cfg)(x)
    cls, cfg = unit.build["core"]
    cfg = dict(cfg)
    if "filters" in cfg:
        cfg["filters"] = int(cout)
    elif "units" in cfg:
        cfg["units"] = int(cout)
    x = cls.from_config(cfg)(x)
    for part in ("bn", "act"):
        if part in unit.build:
            cls, cfg = unit.build[part]
            x = cls.from_config(cfg)(x)
    return keras.Model(inp, x, name="unit")


def empty_model():
    """The reference every unit's latency is measured against: one 1x1 convolution on a 1x1x8
    tensor. It pays what any one-op model pays per invoke (the interpreter's and the delegate's
    call, one op dispatch) and computes next to nothing (64 multiply-adds)."""
    from edgeprune._tf import keras

    inp = keras.Input(shape=(1, 1, 8), batch_size=1)
    return keras.Model(inp, keras.layers.Conv2D(8, 1)(inp), name="empty")


def untabled_ops(graph: ChannelGraph, units: list[Unit]) -> dict[str, int]:
    """Layer types (with counts) the units do not cover: their cost is in the table's fixed cost."""
    covered = {name for u in units for name in u.ops}
    out: dict[str, int] = {}
    for op in graph.trace.ops:
        if op.name not in covered and op.kind not in ("InputLayer",):
            out[op.kind] = out.get(op.kind, 0) + 1
    return dict(sorted(out.items()))

"""One handler per layer type: how a layer's channels relate to its neighbours', which weight axes
carry channels, how its config changes with new channel counts, and its multiply-accumulates.

A handler speaks of *ports*: named channel axes of a layer ("in", "out", or "io" for layers whose
input and output channels are one and the same). The graph joins ports and tensors into groups."""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import numpy as np

from edgeprune._tf import tf
from edgeprune.channels.trace import Op, Slot


@dataclasses.dataclass(frozen=True)
class WeightAxis:
    """A channel axis of one weight. role: "weight" (a producer's or per-channel parameter),
    "consume" (a consumer's input rows), "gamma" (BN scale), "stat" (moving statistics)."""

    attr: str
    axis: int
    port: str
    role: str


SizeFn = Callable[[str], int]


def _prod(xs) -> int | None:
    out = 1
    for x in xs:
        if x is None:
            return None
        out *= int(x)
    return out


def _channels(shapes, key) -> int | None:
    shape = shapes[key]
    return shape[-1] if shape else None


class Handler(abc.ABC):
    """How one layer type's channels relate; `relate` is the one method every handler defines."""

    kinds: tuple[str, ...] = ()

    def refuse(self, op: Op, shapes) -> str | None:
        return None

    def ports(self, op: Op, shapes) -> dict[str, int]:
        return {}

    @abc.abstractmethod
    def relate(self, op: Op, g) -> None:
        """Join, lay out, fix or mark as produced the channel nodes of this call (see ChannelGraph)."""

    def weights(self, layer) -> list[WeightAxis]:
        return []

    def config(self, config: dict, kept: dict[str, np.ndarray], op: Op) -> dict:
        return config

    def macs(self, op: Op, size: SizeFn, shapes) -> int | None:
        return 0


def _data_format_refusal(layer) -> str | None:
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return "data_format='channels_first' is not supported (channels must be the last axis)"
    return None


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act))


# Activations that act on each element alone; anything else (softmax) mixes channels.
ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "swish", "silu", "elu", "selu", "gelu",
    "softplus", "softsign", "exponential", "mish", "hard_silu", "hard_swish", "leaky_relu", "log_sigmoid",
}


def _fix_if_mixing_activation(op: Op, g, port_node) -> None:
    name = _activation_name(op.layer)
    if name not in ELEMENTWISE_ACTIVATIONS:
        g.fix(port_node, f"activation {name!r} of {op.name!r} mixes channels")


def _relate_producer(op, g):
    """A weighted producer (Conv, Dense, SeparableConv): its input tensor's channels are its "in"
    port, its output tensor's channels its "out" port, which it produces."""
    g.union(g.tensor(op.inputs[0]), g.port(op, "in"), op)
    g.union(g.tensor(op.outputs[0]), g.port(op, "out"), op)
    g.produce(g.port(op, "out"), op)
    _fix_if_mixing_activation(op, g, g.port(op, "out"))


class ConvHandler(Handler):
    kinds = ("Conv1D", "Conv2D", "Conv3D")

    def refuse(self, op, shapes):
        if getattr(op.layer, "groups", 1) != 1:
            return f"grouped convolution (groups={op.layer.groups}) is not supported"
        return _data_format_refusal(op.layer)

    def ports(self, op, shapes):
        return {"in": int(op.layer.kernel.shape[-2]), "out": int(op.layer.filters)}

    def relate(self, op, g):
        _relate_producer(op, g)

    def weights(self, layer):
        w = [WeightAxis("kernel", -1, "out", "weight"), WeightAxis("kernel", -2, "in", "consume")]
        if layer.use_bias:
            w.append(WeightAxis("bias", 0, "out", "weight"))
        return w

    def config(self, config, kept, op):
        return {**config, "filters": int(len(kept["out"]))}

    def macs(self, op, size, shapes):
        spatial = _prod(shapes[op.outputs[0]][1:-1])
        if spatial is None:
            return None
        return spatial * _prod(op.layer.kernel_size) * size("in") * size("out")


class DenseHandler(Handler):
    kinds = ("Dense",)

    def ports(self, op, shapes):
        return {"in": int(op.layer.kernel.shape[0]), "out": int(op.layer.units)}

    def relate(self, op, g):
        _relate_producer(op, g)

    def weights(self, layer):
        w = [WeightAxis("kernel", 1, "out", "weight"), WeightAxis("kernel", 0, "in", "consume")]
        if layer.use_bias:
            w.append(WeightAxis("bias", 0, "out", "weight"))
        return w

    def config(self, config, kept, op):
        return {**config, "units": int(len(kept["out"]))}

    def macs(self, op, size, shapes):
        rows = _prod(shapes[op.inputs[0]][1:-1])
        return None if rows is None else rows * size("in") * size("out")


class DepthwiseHandler(Handler):
    """Depth multiplier 1: channel c in is channel c out, so input and output are one group."""

    kinds = ("DepthwiseConv1D", "DepthwiseConv2D")

    def refuse(self, op, shapes):
        if op.layer.depth_multiplier != 1:
            return (f"depth_multiplier={op.layer.depth_multiplier} makes each input channel several output "
                    "channels; only depth_multiplier=1 is supported")
        return _data_format_refusal(op.layer)

    def ports(self, op, shapes):
        return {"io": int(op.layer.depthwise_kernel.shape[-2])}

    def relate(self, op, g):
        g.union(g.tensor(op.inputs[0]), g.port(op, "io"), op)
        g.union(g.tensor(op.outputs[0]), g.port(op, "io"), op)
        _fix_if_mixing_activation(op, g, g.port(op, "io"))

    def weights(self, layer):
        w = [WeightAxis("depthwise_kernel", -2, "io", "weight")]
        if layer.use_bias:
            w.append(WeightAxis("bias", 0, "io", "weight"))
        return w

    def macs(self, op, size, shapes):
        spatial = _prod(shapes[op.outputs[0]][1:-1])
        return None if spatial is None else spatial * _prod(op.layer.kernel_size) * size("io")


class SeparableHandler(Handler):
    kinds = ("SeparableConv1D", "SeparableConv2D")

    def refuse(self, op, shapes):
        if op.layer.depth_multiplier != 1:
            return f"depth_multiplier={op.layer.depth_multiplier}; only depth_multiplier=1 is supported"
        return _data_format_refusal(op.layer)

    def ports(self, op, shapes):
        return {"in": int(op.layer.depthwise_kernel.shape[-2]), "out": int(op.layer.filters)}

    def relate(self, op, g):
        _relate_producer(op, g)

    def weights(self, layer):
        w = [WeightAxis("depthwise_kernel", -2, "in", "weight"),
             WeightAxis("pointwise_kernel", -2, "in", "consume"),
             WeightAxis("pointwise_kernel", -1, "out", "weight")]
        if layer.use_bias:
            w.append(WeightAxis("bias", 0, "out", "weight"))
        return w

    def config(self, config, kept, op):
        return {**config, "filters": int(len(kept["out"]))}

    def macs(self, op, size, shapes):
        spatial = _prod(shapes[op.outputs[0]][1:-1])
        if spatial is None:
            return None
        return spatial * (_prod(op.layer.kernel_size) * size("in") + size("in") * size("out"))


class BatchNormHandler(Handler):
    kinds = ("BatchNormalization", "SyncBatchNormalization")

    def refuse(self, op, shapes):
        rank = len(shapes[op.inputs[0]])
        axes = op.layer.axis if isinstance(op.layer.axis, (list, tuple)) else [op.layer.axis]
        if [a % rank for a in axes] != [rank - 1]:
            return f"normalizes axis {op.layer.axis}, not the channel (last) axis"
        return None

    def ports(self, op, shapes):
        return {"io": int(_channels(shapes, op.inputs[0]))}

    def relate(self, op, g):
        g.union(g.tensor(op.inputs[0]), g.port(op, "io"), op)
        g.union(g.tensor(op.outputs[0]), g.port(op, "io"), op)

    def weights(self, layer):
        w = []
        if layer.scale:
            w.append(WeightAxis("gamma", 0, "io", "gamma"))
        if layer.center:
            w.append(WeightAxis("beta", 0, "io", "weight"))
        w += [WeightAxis("moving_mean", 0, "io", "stat"), WeightAxis("moving_variance", 0, "io", "stat")]
        return w


class PassThroughHandler(Handler):
    """Channels in are channels out, one for one, with no per-channel parameters."""

    kinds = (
        "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
        "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
        "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "MaxPooling1D",
        "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    )

    def refuse(self, op, shapes):
        return _data_format_refusal(op.layer)

    def relate(self, op, g):
        out = g.tensor(op.outputs[0])
        g.union(g.tensor(op.inputs[0]), out, op)
        if op.kind == "Activation":
            _fix_if_mixing_activation(op, g, out)


class RescalingHandler(Handler):
    """Rescaling with a scalar or per-channel scale and offset (per-channel values are sliced)."""

    kinds = ("Rescaling",)

    def relate(self, op, g):
        g.union(g.tensor(op.inputs[0]), g.tensor(op.outputs[0]), op)
        g.union(g.tensor(op.inputs[0]), g.port(op, "io"), op)

    def ports(self, op, shapes):
        return {"io": int(_channels(shapes, op.inputs[0]))}

    def config(self, config, kept, op):
        config = dict(config)
        for name in ("scale", "offset"):
            value = np.asarray(config.get(name, 0.0))
            if value.ndim and value.shape[-1] > 1:
                config[name] = np.take(value, kept["io"], axis=-1).tolist()
        return config


class PReLUHandler(Handler):
    kinds = ("PReLU",)

    def ports(self, op, shapes):
        return {"io": int(_channels(shapes, op.inputs[0]))}

    def relate(self, op, g):
        g.union(g.tensor(op.inputs[0]), g.tensor(op.outputs[0]), op)
        g.union(g.tensor(op.inputs[0]), g.port(op, "io"), op)

    def weights(self, layer):
        return [WeightAxis("alpha", -1, "io", "weight")] if layer.alpha.shape[-1] > 1 else []


class ChannelMixingHandler(Handler):
    """Layers that compute across channels: their channels are kept whole."""

    kinds = ("Softmax", "LayerNormalization", "UnitNormalization", "GroupNormalization", "Normalization")

    def relate(self, op, g):
        reason = {
            "Softmax": "Softmax mixes channels",
            "Normalization": "Normalization holds adapted per-channel statistics",
        }.get(op.kind, f"{op.kind} normalizes across channels")
        for key in op.inputs + op.outputs:
            g.fix(g.tensor(key), f"{op.name!r}: {reason}")


class MergeHandler(Handler):
    """Element-wise merges: every input with the output's channel count shares the output's channels;
    an input of one channel is broadcast."""

    kinds = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")

    def relate(self, op, g):
        out = g.tensor(op.outputs[0])
        c = g.size(out)
        for key in op.inputs:
            node = g.tensor(key)
            if g.size(node) == c:
                g.union(node, out, op)
            elif g.size(node) != 1:
                g.refuse(op, f"input with {g.size(node)} channels does not match the output's {c}")


class ConcatenateHandler(Handler):
    kinds = ("Concatenate",)

    def relate(self, op, g):
        rank = len(g.shapes[op.outputs[0]])
        out = g.tensor(op.outputs[0])
        if op.layer.axis % rank == rank - 1:
            g.derive(out, [g.tensor(k) for k in op.inputs], op)
        else:
            for key in op.inputs:
                g.union(g.tensor(key), out, op)


class FlattenHandler(Handler):
    """Channels-last flatten: channel c of an H x W x C input is every output index s*C + c."""

    kinds = ("Flatten",)

    def relate(self, op, g):
        shape = g.shapes[op.inputs[0]]
        out, inp = g.tensor(op.outputs[0]), g.tensor(op.inputs[0])
        if len(shape) <= 2:
            g.union(inp, out, op)
            return
        repeats = _prod(shape[1:-1])
        if repeats is None:
            g.fix(inp, f"{op.name!r} flattens a tensor of unknown spatial size")
            g.fix(out, f"{op.name!r} flattens a tensor of unknown spatial size")
            return
        g.derive(out, [inp] * repeats, op)


class ReshapeHandler(Handler):
    """A Reshape that keeps the channel axis last and whole is a pass-through (its target's channel
    count is rewritten); one that flattens everything into one axis is handled like Flatten."""

    kinds = ("Reshape",)

    def _mode(self, op, shapes) -> str | None:
        src, dst = shapes[op.inputs[0]], shapes[op.outputs[0]]
        if not src or not dst or src[-1] is None:
            return None
        if dst[-1] == src[-1]:
            return "channels"
        if len(dst) == 2 and dst[-1] is not None and dst[-1] == _prod(src[1:]):
            return "flatten"
        return None

    def refuse(self, op, shapes):
        if self._mode(op, shapes) is None:
            return (f"Reshape to {tuple(op.layer.target_shape)} moves the channel axis "
                    f"({shapes[op.inputs[0]][1:]} -> {shapes[op.outputs[0]][1:]}); its channel mapping is unknown")
        return None

    def ports(self, op, shapes):
        return {"in": int(_channels(shapes, op.inputs[0])), "out": int(_channels(shapes, op.outputs[0]))}

    def relate(self, op, g):
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        g.union(inp, g.port(op, "in"), op)
        g.union(out, g.port(op, "out"), op)
        if self._mode(op, g.shapes) == "channels":
            g.union(inp, out, op)
        else:
            g.derive(out, [inp] * _prod(g.shapes[op.inputs[0]][1:-1]), op)

    def config(self, config, kept, op):
        target = list(config["target_shape"])
        if target[-1] != -1:
            target[-1] = int(len(kept["out"]))
        return {**config, "target_shape": tuple(target)}


# TF ops recorded as TFOpLambda layers that act element by element.
ELEMENTWISE_TF_OPS = {
    "__operators__.add", "__operators__.sub", "__operators__.mul", "__operators__.truediv",
    "__operators__.neg", "__operators__.abs", "__operators__.pow",
    "math.add", "math.add_n", "math.subtract", "math.multiply", "math.truediv", "math.divide",
    "math.maximum", "math.minimum", "math.negative", "math.abs", "math.square", "math.sqrt", "math.rsqrt",
    "math.exp", "math.log", "math.sigmoid", "math.tanh", "math.pow", "math.scalar_mul",
    "nn.relu", "nn.relu6", "nn.silu", "nn.swish", "nn.gelu", "nn.elu", "nn.selu", "nn.leaky_relu",
    "nn.sigmoid", "nn.tanh", "clip_by_value", "identity", "cast", "math.erf", "math.softplus",
}
REDUCTION_TF_OPS = {"math.reduce_mean", "math.reduce_max", "math.reduce_min", "math.reduce_sum"}


class TFOpHandler(Handler):
    kinds = ("TFOpLambda",)

    @staticmethod
    def _function(op) -> str:
        return op.layer.get_config().get("function", "?")

    def refuse(self, op, shapes):
        fn = self._function(op)
        if fn in ELEMENTWISE_TF_OPS or fn in REDUCTION_TF_OPS:
            return None
        return f"TF op tf.{fn} has no channel rule (only element-wise ops and spatial reductions are known)"

    def relate(self, op, g):
        fn = self._function(op)
        out = g.tensor(op.outputs[0])
        if fn in REDUCTION_TF_OPS:
            self._relate_reduction(op, g, out)
            return
        c = g.size(out)
        for key in op.inputs:
            node = g.tensor(key)
            if g.size(node) == c:
                g.union(node, out, op)
            elif g.size(node) != 1:
                g.refuse(op, f"tensor operand with {g.size(node)} channels does not match the output's {c}")
        for leaf in _constant_leaves(op):
            arr = np.asarray(leaf)
            if arr.ndim and arr.shape[-1] == c and c > 1:
                g.fix(out, f"{op.name!r} (tf.{fn}) has a per-channel constant operand")

    def _relate_reduction(self, op, g, out):
        inp = g.tensor(op.inputs[0])
        rank = len(g.shapes[op.inputs[0]])
        axis = op.call_kwargs.get("axis", op.call_args[1] if len(op.call_args) > 1 else None)
        axes = None if axis is None else [int(a) % rank for a in np.atleast_1d(axis)]
        keepdims = bool(op.call_kwargs.get("keepdims", False))
        if axes is None or rank - 1 in axes or (not keepdims and len(g.shapes[op.outputs[0]]) != rank - len(axes)):
            g.fix(inp, f"{op.name!r} reduces over the channel axis")
            g.fix(out, f"{op.name!r} reduces over the channel axis")
        else:
            g.union(inp, out, op)


def _constant_leaves(op: Op):
    leaves = tf.nest.flatten((op.call_args, op.call_kwargs))
    return [x for x in leaves if not isinstance(x, (Slot, str, bool, type(None))) and not callable(x)]


class RefusedHandler(Handler):
    """Layers whose channel mapping cannot be known or is not implemented."""

    reasons = {
        "Lambda": "Lambda layers run arbitrary code, so their channel mapping is unknown",
        "Conv1DTranspose": "transposed convolutions are not supported yet",
        "Conv2DTranspose": "transposed convolutions are not supported yet",
        "Conv3DTranspose": "transposed convolutions are not supported yet",
        "Permute": "Permute moves the channel axis",
        "SlicingOpLambda": "tensor slicing may cut the channel axis; its channel mapping is not known",
    }
    kinds = tuple(reasons)

    def refuse(self, op, shapes):
        return self.reasons[op.kind]

    def relate(self, op, g):
        for key in op.inputs + op.outputs:
            g.fix(g.tensor(key), f"{op.name!r}: {self.reasons[op.kind]}")


class FrozenHandler(Handler):
    """A protected layer. One that produces channels (Conv, Dense, SeparableConv) keeps its output
    channels and may still lose input channels; any other (and an unsupported layer) keeps every
    channel of its inputs and outputs."""

    def __init__(self, base: Handler | None, pattern: str):
        self.base = base
        self.pattern = pattern

    def ports(self, op, shapes):
        return self.base.ports(op, shapes) if self.base else {}

    def relate(self, op, g):
        producer = self.base is not None and "out" in self.base.ports(op, g.shapes)
        for key in (op.outputs if producer else op.inputs + op.outputs):
            g.fix(g.tensor(key), f"{op.name!r} is protected by {self.pattern!r}")
        if self.base is not None:
            self.base.relate(op, g)

    def weights(self, layer):
        return self.base.weights(layer) if self.base else []

    def config(self, config, kept, op):
        return self.base.config(config, kept, op) if self.base else config

    def macs(self, op, size, shapes):
        return self.base.macs(op, size, shapes) if self.base else 0


HANDLERS: dict[str, Handler] = {}
for _cls in (ConvHandler, DenseHandler, DepthwiseHandler, SeparableHandler, BatchNormHandler, PassThroughHandler,
             RescalingHandler, PReLUHandler, ChannelMixingHandler, MergeHandler, ConcatenateHandler,
             FlattenHandler, ReshapeHandler, TFOpHandler, RefusedHandler):
    _h = _cls()
    for _kind in _cls.kinds:
        HANDLERS[_kind] = _h


def handler_for(op: Op) -> Handler | None:
    """The handler for an op's exact layer type (a subclass may compute something else: no guess)."""
    return HANDLERS.get(op.kind)


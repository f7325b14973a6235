"""Surgery: rebuild a traced model from its layers' configs with new channel counts, and copy the
sliced weights into every layer (kernels, biases, depthwise kernels, BN gamma/beta/mean/variance,
Dense input rows). Nested models come out inlined into one functional model."""

from __future__ import annotations

import numpy as np

from edgeprune._tf import keras, tf
from edgeprune.channels.graph import ChannelGraph
from edgeprune.channels.trace import Slot
from edgeprune.errors import InternalError


def _port_kept(graph: ChannelGraph, name: str, kept: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    op = graph.layer_ops[name]
    ports = graph.handlers[name].ports(op, graph.shapes)
    return {port: graph.kept_of_root(graph.port_root(name, port), kept) for port in ports}


def rebuild(graph: ChannelGraph, kept: dict[int, np.ndarray]) -> "keras.Model":
    """A new model where each prunable group (by root) keeps the channel indices `kept[root]`
    (groups not in `kept` keep everything)."""
    trace = graph.trace
    tensors = {}
    inputs = []
    for key, name in zip(trace.inputs, trace.input_names):
        shape = trace.shapes[key]
        t = keras.Input(shape=shape[1:], batch_size=shape[0], dtype=trace.dtypes[key], name=name)
        tensors[key] = t
        inputs.append(t)
    layers: dict[str, tuple] = {}
    for op in trace.ops:
        if op.name not in layers:
            handler = graph.handlers[op.name]
            port_kept = _port_kept(graph, op.name, kept)
            config = handler.config(op.layer.get_config(), port_kept, op)
            config["name"] = op.name
            config.pop("batch_input_shape", None)  # a Sequential's first layer: its input may have shrunk
            layers[op.name] = (type(op.layer).from_config(config), port_kept)
        layer = layers[op.name][0]

        def fill(x):
            return tensors[x.key] if isinstance(x, Slot) else x

        args = tf.nest.map_structure(fill, op.call_args)
        kwargs = tf.nest.map_structure(fill, op.call_kwargs)
        out = layer(*args, **kwargs)
        flat = tf.nest.flatten(out)
        if len(flat) != len(op.outputs):
            raise InternalError(f"layer {op.name!r} returned {len(flat)} tensors, {len(op.outputs)} expected",
                                "report this model to edgeprune")
        for key, t in zip(op.outputs, flat):
            tensors[key] = t
    outputs = [tensors[k] for k in trace.outputs]
    model = keras.Model(inputs[0] if trace.single_input else inputs,
                        outputs[0] if trace.single_output else outputs, name=trace.name)
    for name, (layer, port_kept) in layers.items():
        _copy_weights(graph, name, layer, port_kept)
    return model


def _copy_weights(graph: ChannelGraph, name: str, new_layer, port_kept: dict[str, np.ndarray]) -> None:
    old = graph.layer_ops[name].layer
    if not old.weights:
        return
    spec = graph.handlers[name].weights(old)
    sliced: dict[str, np.ndarray] = {}
    for w in spec:
        arr = sliced[w.attr] if w.attr in sliced else getattr(old, w.attr).numpy()
        sliced[w.attr] = np.take(arr, port_kept[w.port], axis=w.axis)
    attr_of = {id(getattr(old, w.attr)): w.attr for w in spec}
    values = [sliced[attr_of[id(v)]] if id(v) in attr_of else v.numpy() for v in old.weights]
    try:
        new_layer.set_weights(values)
    except ValueError as e:
        raise InternalError(f"sliced weights of {name!r} do not fit the rebuilt layer: {e}",
                            "report this model to edgeprune") from e

"""Trace a tf_keras model into a flat list of layer calls (ops), nested models inlined.

Each tensor of the model gets a key ("t0", "t1", ...). Call arguments keep their structure with every
Keras tensor replaced by a `Slot` naming its key, so surgery can replay each call on new tensors. A
nested functional or Sequential model is inlined: its inputs become the tensors it was called on."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgeprune._tf import keras, tf
from edgeprune.errors import ModelError


@dataclasses.dataclass(frozen=True)
class Slot:
    """Stands for the tensor `key` inside recorded call arguments."""

    key: str


@dataclasses.dataclass
class Op:
    """One call of a layer in the flattened graph."""

    name: str  # unique layer name in the flat graph (the rebuilt model uses it)
    layer: Any
    inputs: list[str]  # keys of the Keras tensors among the call arguments, in call order
    outputs: list[str]
    call_args: Any
    call_kwargs: dict

    @property
    def kind(self) -> str:
        return type(self.layer).__name__


@dataclasses.dataclass
class Trace:
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple]  # key -> static shape with the batch dimension (None where unknown)
    dtypes: dict[str, str]
    input_names: list[str]
    single_input: bool
    single_output: bool
    name: str


def _is_graph_model(layer) -> bool:
    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def check_model(model) -> None:
    """Refuses what cannot be traced: Keras 3 models, subclassed models, unbuilt Sequential models."""
    if not isinstance(model, keras.Model):
        kind = f"{type(model).__module__}.{type(model).__name__}"
        hint = ("it looks like a Keras 3 model; build it with tf_keras (from edgeprune._tf import keras)"
                if type(model).__module__.startswith("keras") else "pass a tf_keras functional or Sequential model")
        raise ModelError(f"cannot prune channels of a {kind}", hint)
    if not _is_graph_model(model):
        if isinstance(model, keras.Sequential):
            raise ModelError(f"Sequential model {model.name!r} has no input shape yet",
                             "start it with keras.Input(shape=...) or build it before pruning")
        raise ModelError(f"model {model.name!r} is a subclassed model; its graph cannot be read",
                         "rewrite it as a functional or Sequential model")


def trace_model(model) -> Trace:
    check_model(model)
    keys: dict[int, str] = {}
    shapes: dict[str, tuple] = {}
    dtypes: dict[str, str] = {}
    ops: list[Op] = []
    names: dict[int, str] = {}
    taken: set[str] = set()
    keep_alive: list = []  # tensors whose id() is used as a key must outlive the trace

    def new_key(t) -> str:
        key = f"t{len(shapes)}"
        keep_alive.append(t)
        keys[id(t)] = key
        shapes[key] = tuple(t.shape.as_list()) if t.shape.rank is not None else ()
        dtypes[key] = t.dtype.name
        return key

    def flat_name(layer, prefix: str) -> str:
        if id(layer) in names:
            return names[id(layer)]
        name = layer.name
        if name in taken:
            name = f"{prefix}{layer.name}"
            i = 1
            while name in taken:
                name, i = f"{prefix}{layer.name}_{i}", i + 1
        taken.add(name)
        names[id(layer)] = name
        return name

    for layer in model.layers:  # outer names win; nested names get their model's prefix on a clash
        if not _is_graph_model(layer):
            flat_name(layer, "")

    def visit(m, input_keys: list[str], prefix: str) -> list[str]:
        local: dict[int, str] = {}
        if len(m.inputs) != len(input_keys):
            raise ModelError(f"nested model {m.name!r} has {len(m.inputs)} inputs but is called with "
                             f"{len(input_keys)} tensors", "call it with one tensor per input")
        for t, k in zip(m.inputs, input_keys):
            local[id(t)] = k
        order = {id(layer): i for i, layer in enumerate(m.layers)}
        for depth in sorted(m._nodes_by_depth, reverse=True):
            nodes = sorted(m._nodes_by_depth[depth], key=lambda n: order.get(id(n.layer), 0))
            for node in nodes:
                if node.is_input:
                    continue
                layer = node.layer
                try:
                    in_keys = [local[id(t)] for t in node.keras_inputs]
                except KeyError:
                    raise ModelError(f"layer {layer.name!r} in {m.name!r} reads a tensor from outside the model",
                                     "build the model from keras.Input tensors only") from None
                flat_outputs = tf.nest.flatten(node.outputs)
                if isinstance(layer, keras.Model):
                    check_model(layer)
                    out_keys = visit(layer, in_keys, prefix=f"{prefix}{layer.name}_")
                    if len(out_keys) != len(flat_outputs):
                        raise ModelError(f"nested model {layer.name!r} output structure is not a flat list",
                                         "return a tensor or a list of tensors from nested models")
                    for t, k in zip(flat_outputs, out_keys):
                        local[id(t)] = k
                    continue

                def to_slot(x):
                    if hasattr(x, "_keras_history"):  # a Keras tensor of this graph
                        return Slot(local[id(x)])
                    return x

                args = tf.nest.map_structure(to_slot, node.call_args)
                kwargs = tf.nest.map_structure(to_slot, dict(node.call_kwargs))
                out_keys = []
                for t in flat_outputs:
                    k = new_key(t)
                    local[id(t)] = k
                    out_keys.append(k)
                ops.append(Op(flat_name(layer, prefix), layer, in_keys, out_keys, args, kwargs))
        return [local[id(t)] for t in m.outputs]

    input_keys = [new_key(t) for t in model.inputs]
    output_keys = visit(model, input_keys, "")
    trace = Trace(ops=ops, inputs=input_keys, outputs=output_keys, shapes=shapes, dtypes=dtypes,
                  input_names=[t._keras_history.layer.name for t in model.inputs],
                  single_input=not isinstance(model._nested_inputs, (list, tuple, dict)),
                  single_output=not isinstance(model._nested_outputs, (list, tuple, dict)),
                  name=model.name)
    trace._keep_alive = keep_alive  # type: ignore[attr-defined]
    return trace

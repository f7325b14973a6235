"""Building the tf_keras model from a plan."""

from __future__ import annotations

from typing import Callable

from edgeprune.errors import ModelError
from edgeprune.keras3 import libs
from edgeprune.keras3.plan import Entry, ModelPlan, Ref, map_refs, refs_in


class Built:
    """A tf_keras model built from a plan, with the tf_keras tensor of every Keras 3 call."""

    def __init__(self, plan: ModelPlan, model, tensors: dict, children: dict):
        self.plan = plan
        self.model = model
        self.tensors = tensors  # (layer name, node index) -> tf_keras output structure
        self.children = children  # nested model name -> Built


def build_model(plan: ModelPlan) -> Built:
    keras = libs.tfk()
    if plan.as_sequential:
        return _build_sequential(plan)
    tensors: dict = {}
    children: dict = {}
    layers: dict = {}
    nested_functional = set()
    pending = []
    taken = {e.name for e in plan.entries}

    def fresh(name: str) -> str:
        """A layer name for the layers an expansion adds, unique in this model."""
        candidate, n = name, 0
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        return candidate

    for e in plan.entries:
        if e.kind == "input":
            tensors[(e.name, 0)] = keras.Input(batch_shape=e.batch_shape, dtype=e.dtype, sparse=e.sparse, name=e.name)
        else:
            if e.kind == "layer" and e.tfk_class is not None:
                layers[e.name] = e.tfk_class.from_config(dict(e.tfk_config))
            elif e.kind == "model":
                children[e.name] = build_model(e.sub)
                layers[e.name] = children[e.name].model
                if e.sub.kind == "functional":
                    nested_functional.add(e.name)
            pending.extend((e, i) for i in range(len(e.nodes)))

    def lookup(ref: Ref):
        key = (ref.layer, ref.node)
        if key not in tensors:
            raise ModelError(f"the Keras 3 model {plan.name} refers to call {ref.node} of layer {ref.layer}, "
                             "which does not exist", hint="the model config is inconsistent; save it again")
        out = tensors[key]
        if isinstance(out, (list, tuple)):
            return out[ref.tensor]
        if ref.tensor != 0:
            raise ModelError(f"layer {ref.layer} has one output, the config asks for output {ref.tensor}")
        return out

    # Calls in dependency order (a layer may be shared at different depths).
    while pending:
        progressed = False
        remaining = []
        for e, i in pending:
            args, kwargs = e.nodes[i]
            needed = refs_in((args, kwargs))
            if any((r.layer, r.node) not in tensors for r in needed):
                remaining.append((e, i))
                continue
            args = map_refs(args, lookup)
            # A recorded `training` (Keras 3 records Dropout's default False, and the transfer-learning
            # `base(x, training=False)`) is only a fallback in Keras 3: a functional model passes its
            # caller's training flag over it, so fit() trains that layer in training mode. tf_keras
            # would pin it instead (and TF-MOT would never update a mask inside), so it is dropped.
            kwargs = {k: v for k, v in map_refs(kwargs, lookup).items() if v is not None and k != "training"}
            tensors[(e.name, i)] = _apply(e, layers.get(e.name), args, kwargs, fresh)
            progressed = True
        if not progressed:
            names = sorted({e.name for e, _ in remaining})
            raise ModelError(f"the Keras 3 model {plan.name} has calls whose inputs never appear: {names}",
                             hint="the model config is inconsistent; save the model again with Keras 3")
        pending = remaining

    def io(ref: Ref):
        # input_layers/output_layers count a nested functional model's own construction as node 0
        node = ref.node - 1 if ref.layer in nested_functional else ref.node
        return lookup(Ref(ref.layer, node, ref.tensor))

    inputs = map_refs(plan.inputs, io)
    outputs = map_refs(plan.outputs, io)
    model = keras.Model(inputs=inputs, outputs=outputs, name=plan.name)
    return Built(plan, model, tensors, children)


def _build_sequential(plan: ModelPlan) -> Built:
    keras = libs.tfk()
    first = plan.entries[0]
    model = keras.Sequential(name=plan.name)
    model.add(keras.Input(batch_shape=first.batch_shape, dtype=first.dtype, sparse=first.sparse, name=first.name))
    children = {}
    for e in plan.entries[1:]:
        if e.kind == "model":
            children[e.name] = build_model(e.sub)
            model.add(children[e.name].model)
        else:
            model.add(e.tfk_class.from_config(dict(e.tfk_config)))
    tensors = {(first.name, 0): model.inputs[0]}
    for e, layer in zip(plan.entries[1:], model.layers):
        tensors[(e.name, 0)] = layer.output if e.kind != "model" else model.get_layer(e.name).get_output_at(-1)
    return Built(plan, model, tensors, children)


def _apply(e: Entry, layer, args, kwargs, fresh: Callable[[str], str]):
    if e.kind == "op":
        if e.op_fn is None:
            return e.expansion(args[0], e.name, fresh)
        return e.op_fn(*args, **kwargs, **e.op_config)
    if layer is None:  # an Activation layer replaced by its expansion
        return e.expansion(args[0], e.name, fresh)
    out = layer(*args, **kwargs)
    if e.expansion is not None:
        out = e.expansion(out, e.name, fresh)
    return out

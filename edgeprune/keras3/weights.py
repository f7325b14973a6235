"""Weights, layer by layer, between a Keras 3 model and its tf_keras translation."""

from __future__ import annotations

from edgeprune.errors import ModelError
from edgeprune.keras3.plan import ModelPlan


def _weight_key(name: str, layer_name: str) -> str:
    """A weight's name inside its layer: "query/kernel" for both "mha/query/kernel:0" (tf_keras)
    and "model/mha/query/kernel" (Keras 3)."""
    name = name.split(":")[0]
    marker = layer_name + "/"
    if marker in name:
        return name[name.rindex(marker) + len(marker):]
    return name.rsplit("/", 1)[-1]


def copy_weights(src_layer, dst_layer, src_names, dst_names, label: str):
    """Copy one layer's weights; matched by variable name when both sides use the same names,
    otherwise by order with a shape check."""
    values = src_layer.get_weights()
    targets = dst_layer.get_weights()
    if len(values) != len(targets):
        raise ModelError(
            f"layer {label} has {len(values)} weights in the source model and {len(targets)} after translation",
            hint="this layer's translation is wrong; report it",
        )
    s_keys = [_weight_key(n, src_layer.name) for n in src_names]
    d_keys = [_weight_key(n, dst_layer.name) for n in dst_names]
    if sorted(s_keys) == sorted(d_keys) and len(set(s_keys)) == len(s_keys):
        by_name = dict(zip(s_keys, values))
        values = [by_name[k] for k in d_keys]
    for value, target, key in zip(values, targets, d_keys):
        if tuple(value.shape) != tuple(target.shape):
            raise ModelError(
                f"layer {label} weight {key} has shape {tuple(value.shape)} in the source model and "
                f"{tuple(target.shape)} after translation",
                hint="this layer's translation is wrong; report it",
            )
    dst_layer.set_weights(values)


def k3_weight_names(layer) -> list[str]:
    return [getattr(w, "path", None) or w.name for w in layer.weights]


def tfk_weight_names(layer) -> list[str]:
    return [w.name for w in layer.weights]


def transfer_k3_to_tfk(plan: ModelPlan, k3_model, tfk_model, prefix=""):
    """Copies weights and `trainable` flags, as Keras 3 read them from the file. Flags go top-down:
    setting a tf_keras model's flag sets it on every layer inside, so a frozen layer inside a
    trainable base model (the transfer-learning set-up) is frozen again after its model."""
    if not prefix:
        tfk_model.trainable = k3_model.trainable
    for e in plan.entries:
        if e.kind in ("input", "op") or (e.kind == "layer" and e.tfk_class is None):
            continue
        src = k3_model.get_layer(e.name)
        dst = tfk_model.get_layer(e.name)
        dst.trainable = src.trainable
        if e.kind == "model":
            transfer_k3_to_tfk(e.sub, src, dst, prefix + e.name + "/")
        elif src.weights or dst.weights:
            copy_weights(src, dst, k3_weight_names(src), tfk_weight_names(dst), prefix + e.name)

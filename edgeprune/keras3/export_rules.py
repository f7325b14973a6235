"""Translation tables, tf_keras -> Keras 3: layer configs and the TensorFlow ops tf_keras records
as TFOpLambda layers."""

from __future__ import annotations

from typing import Callable

from edgeprune.keras3 import libs
from edgeprune.keras3.rules import LAYER_RULES, WRAPPED_LAYER_KEYS, Untranslatable


# tf_keras config keys Keras 3 does not take, dropped while they hold their default.
_REVERSE_DROPPED = {
    "Conv1DTranspose": {"groups": (1,)},
    "Conv2DTranspose": {"groups": (1,)},
    "Conv3DTranspose": {"groups": (1,)},
    "DepthwiseConv1D": {"groups": (1,)},
    "DepthwiseConv2D": {"groups": (1,)},
    "SeparableConv1D": {"groups": (1,), "kernel_initializer": None, "kernel_regularizer": (None,),
                        "kernel_constraint": (None,)},
    "SeparableConv2D": {"groups": (1,), "kernel_initializer": None, "kernel_regularizer": (None,),
                        "kernel_constraint": (None,)},
    "SpatialDropout1D": {"noise_shape": (None,), "trainable": None},
    "SpatialDropout2D": {"noise_shape": (None,), "trainable": None},
    "SpatialDropout3D": {"noise_shape": (None,), "trainable": None},
    "Embedding": {"batch_input_shape": None, "input_length": (None,)},
    "LSTM": {"implementation": None, "time_major": (False,)},
    "GRU": {"implementation": None, "time_major": (False,)},
    "SimpleRNN": {"time_major": (False,)},
    "Softmax": {"robust_masking": (False,)},
    "MultiHeadAttention": {"query_shape": None, "key_shape": None, "value_shape": None,
                           "softmax_robust_masking": (False,)},
}
for _name in ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness",
              "RandomContrast"):
    _REVERSE_DROPPED[_name] = {"rng_type": None}  # how tf_keras draws random numbers in training
_REVERSE_RENAMED = {"LeakyReLU": {"alpha": "negative_slope"}}
# tf_keras activations with a different meaning (or none) in Keras 3.
_REVERSE_REFUSED_ACTIVATIONS = {"hard_sigmoid": "tf_keras hard_sigmoid (slope 0.2) differs from Keras 3's"}


def k3_name(name: str) -> str:
    """Keras 3 refuses "/" in layer names; tf_keras' own MobileNetV3 uses it ("Conv/BatchNorm")."""
    return name.replace("/", "_")


def reverse_layer_config(layer) -> tuple[type, dict]:
    keras = libs.keras3()
    class_name = type(layer).__name__
    forward_classes = {r.tfk_class for r in LAYER_RULES.values()}
    if class_name not in forward_classes or type(layer).__module__.split(".")[0] != "tf_keras":
        hint = "strip TF-MOT wrappers first (strip_pruning)" if "Prune" in class_name or "Quantize" in class_name else \
            "no Keras 3 equivalent is known to edgeprune"
        raise Untranslatable(hint)
    config = _plain(layer.get_config())
    config["name"] = k3_name(config.get("name") or layer.name)
    return getattr(keras.layers, class_name), _reverse_config(class_name, config)


def _reverse_config(class_name: str, config: dict) -> dict:
    """A tf_keras layer config -> the Keras 3 config of the same layer."""
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = config["axis"][0]  # tf_keras stores the built axis as a list
    problems = []
    for key, allowed in _REVERSE_DROPPED.get(class_name, {}).items():
        if key in config:
            value = config.pop(key)
            if allowed is not None and value not in allowed:
                problems.append(f"{key}={value!r} has no Keras 3 equivalent")
    for old, new in _REVERSE_RENAMED.get(class_name, {}).items():
        if old in config:
            config[new] = config.pop(old)
    for key in ("activation", "recurrent_activation"):
        if isinstance(config.get(key), str) and config[key] in _REVERSE_REFUSED_ACTIVATIONS:
            problems.append(_REVERSE_REFUSED_ACTIVATIONS[config[key]])
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        config["dtype"] = (dtype.get("config") or {}).get("name")
    for key in WRAPPED_LAYER_KEYS:
        inner = config.get(key)
        if isinstance(inner, dict) and "class_name" in inner:
            try:
                config[key] = {**inner, "config": _reverse_config(inner["class_name"], dict(inner["config"]))}
            except Untranslatable as e:
                problems.append(f"wrapped {inner['class_name']}: {e}")
    if problems:
        raise Untranslatable("; ".join(problems))
    return config


def _plain(value):
    """tf_keras configs hold TensorFlow's tracking wrappers (ListWrapper, ...): plain lists/dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list) or type(value).__name__ == "ListWrapper":
        return [_plain(v) for v in value]
    return value


def reverse_ops() -> dict[str, Callable]:
    """tf_keras TFOpLambda symbol -> function(bound arguments of the TF symbol) with Keras 3 ops."""
    ops = libs.keras3().ops

    def matmul(a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False, a_is_sparse=False,
               b_is_sparse=False, output_type=None, grad_a=False, grad_b=False, name=None):
        if adjoint_a or adjoint_b or a_is_sparse or b_is_sparse or output_type is not None:
            raise TypeError("only transpose_a/transpose_b are supported")
        a = ops.swapaxes(a, -1, -2) if transpose_a else a
        b = ops.swapaxes(b, -1, -2) if transpose_b else b
        return ops.matmul(a, b)

    def silu(features, beta=1.0):
        if beta != 1.0:
            raise TypeError("beta != 1 is not supported")
        return ops.silu(features)

    def transpose(a, perm=None, name=None, conjugate=False):
        if conjugate:
            raise TypeError("conjugate is not supported")
        return ops.transpose(a, perm)

    def unary(fn):
        return lambda x, name=None: fn(x)

    def binary(fn):
        return lambda x, y, name=None: fn(x, y)

    return {
        "__operators__.add": binary(ops.add),
        "math.add": binary(ops.add),
        "math.subtract": binary(ops.subtract),
        "math.multiply": binary(ops.multiply),
        "math.truediv": binary(ops.true_divide),
        "math.divide": binary(ops.divide),
        "math.pow": binary(ops.power),
        "math.maximum": binary(ops.maximum),
        "math.minimum": binary(ops.minimum),
        "math.negative": unary(ops.negative),
        "math.abs": unary(ops.absolute),
        "math.square": unary(ops.square),
        "math.sqrt": unary(ops.sqrt),
        "math.exp": unary(ops.exp),
        "math.log": unary(ops.log),
        "math.tanh": unary(ops.tanh),
        "math.sigmoid": unary(ops.sigmoid),
        "linalg.matmul": matmul,
        "math.reduce_mean": lambda input_tensor, axis=None, keepdims=False, name=None: ops.mean(
            input_tensor, axis=axis, keepdims=keepdims),
        "math.reduce_sum": lambda input_tensor, axis=None, keepdims=False, name=None: ops.sum(
            input_tensor, axis=axis, keepdims=keepdims),
        "math.reduce_max": lambda input_tensor, axis=None, keepdims=False, name=None: ops.max(
            input_tensor, axis=axis, keepdims=keepdims),
        "math.reduce_min": lambda input_tensor, axis=None, keepdims=False, name=None: ops.min(
            input_tensor, axis=axis, keepdims=keepdims),
        "reshape": lambda tensor, shape, name=None: ops.reshape(tensor, shape),
        "transpose": transpose,
        "compat.v1.transpose": transpose,
        "concat": lambda values, axis, name=None: ops.concatenate(list(values), axis=axis),
        "expand_dims": lambda input, axis, name=None: ops.expand_dims(input, axis),
        "squeeze": lambda input, axis=None, name=None: ops.squeeze(input, axis),
        "compat.v1.squeeze": lambda input, axis=None, name=None, squeeze_dims=None: ops.squeeze(
            input, axis if axis is not None else squeeze_dims),
        "clip_by_value": lambda t, clip_value_min, clip_value_max, name=None: ops.clip(t, clip_value_min,
                                                                                       clip_value_max),
        "cast": lambda x, dtype, name=None: ops.cast(x, dtype),
        "nn.relu": lambda features, name=None: ops.relu(features),
        "nn.relu6": lambda features, name=None: ops.relu6(features),
        "nn.silu": silu,
        "nn.leaky_relu": lambda features, alpha=0.2, name=None: ops.leaky_relu(features, negative_slope=alpha),
        "nn.softmax": lambda logits, axis=None, name=None: ops.softmax(logits, axis=-1 if axis is None else axis),
        "nn.log_softmax": lambda logits, axis=None, name=None: ops.log_softmax(
            logits, axis=-1 if axis is None else axis),
        "nn.gelu": lambda features, approximate=False, name=None: ops.gelu(features, approximate=approximate),
        "__operators__.getitem": lambda tensor, slice_spec, var=None: tensor[_slices(slice_spec)],
    }


def _slices(spec):
    """tf_keras stores the slices of `x[...]` as {"start", "stop", "step"} dicts."""
    if isinstance(spec, dict) and set(spec) == {"start", "stop", "step"}:
        return slice(spec["start"], spec["stop"], spec["step"])
    if isinstance(spec, (list, tuple)):
        return tuple(_slices(s) for s in spec)
    return spec

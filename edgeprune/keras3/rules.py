"""Translation tables, Keras 3 -> tf_keras: activations, dtype policies, initializer/regularizer/
constraint configs, layer classes with their renamed and dropped arguments, and the operations
Keras 3 records in functional graphs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

from edgeprune.keras3 import libs


class Untranslatable(Exception):
    """One reason a single layer cannot be translated; collected, never shown alone."""


# Keras 3 activation names whose tf_keras function of the same name computes the same thing.
_SAME_ACTIVATIONS = {
    "linear", "relu", "elu", "selu", "softplus", "softsign", "tanh", "sigmoid", "exponential",
    "softmax", "gelu", "mish", "swish", "relu6", "leaky_relu", "log_softmax",
}
_RENAMED_ACTIVATIONS = {"silu": "swish"}


def _hard_sigmoid(x, base: str, fresh: Callable[[str], str]):
    """Keras 3 hard_sigmoid, relu6(x + 3) / 6, built as tf_keras writes it in MobileNetV3 (the
    TFLite converter recognises this pattern). tf_keras' own `hard_sigmoid` is a different
    function (slope 0.2), so it must not be used."""
    keras = libs.tfk()
    return keras.layers.ReLU(6.0, name=fresh(f"{base}_relu6"))(x + 3.0) * (1.0 / 6.0)


def _hard_silu(x, base: str, fresh: Callable[[str], str]):
    keras = libs.tfk()
    return keras.layers.Multiply(name=fresh(f"{base}_hard_swish"))([x, _hard_sigmoid(x, base, fresh)])


EXPANDED_ACTIVATIONS: dict[str, Callable] = {
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
}


def _activation_name(value) -> str:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, dict)
        and str(value.get("module", "")).startswith("keras")
        and "activations" in str(value.get("module", ""))
        and isinstance(value.get("config"), str)
    ):
        return value["config"]
    raise Untranslatable(f"activation {value!r} is not a built-in Keras activation")


def _translate_activation(value) -> tuple[str, Callable | None]:
    """(tf_keras activation name, expansion or None). An expansion means: use "linear" in the
    layer and apply the expansion to its output."""
    name = _activation_name(value)
    if name in _SAME_ACTIVATIONS:
        return name, None
    if name in _RENAMED_ACTIVATIONS:
        return _RENAMED_ACTIVATIONS[name], None
    if name in EXPANDED_ACTIVATIONS:
        return "linear", EXPANDED_ACTIVATIONS[name]
    raise Untranslatable(f"activation '{name}' has no tf_keras equivalent")


MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
MIXED_PRECISION_NOTE = (
    "mixed-precision layers are translated to float32 (their weights are float32 already) and checked against "
    "the Keras 3 model computed in float32"
)


def dtype_name(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
        return (value.get("config") or {}).get("name")
    return None


def translate_dtype(value):
    """Keras 3 DTypePolicy dicts -> plain dtype strings. Mixed precision becomes float32: edge
    exports are float32 or quantized, and a CPU computes float16 slowly and differently."""
    if value is None:
        return value
    if isinstance(value, str):  # a plain dtype (inputs may be int32, bool, ...)
        return "float32" if value in MIXED_POLICIES else value
    name = dtype_name(value)
    if name in MIXED_POLICIES:
        return "float32"
    if name in ("float16", "float32", "float64", "bfloat16"):
        return name
    if name is not None:
        raise Untranslatable(f"dtype policy '{name}' has no tf_keras equivalent")
    if isinstance(value, dict) and "Quantized" in str(value.get("class_name")):
        raise Untranslatable("the layer is quantized by Keras 3 (quantized dtype policy)")
    raise Untranslatable(f"dtype {value!r} is not understood")


_OBJECT_MODULES = {"initializers", "regularizers", "constraints"}


def _translate_object(value, kind: str):
    """A Keras 3 initializer/regularizer/constraint config -> a tf_keras one. Arguments tf_keras
    does not have are dropped only while they hold None (their "off" value)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        raise Untranslatable(f"{kind} {value!r} is not understood")
    class_name = value["class_name"]
    module = getattr(libs.tfk(), kind)
    cls = getattr(module, class_name, None)
    if cls is None or not inspect.isclass(cls):
        raise Untranslatable(f"{kind[:-1]} '{class_name}' has no tf_keras equivalent")
    config = dict(value.get("config") or {})
    params = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in list(config):
        if key not in params and not takes_kwargs:
            if config[key] is not None:
                raise Untranslatable(f"{kind[:-1]} {class_name} argument {key}={config[key]!r} has no tf_keras equivalent")
            del config[key]
    return {"class_name": class_name, "config": config}


@dataclasses.dataclass(frozen=True)
class _LayerRule:
    tfk_class: str
    renamed: tuple = ()  # ((keras3 key, tf_keras key), ...)
    dropped: tuple = ()  # ((keras3 key, allowed values or None for "any"), ...)
    added: tuple = ()  # ((tf_keras key, value), ...): keys tf_keras' from_config requires


def _rule(tfk_class, renamed=(), dropped=(), added=()):
    return _LayerRule(tfk_class, tuple(renamed), tuple(dropped), tuple(added))


_SAME_NAME_LAYERS = [
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "UnitNormalization", "GroupNormalization",
    "ReLU", "PReLU", "ELU", "Softmax", "Activation",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Flatten", "Reshape", "Permute", "RepeatVector",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "ActivityRegularization", "Identity",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Rescaling", "SimpleRNN",
]
LAYER_RULES: dict[str, _LayerRule] = {name: _rule(name) for name in _SAME_NAME_LAYERS}
LAYER_RULES.update({
    "Dense": _rule("Dense", dropped=[("quantization_config", (None,)), ("lora_rank", (None,)), ("lora_alpha", None)]),
    "Embedding": _rule("Embedding", dropped=[("quantization_config", (None,)), ("lora_rank", (None,)),
                                             ("lora_alpha", None)]),
    "Conv3DTranspose": _rule("Conv3DTranspose", dropped=[("dilation_rate", ([1, 1, 1], (1, 1, 1), 1))]),
    "BatchNormalization": _rule("BatchNormalization", dropped=[
        ("renorm", (False,)), ("renorm_clipping", (None,)), ("renorm_momentum", None), ("synchronized", (False,))]),
    "LayerNormalization": _rule("LayerNormalization", dropped=[("rms_scaling", (False,))]),
    "LeakyReLU": _rule("LeakyReLU", renamed=[("negative_slope", "alpha")]),
    "ZeroPadding1D": _rule("ZeroPadding1D", dropped=[("data_format", ("channels_last", None))]),
    "AlphaDropout": _rule("AlphaDropout", dropped=[("noise_shape", (None,))]),
    "LSTM": _rule("LSTM", dropped=[("seed", None), ("use_cudnn", None)]),
    "GRU": _rule("GRU", dropped=[("seed", None), ("use_cudnn", None)]),
})
LAYER_RULES["SimpleRNN"] = _rule("SimpleRNN", dropped=[("seed", None)])
# Preprocessing and augmentation layers (augmentation is the identity at inference).
_CHANNELS_LAST = ("data_format", ("channels_last", None))
for _name in ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness",
              "CenterCrop"):
    LAYER_RULES[_name] = _rule(_name, dropped=[_CHANNELS_LAST])
LAYER_RULES["RandomContrast"] = _rule("RandomContrast", dropped=[
    _CHANNELS_LAST, ("value_range", ([0, 255], (0, 255)))])
LAYER_RULES["Resizing"] = _rule("Resizing", dropped=[
    _CHANNELS_LAST, ("antialias", (False,)), ("fill_mode", ("constant",)), ("fill_value", (0.0, 0)),
    ("pad_to_aspect_ratio", (False,))])
LAYER_RULES["Normalization"] = _rule("Normalization")
LAYER_RULES["EinsumDense"] = _rule("EinsumDense", dropped=[("quantization_config", (None,)), ("lora_rank", (None,)),
                                                            ("lora_alpha", None)])
LAYER_RULES["Bidirectional"] = _rule("Bidirectional")
LAYER_RULES["TimeDistributed"] = _rule("TimeDistributed")
WRAPPED_LAYER_KEYS = ("layer", "backward_layer")  # the inner layers of Bidirectional / TimeDistributed


def _translate_wrapped(value: dict) -> dict:
    """The inner layer config of a wrapper layer, translated like a top-level layer."""
    class_name = value["class_name"]
    if str(value.get("module") or "keras.layers").split(".")[0] != "keras":
        raise Untranslatable(f"wrapped layer {class_name} is a custom layer")
    cls, config, expansion = translate_layer_config(class_name, value.get("config") or {})
    if cls is None or expansion is not None:
        raise Untranslatable(f"wrapped layer {class_name} needs an activation tf_keras does not have")
    # Bidirectional prefixes "forward_"/"backward_" to the inner names itself, in both Kerases.
    name = config.get("name", "")
    for prefix in ("forward_", "backward_"):
        if name.startswith(prefix):
            config["name"] = name[len(prefix):]
    return {"class_name": cls.__name__, "config": config}
LAYER_RULES["MultiHeadAttention"] = _rule(
    "MultiHeadAttention",
    dropped=[("seed", None), ("sliding_window", (None,)), ("use_gate", (False,)), ("flash_attention", (None, False))],
    added=[("query_shape", None), ("key_shape", None), ("value_shape", None)],  # built by the first call
)
MODEL_CLASSES = {"Functional", "Sequential", "Model"}

# Why some well-known Keras 3 layers are refused (shown in the error).
_REFUSED_REASONS = {
    "Lambda": "Lambda layers hold Python code that cannot be translated safely",
    "TFSMLayer": "a SavedModel wrapper, not a Keras layer",
    "TorchModuleWrapper": "a PyTorch module",
    "JaxLayer": "a JAX function",
    "FlaxLayer": "a Flax module",
}


def translate_layer_config(class_name: str, config: dict) -> tuple[type, dict, Callable | None]:
    """Keras 3 layer config -> (tf_keras class, tf_keras config, activation expansion or None)."""
    rule = LAYER_RULES.get(class_name)
    if rule is None:
        raise Untranslatable(_REFUSED_REASONS.get(class_name, "no tf_keras equivalent is known to edgeprune"))
    keras = libs.tfk()
    config = dict(config)
    problems = []
    for key, allowed in rule.dropped:
        if key in config:
            value = config.pop(key)
            if allowed is not None and value not in allowed:
                problems.append(f"{key}={value!r} has no tf_keras equivalent")
    for old, new in rule.renamed:
        if old in config:
            config[new] = config.pop(old)
    for key, value in rule.added:
        config.setdefault(key, value)
    expansion = None
    for key, value in list(config.items()):
        try:
            if key == "dtype":
                config[key] = translate_dtype(value)
            elif key == "activation" or key == "recurrent_activation":
                name, exp = _translate_activation(value)
                config[key] = name
                if exp is not None:
                    if key == "recurrent_activation" or class_name.endswith("RNN") or class_name in ("LSTM", "GRU"):
                        raise Untranslatable(f"{key} '{_activation_name(value)}' inside a recurrent layer")
                    expansion = exp
            elif key in WRAPPED_LAYER_KEYS and isinstance(value, dict) and "class_name" in value:
                config[key] = _translate_wrapped(value)
            elif isinstance(value, dict) and "class_name" in value:
                module = str(value.get("module", ""))
                kind = next((m for m in _OBJECT_MODULES if m in module or key.endswith(m[:-1])), None)
                if kind is None:
                    raise Untranslatable(f"argument {key}={value.get('class_name')!r} is not understood")
                config[key] = _translate_object(value, kind)
        except Untranslatable as e:
            problems.append(str(e))
    if problems:
        raise Untranslatable("; ".join(problems))
    if class_name == "Activation" and expansion is not None:
        return None, config, expansion
    cls = getattr(keras.layers, rule.tfk_class)
    return cls, config, expansion


# --- operations Keras 3 records in functional graphs (x + 3.0, x[:, :4], ops.mean, ...)


@functools.lru_cache(maxsize=1)
def tf_ops() -> dict[str, Callable]:
    """Keras 3 operation class -> function(call args..., **constructor config) computing the same
    thing with TensorFlow symbols, which tf_keras records as TFOpLambda layers."""
    tf = libs.tf()

    def getitem(x, key):
        return x[tuple(key) if isinstance(key, list) else key]

    def gelu(x, approximate=True):
        return tf.nn.gelu(x, approximate=approximate)

    def max_(x, axis=None, keepdims=False, initial=None):
        if initial is not None:
            raise TypeError("initial is not supported")
        return tf.math.reduce_max(x, axis=axis, keepdims=keepdims)

    def min_(x, axis=None, keepdims=False, initial=None):
        if initial is not None:
            raise TypeError("initial is not supported")
        return tf.math.reduce_min(x, axis=axis, keepdims=keepdims)

    return {
        "Add": lambda x1, x2: x1 + x2,
        "Subtract": lambda x1, x2: x1 - x2,
        "Multiply": lambda x1, x2: x1 * x2,
        "Divide": lambda x1, x2: x1 / x2,
        "TrueDivide": lambda x1, x2: x1 / x2,
        "Negative": lambda x: -x,
        "Power": lambda x1, x2: x1 ** x2,
        "Absolute": lambda x: tf.math.abs(x),
        "Square": lambda x: tf.math.square(x),
        "Sqrt": lambda x: tf.math.sqrt(x),
        "Exp": lambda x: tf.math.exp(x),
        "Log": lambda x: tf.math.log(x),
        "Tanh": lambda x: tf.math.tanh(x),
        "Maximum": lambda x1, x2: tf.math.maximum(x1, x2),
        "Minimum": lambda x1, x2: tf.math.minimum(x1, x2),
        "Matmul": lambda x1, x2: tf.linalg.matmul(x1, x2),
        "Mean": lambda x, axis=None, keepdims=False: tf.math.reduce_mean(x, axis=axis, keepdims=keepdims),
        "Sum": lambda x, axis=None, keepdims=False: tf.math.reduce_sum(x, axis=axis, keepdims=keepdims),
        "Max": max_,
        "Min": min_,
        "Reshape": lambda x, newshape: tf.reshape(x, newshape),
        "Transpose": lambda x, axes=None: tf.transpose(x, perm=axes),
        "Concatenate": lambda xs, axis=0: tf.concat(list(xs), axis=axis),
        "ExpandDims": lambda x, axis: tf.expand_dims(x, axis),
        "Squeeze": lambda x, axis=None: tf.squeeze(x, axis=axis),
        "Clip": lambda x, x_min, x_max: tf.clip_by_value(x, x_min, x_max),
        "GetItem": getitem,
        "Cast": lambda x, dtype: tf.cast(x, dtype),
        "Relu": lambda x: tf.nn.relu(x),
        "Relu6": lambda x: tf.nn.relu6(x),
        "Sigmoid": lambda x: tf.math.sigmoid(x),
        "Silu": lambda x: tf.nn.silu(x),
        "LeakyRelu": lambda x, negative_slope=0.2: tf.nn.leaky_relu(x, alpha=negative_slope),
        "Softmax": lambda x, axis=-1: tf.nn.softmax(x, axis=axis),
        "LogSoftmax": lambda x, axis=-1: tf.nn.log_softmax(x, axis=axis),
        "Gelu": gelu,
        "HardSigmoid": "hard_sigmoid",  # expanded into layers, see EXPANDED_ACTIVATIONS
        "HardSilu": "hard_silu",
    }


KERAS3_OP_MODULES = ("numpy", "nn", "core", "math", "linalg", "image")


def short(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."

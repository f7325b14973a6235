"""Keras 3 models in and out of tf_keras.

TF-MOT works only on tf_keras (Keras 2) models, while most models are now trained and saved
with Keras 3. This module reads a Keras 3 `.keras` archive or `.h5` file, translates its
functional or Sequential config layer by layer into tf_keras (class names, renamed and dropped
arguments, dtype policies, initializer/regularizer/constraint configs, `InputLayer`, and the
operations Keras 3 records where tf_keras records layers or TFOpLambda), copies the weights layer
by layer, and proves the translation: on a batch of random inputs the tf_keras model must give
the Keras 3 model's outputs within a stated fp32 tolerance, or it is refused with the name of the
layer where the outputs first diverge. `save_keras3` goes the other way for export.

The tolerance is atol (1e-4) for outputs up to 1 and atol relative to the largest output above
that: fp32 rounding grows with the numbers, and random-weight logits reach the tens. Measured
differences are far below it (MobileNetV2/V3 logits: about 2e-5 at |output| 25-40; softmax
outputs: 1e-7 or exactly 0).

Keras 3 and tf_keras live in the same process here (measured with TensorFlow 2.21, Keras 3.15,
tf_keras 2.21 and TF-MOT 0.8.1): objects never cross between them, only plain configs (dicts)
and NumPy arrays do.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeprune import progress
from edgeprune.errors import InputFileError, ModelError, OutputError, SchemaError

__all__ = ["Keras3Translation", "is_keras3_file", "load_keras3", "save_keras3", "DEFAULT_ATOL"]

SCHEMA_VERSION = 1
DEFAULT_ATOL = 1e-4
DEFAULT_CHECK_BATCH = 8
_SEED = 20240611
_KERAS_ARCHIVE_FILES = {"config.json", "metadata.json", "model.weights.h5"}


# --------------------------------------------------------------------------------------------
# The result value


@dataclasses.dataclass(frozen=True)
class Keras3Translation:
    """What `load_keras3` did: where the model came from and how closely the translation matches."""

    source_format: str  # "keras" (zip archive) or "h5"
    keras_version: str
    layers_translated: int  # Keras 3 layers (nested models included, inputs excluded)
    ops_translated: int  # Keras 3 operations rewritten as tf_keras TFOpLambda layers
    max_abs_diff: float  # over all outputs, on `check_batch` random inputs
    tolerance: float  # the absolute bound applied: atol * max(1, output_scale)
    atol: float
    output_scale: float  # largest |output| of the Keras 3 model on the check inputs
    check_batch: int
    notes: tuple = ()  # what the translation changed on purpose (e.g. mixed precision -> float32)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return {"schema_version": SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict) -> "Keras3Translation":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"Keras 3 translation record has schema_version {version!r}, expected {SCHEMA_VERSION}",
                hint="re-run the translation with this edgeprune version",
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"schema_version"})
        missing = sorted(fields - set(data))
        if unknown or missing:
            raise SchemaError(
                f"Keras 3 translation record has unknown keys {unknown} and missing keys {missing}",
                hint="the record is corrupt; re-run the translation",
            )
        values = {k: data[k] for k in fields}
        values["notes"] = tuple(values["notes"])
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Detecting and reading Keras 3 files (no Keras import needed)


@dataclasses.dataclass(frozen=True)
class _Source:
    path: Path
    format: str  # "keras" | "h5"
    keras_version: str
    config: dict  # the model config: {"class_name", "config", ...}


def _is_keras3_version(version: Any) -> bool:
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    if not isinstance(version, str):
        return False
    major = version.split(".", 1)[0]
    return major.isdigit() and int(major) >= 3


def _h5_attr(attrs, key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def is_keras3_file(path) -> bool:
    """True for a `.keras` zip archive (config.json, metadata.json, model.weights.h5) saved by
    Keras >= 3, or an HDF5 model file whose `keras_version` attribute is >= 3. Decided by the
    file's content, not its name; a missing or unreadable file is not a Keras 3 file."""
    p = Path(path)
    if not p.is_file():
        return False
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as archive:
                if not _KERAS_ARCHIVE_FILES <= set(archive.namelist()):
                    return False
                metadata = json.loads(archive.read("metadata.json"))
        except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError):
            return False
        return isinstance(metadata, dict) and _is_keras3_version(metadata.get("keras_version"))
    import h5py

    if not h5py.is_hdf5(p):
        return False
    try:
        with h5py.File(p, "r") as f:
            return "model_config" in f.attrs and _is_keras3_version(_h5_attr(f.attrs, "keras_version"))
    except OSError:
        return False


def _read_source(path: Path) -> _Source:
    if not path.is_file():
        raise InputFileError(f"model file {path} does not exist", hint="check the path")
    if not is_keras3_file(path):
        raise InputFileError(
            f"{path} is not a model saved by Keras 3 (a .keras archive or .h5 with keras_version >= 3)",
            hint="load tf_keras models with the ordinary model loader",
        )
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                metadata = json.loads(archive.read("metadata.json"))
                config = json.loads(archive.read("config.json"))
            return _Source(path, "keras", str(metadata["keras_version"]), config)
        import h5py

        with h5py.File(path, "r") as f:
            version = _h5_attr(f.attrs, "keras_version")
            config = json.loads(_h5_attr(f.attrs, "model_config"))
        return _Source(path, "h5", version, config)
    except (OSError, KeyError, json.JSONDecodeError, zipfile.BadZipFile) as e:
        raise InputFileError(
            f"cannot read the Keras 3 model file {path}: {e}", hint="the file looks corrupt; save it again"
        ) from e


# --------------------------------------------------------------------------------------------
# Translation tables: Keras 3 -> tf_keras


class _Untranslatable(Exception):
    """One reason a single layer cannot be translated; collected, never shown alone."""


# Keras 3 activation names whose tf_keras function of the same name computes the same thing.
_SAME_ACTIVATIONS = {
    "linear", "relu", "elu", "selu", "softplus", "softsign", "tanh", "sigmoid", "exponential",
    "softmax", "gelu", "mish", "swish", "relu6", "leaky_relu", "log_softmax",
}
_RENAMED_ACTIVATIONS = {"silu": "swish"}


def _tfk():
    from edgeprune._tf import keras

    return keras


def _tf():
    from edgeprune._tf import tf

    return tf


def _hard_sigmoid(x, base: str, fresh: Callable[[str], str]):
    """Keras 3 hard_sigmoid, relu6(x + 3) / 6, built as tf_keras writes it in MobileNetV3 (the
    TFLite converter recognises this pattern). tf_keras' own `hard_sigmoid` is a different
    function (slope 0.2), so it must not be used."""
    keras = _tfk()
    return keras.layers.ReLU(6.0, name=fresh(f"{base}_relu6"))(x + 3.0) * (1.0 / 6.0)


def _hard_silu(x, base: str, fresh: Callable[[str], str]):
    keras = _tfk()
    return keras.layers.Multiply(name=fresh(f"{base}_hard_swish"))([x, _hard_sigmoid(x, base, fresh)])


_EXPANDED_ACTIVATIONS: dict[str, Callable] = {
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
    raise _Untranslatable(f"activation {value!r} is not a built-in Keras activation")


def _translate_activation(value) -> tuple[str, Callable | None]:
    """(tf_keras activation name, expansion or None). An expansion means: use "linear" in the
    layer and apply the expansion to its output."""
    name = _activation_name(value)
    if name in _SAME_ACTIVATIONS:
        return name, None
    if name in _RENAMED_ACTIVATIONS:
        return _RENAMED_ACTIVATIONS[name], None
    if name in _EXPANDED_ACTIVATIONS:
        return "linear", _EXPANDED_ACTIVATIONS[name]
    raise _Untranslatable(f"activation '{name}' has no tf_keras equivalent")


_MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
MIXED_PRECISION_NOTE = (
    "mixed-precision layers are translated to float32 (their weights are float32 already) and checked against "
    "the Keras 3 model computed in float32"
)


def _dtype_name(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
        return (value.get("config") or {}).get("name")
    return None


def _translate_dtype(value):
    """Keras 3 DTypePolicy dicts -> plain dtype strings. Mixed precision becomes float32: edge
    exports are float32 or quantized, and a CPU computes float16 slowly and differently."""
    if value is None:
        return value
    if isinstance(value, str):  # a plain dtype (inputs may be int32, bool, ...)
        return "float32" if value in _MIXED_POLICIES else value
    name = _dtype_name(value)
    if name in _MIXED_POLICIES:
        return "float32"
    if name in ("float16", "float32", "float64", "bfloat16"):
        return name
    if name is not None:
        raise _Untranslatable(f"dtype policy '{name}' has no tf_keras equivalent")
    if isinstance(value, dict) and "Quantized" in str(value.get("class_name")):
        raise _Untranslatable("the layer is quantized by Keras 3 (quantized dtype policy)")
    raise _Untranslatable(f"dtype {value!r} is not understood")


_OBJECT_MODULES = {"initializers", "regularizers", "constraints"}


def _translate_object(value, kind: str):
    """A Keras 3 initializer/regularizer/constraint config -> a tf_keras one. Arguments tf_keras
    does not have are dropped only while they hold None (their "off" value)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        raise _Untranslatable(f"{kind} {value!r} is not understood")
    class_name = value["class_name"]
    module = getattr(_tfk(), kind)
    cls = getattr(module, class_name, None)
    if cls is None or not inspect.isclass(cls):
        raise _Untranslatable(f"{kind[:-1]} '{class_name}' has no tf_keras equivalent")
    config = dict(value.get("config") or {})
    params = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in list(config):
        if key not in params and not takes_kwargs:
            if config[key] is not None:
                raise _Untranslatable(f"{kind[:-1]} {class_name} argument {key}={config[key]!r} has no tf_keras equivalent")
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
_LAYER_RULES: dict[str, _LayerRule] = {name: _rule(name) for name in _SAME_NAME_LAYERS}
_LAYER_RULES.update({
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
_LAYER_RULES["SimpleRNN"] = _rule("SimpleRNN", dropped=[("seed", None)])
# Preprocessing and augmentation layers (augmentation is the identity at inference).
_CHANNELS_LAST = ("data_format", ("channels_last", None))
for _name in ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness",
              "CenterCrop"):
    _LAYER_RULES[_name] = _rule(_name, dropped=[_CHANNELS_LAST])
_LAYER_RULES["RandomContrast"] = _rule("RandomContrast", dropped=[
    _CHANNELS_LAST, ("value_range", ([0, 255], (0, 255)))])
_LAYER_RULES["Resizing"] = _rule("Resizing", dropped=[
    _CHANNELS_LAST, ("antialias", (False,)), ("fill_mode", ("constant",)), ("fill_value", (0.0, 0)),
    ("pad_to_aspect_ratio", (False,))])
_LAYER_RULES["Normalization"] = _rule("Normalization")
_LAYER_RULES["EinsumDense"] = _rule("EinsumDense", dropped=[("quantization_config", (None,)), ("lora_rank", (None,)),
                                                            ("lora_alpha", None)])
_LAYER_RULES["Bidirectional"] = _rule("Bidirectional")
_LAYER_RULES["TimeDistributed"] = _rule("TimeDistributed")
_WRAPPED_LAYER_KEYS = ("layer", "backward_layer")  # the inner layers of Bidirectional / TimeDistributed


def _translate_wrapped(value: dict) -> dict:
    """The inner layer config of a wrapper layer, translated like a top-level layer."""
    class_name = value["class_name"]
    if str(value.get("module") or "keras.layers").split(".")[0] != "keras":
        raise _Untranslatable(f"wrapped layer {class_name} is a custom layer")
    cls, config, expansion = _translate_layer_config(class_name, value.get("config") or {})
    if cls is None or expansion is not None:
        raise _Untranslatable(f"wrapped layer {class_name} needs an activation tf_keras does not have")
    # Bidirectional prefixes "forward_"/"backward_" to the inner names itself, in both Kerases.
    name = config.get("name", "")
    for prefix in ("forward_", "backward_"):
        if name.startswith(prefix):
            config["name"] = name[len(prefix):]
    return {"class_name": cls.__name__, "config": config}
_LAYER_RULES["MultiHeadAttention"] = _rule(
    "MultiHeadAttention",
    dropped=[("seed", None), ("sliding_window", (None,)), ("use_gate", (False,)), ("flash_attention", (None, False))],
    added=[("query_shape", None), ("key_shape", None), ("value_shape", None)],  # built by the first call
)
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}

# Why some well-known Keras 3 layers are refused (shown in the error).
_REFUSED_REASONS = {
    "Lambda": "Lambda layers hold Python code that cannot be translated safely",
    "TFSMLayer": "a SavedModel wrapper, not a Keras layer",
    "TorchModuleWrapper": "a PyTorch module",
    "JaxLayer": "a JAX function",
    "FlaxLayer": "a Flax module",
}


def _translate_layer_config(class_name: str, config: dict) -> tuple[type, dict, Callable | None]:
    """Keras 3 layer config -> (tf_keras class, tf_keras config, activation expansion or None)."""
    rule = _LAYER_RULES.get(class_name)
    if rule is None:
        raise _Untranslatable(_REFUSED_REASONS.get(class_name, "no tf_keras equivalent is known to edgeprune"))
    keras = _tfk()
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
                config[key] = _translate_dtype(value)
            elif key == "activation" or key == "recurrent_activation":
                name, exp = _translate_activation(value)
                config[key] = name
                if exp is not None:
                    if key == "recurrent_activation" or class_name.endswith("RNN") or class_name in ("LSTM", "GRU"):
                        raise _Untranslatable(f"{key} '{_activation_name(value)}' inside a recurrent layer")
                    expansion = exp
            elif key in _WRAPPED_LAYER_KEYS and isinstance(value, dict) and "class_name" in value:
                config[key] = _translate_wrapped(value)
            elif isinstance(value, dict) and "class_name" in value:
                module = str(value.get("module", ""))
                kind = next((m for m in _OBJECT_MODULES if m in module or key.endswith(m[:-1])), None)
                if kind is None:
                    raise _Untranslatable(f"argument {key}={value.get('class_name')!r} is not understood")
                config[key] = _translate_object(value, kind)
        except _Untranslatable as e:
            problems.append(str(e))
    if problems:
        raise _Untranslatable("; ".join(problems))
    if class_name == "Activation" and expansion is not None:
        return None, config, expansion
    cls = getattr(keras.layers, rule.tfk_class)
    return cls, config, expansion


# --- operations Keras 3 records in functional graphs (x + 3.0, x[:, :4], ops.mean, ...)


@functools.lru_cache(maxsize=1)
def _tf_ops() -> dict[str, Callable]:
    """Keras 3 operation class -> function(call args..., **constructor config) computing the same
    thing with TensorFlow symbols, which tf_keras records as TFOpLambda layers."""
    tf = _tf()

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
        "HardSigmoid": "hard_sigmoid",  # expanded into layers, see _EXPANDED_ACTIVATIONS
        "HardSilu": "hard_silu",
    }


_KERAS3_OP_MODULES = ("numpy", "nn", "core", "math", "linalg", "image")


# --------------------------------------------------------------------------------------------
# The plan: a Keras 3 model config decoded and translated, before anything is built


@dataclasses.dataclass(frozen=True)
class _Ref:
    """A tensor in the Keras 3 graph: output `tensor` of call `node` of layer `layer`."""

    layer: str
    node: int
    tensor: int


def _decode(value):
    """Node arguments as written by Keras 3 -> Python values with _Ref for tensors."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        class_name = value.get("class_name")
        config = value.get("config") or {}
        if class_name == "__keras_tensor__":
            history = config.get("keras_history")
            if not history:
                raise _Untranslatable("a call argument is a Keras tensor without history")
            return _Ref(history[0], int(history[1]), int(history[2]))
        if class_name == "__slice__":
            return slice(_decode(config.get("start")), _decode(config.get("stop")), _decode(config.get("step")))
        if class_name == "__ellipsis__":
            return Ellipsis
        if class_name in ("__numpy__", "__tensor__"):
            return np.array(config["value"], dtype=config["dtype"])
        if class_name == "__bytes__":
            return config["value"].encode("utf-8")
        if class_name is not None and "config" in value:
            raise _Untranslatable(f"a call argument is a serialized '{class_name}' object")
        return {k: _decode(v) for k, v in value.items()}
    return value


def _map_refs(value, fn):
    if isinstance(value, _Ref):
        return fn(value)
    if isinstance(value, list):
        return [_map_refs(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(_map_refs(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_refs(v, fn) for k, v in value.items()}
    return value


def _refs_in(value) -> list[_Ref]:
    found: list[_Ref] = []
    _map_refs(value, lambda r: found.append(r) or r)
    return found


def _decode_io(value):
    """input_layers / output_layers: a [name, node, tensor] leaf, or lists/dicts of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int):
        return _Ref(value[0], value[1], value[2])
    if isinstance(value, list):
        return [_decode_io(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_io(v) for k, v in value.items()}
    raise _Untranslatable(f"model inputs/outputs {value!r} are not understood")


@dataclasses.dataclass
class _Entry:
    """One layer, operation, input or nested model of a Keras 3 model config."""

    name: str
    class_name: str
    kind: str  # "input" | "layer" | "op" | "model"
    nodes: list  # [(args, kwargs)], tensors in them stand as _Ref markers
    # kind "input"
    batch_shape: tuple | None = None
    dtype: str | None = None
    sparse: bool = False
    # kind "layer"
    tfk_class: type | None = None
    tfk_config: dict | None = None
    expansion: Callable | None = None
    # kind "op"
    op_fn: Callable | None = None
    op_config: dict | None = None
    op_module: str | None = None  # Keras 3 module of the op class, for the reference side
    # kind "model"
    sub: "_ModelPlan | None" = None


@dataclasses.dataclass
class _ModelPlan:
    name: str
    kind: str  # "functional" | "sequential"
    entries: list
    inputs: Any  # structure of _Ref
    outputs: Any  # structure of _Ref

    def walk(self):
        for e in self.entries:
            yield e
            if e.kind == "model":
                yield from e.sub.walk()

    @property
    def as_sequential(self) -> bool:
        """Built as a tf_keras Sequential when every layer maps to exactly one tf_keras layer."""
        return self.kind == "sequential" and all(
            e.kind == "input" or (e.kind == "layer" and e.expansion is None and e.tfk_class is not None)
            or (e.kind == "model" and e.sub is not None)
            for e in self.entries
        )


@dataclasses.dataclass(frozen=True)
class _Problem:
    path: str
    class_name: str
    reason: str

    def __str__(self):
        return f"{self.path} ({self.class_name}: {self.reason})"


def _is_op_entry(entry: dict) -> bool:
    module = entry.get("module")
    if module is not None:
        return str(module).startswith("keras.src.ops") or str(module).startswith("keras.ops")
    # Keras 3 .h5 files drop "module": every layer config has "trainable", no operation's has.
    config = entry.get("config") or {}
    return "trainable" not in config and entry.get("class_name") in _tf_ops()


class _Planner:
    def __init__(self):
        self.problems: list[_Problem] = []
        self.ops = _tf_ops()

    def plan_model(self, config: dict, prefix: str = "") -> _ModelPlan | None:
        class_name = config.get("class_name")
        inner = config.get("config") or {}
        name = inner.get("name", "model")
        path = prefix + name
        if class_name == "Sequential":
            return self._plan_sequential(inner, path)
        if class_name in ("Functional", "Model") and "layers" in inner and "input_layers" in inner:
            return self._plan_functional(inner, path)
        self.problems.append(_Problem(path, str(class_name), "subclassed model: its layers and call() are Python code"))
        return None

    def _plan_functional(self, inner: dict, path: str) -> _ModelPlan:
        entries = []
        for raw in inner["layers"]:
            entry = self._plan_entry(raw, path + "/", raw.get("name") or (raw.get("config") or {}).get("name"))
            if entry is not None:
                entries.append(entry)
        try:
            inputs = _decode_io(inner["input_layers"])
            outputs = _decode_io(inner["output_layers"])
        except _Untranslatable as e:
            self.problems.append(_Problem(path, "Functional", str(e)))
            inputs = outputs = []
        return _ModelPlan(inner.get("name", path), "functional", entries, inputs, outputs)

    def _plan_sequential(self, inner: dict, path: str) -> _ModelPlan | None:
        layers = list(inner.get("layers") or [])
        entries = []
        if layers and layers[0].get("class_name") == "InputLayer":
            first = layers.pop(0)
            entry = self._plan_entry({**first, "inbound_nodes": []}, path + "/", first["config"].get("name"))
        else:
            shape = inner.get("build_input_shape")
            if shape is None:
                self.problems.append(_Problem(path, "Sequential", "the model was never built, so it has no weights"))
                return None
            entry = _Entry(f"{inner.get('name', 'sequential')}_input", "InputLayer", "input", [],
                           batch_shape=tuple(shape), dtype="float32")
        if entry is None:
            return None
        entries.append(entry)
        previous = _Ref(entry.name, 0, 0)
        for raw in layers:
            name = (raw.get("config") or {}).get("name")
            raw = {**raw, "inbound_nodes": []}
            e = self._plan_entry(raw, path + "/", name)
            if e is None:
                continue
            e.nodes = [([previous], {})]
            entries.append(e)
            previous = _Ref(e.name, 0, 0)
        return _ModelPlan(inner.get("name", path), "sequential", entries, _Ref(entries[0].name, 0, 0), previous)

    def _plan_entry(self, raw: dict, prefix: str, name: str | None) -> _Entry | None:
        class_name = str(raw.get("class_name"))
        config = raw.get("config") or {}
        name = name or config.get("name") or "?"
        path = prefix + name
        try:
            nodes = [self._decode_node(n) for n in raw.get("inbound_nodes") or []]
            if class_name == "InputLayer":
                return self._plan_input(name, config)
            if class_name in _MODEL_CLASSES and isinstance(config, dict) and "layers" in config:
                sub = self.plan_model(raw, prefix)
                if sub is None:
                    return None
                return _Entry(name, class_name, "model", nodes, sub=sub)
            if _is_op_entry(raw):
                return self._plan_op(name, class_name, raw, config, nodes)
            module = str(raw.get("module") or "keras.layers")
            registered = str(raw.get("registered_name") or "")
            # Built-in layers live in keras.*; keras_hub/keras_cv/user layers are custom code, and
            # .h5 files name registered custom classes "package>Class".
            if not (module == "keras" or module.startswith("keras.")) or ">" in registered or ">" in class_name:
                raise _Untranslatable("custom layer: its computation is Python code outside Keras")
            tfk_class, tfk_config, expansion = _translate_layer_config(class_name, config)
            if tfk_class is not None:
                try:
                    tfk_class.from_config(dict(tfk_config))
                except (TypeError, ValueError, KeyError) as e:
                    raise _Untranslatable(f"tf_keras refuses the translated config: {_short(e)}") from e
            return _Entry(name, class_name, "layer", nodes, tfk_class=tfk_class, tfk_config=tfk_config,
                          expansion=expansion)
        except _Untranslatable as e:
            self.problems.append(_Problem(path, class_name, str(e)))
            return None

    def _decode_node(self, node):
        if isinstance(node, dict) and "args" in node:
            return list(_decode(node["args"])), dict(_decode(node.get("kwargs") or {}))
        raise _Untranslatable(f"call record {str(node)[:80]} is not in the Keras 3 format")

    def _plan_input(self, name: str, config: dict) -> _Entry:
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        if shape is None:
            raise _Untranslatable("the input has no shape")
        if config.get("ragged"):
            raise _Untranslatable("ragged inputs are not supported")
        if config.get("optional"):
            raise _Untranslatable("optional inputs are not supported")
        return _Entry(name, "InputLayer", "input", [], batch_shape=tuple(shape),
                      dtype=_translate_dtype(config.get("dtype")) or "float32", sparse=bool(config.get("sparse")))

    def _plan_op(self, name, class_name, raw, config, nodes) -> _Entry:
        fn = self.ops.get(class_name)
        if fn is None:
            raise _Untranslatable("Keras 3 operation with no translation in edgeprune")
        op_config = {k: _decode(v) for k, v in config.items() if k != "name"}
        if isinstance(fn, str):  # activation-like ops expanded into layers
            if op_config:
                raise _Untranslatable(f"arguments {sorted(op_config)} are not supported")
            expansion = _EXPANDED_ACTIVATIONS[fn]
            return _Entry(name, class_name, "op", nodes, expansion=expansion, op_config={},
                          op_module=raw.get("module"))
        for args, kwargs in nodes:
            try:
                inspect.signature(fn).bind(*args, **kwargs, **op_config)
            except TypeError as e:
                raise _Untranslatable(f"call arguments not supported: {_short(e)}") from e
        return _Entry(name, class_name, "op", nodes, op_fn=fn, op_config=op_config, op_module=raw.get("module"))


def _plan(source_config: dict) -> tuple[_ModelPlan | None, list[_Problem]]:
    planner = _Planner()
    plan = planner.plan_model(source_config)
    return plan, planner.problems


def _refuse(problems: list[_Problem], path: Path):
    listed = "; ".join(str(p) for p in problems)
    raise ModelError(
        f"cannot translate the Keras 3 model {path.name} to tf_keras: {len(problems)} layer(s) have no "
        f"translation: {listed}",
        hint="replace these layers with built-in Keras layers (or rebuild the model in tf_keras) and save it again",
    )


# --------------------------------------------------------------------------------------------
# Building the tf_keras model from a plan


class _Built:
    """A tf_keras model built from a plan, with the tf_keras tensor of every Keras 3 call."""

    def __init__(self, plan: _ModelPlan, model, tensors: dict, children: dict):
        self.plan = plan
        self.model = model
        self.tensors = tensors  # (layer name, node index) -> tf_keras output structure
        self.children = children  # nested model name -> _Built


def _build(plan: _ModelPlan) -> _Built:
    keras = _tfk()
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
                children[e.name] = _build(e.sub)
                layers[e.name] = children[e.name].model
                if e.sub.kind == "functional":
                    nested_functional.add(e.name)
            pending.extend((e, i) for i in range(len(e.nodes)))

    def lookup(ref: _Ref):
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
            needed = _refs_in((args, kwargs))
            if any((r.layer, r.node) not in tensors for r in needed):
                remaining.append((e, i))
                continue
            args = _map_refs(args, lookup)
            # A recorded `training` (Keras 3 records Dropout's default False, and the transfer-learning
            # `base(x, training=False)`) is only a fallback in Keras 3: a functional model passes its
            # caller's training flag over it, so fit() trains that layer in training mode. tf_keras
            # would pin it instead (and TF-MOT would never update a mask inside), so it is dropped.
            kwargs = {k: v for k, v in _map_refs(kwargs, lookup).items() if v is not None and k != "training"}
            tensors[(e.name, i)] = _apply(e, layers.get(e.name), args, kwargs, fresh)
            progressed = True
        if not progressed:
            names = sorted({e.name for e, _ in remaining})
            raise ModelError(f"the Keras 3 model {plan.name} has calls whose inputs never appear: {names}",
                             hint="the model config is inconsistent; save the model again with Keras 3")
        pending = remaining

    def io(ref: _Ref):
        # input_layers/output_layers count a nested functional model's own construction as node 0
        node = ref.node - 1 if ref.layer in nested_functional else ref.node
        return lookup(_Ref(ref.layer, node, ref.tensor))

    inputs = _map_refs(plan.inputs, io)
    outputs = _map_refs(plan.outputs, io)
    model = keras.Model(inputs=inputs, outputs=outputs, name=plan.name)
    return _Built(plan, model, tensors, children)


def _build_sequential(plan: _ModelPlan) -> _Built:
    keras = _tfk()
    first = plan.entries[0]
    model = keras.Sequential(name=plan.name)
    model.add(keras.Input(batch_shape=first.batch_shape, dtype=first.dtype, sparse=first.sparse, name=first.name))
    children = {}
    for e in plan.entries[1:]:
        if e.kind == "model":
            children[e.name] = _build(e.sub)
            model.add(children[e.name].model)
        else:
            model.add(e.tfk_class.from_config(dict(e.tfk_config)))
    tensors = {(first.name, 0): model.inputs[0]}
    for e, layer in zip(plan.entries[1:], model.layers):
        tensors[(e.name, 0)] = layer.output if e.kind != "model" else model.get_layer(e.name).get_output_at(-1)
    return _Built(plan, model, tensors, children)


def _apply(e: _Entry, layer, args, kwargs, fresh: Callable[[str], str]):
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


# --------------------------------------------------------------------------------------------
# The Keras 3 side: load the reference model


def _keras3():
    _tf()  # TF_USE_LEGACY_KERAS must be set before TensorFlow is imported
    try:
        import keras
    except ImportError as e:
        raise ModelError("Keras 3 is not installed, and it is needed to read or write Keras 3 models",
                         hint="pip install 'keras>=3'") from e
    if not _is_keras3_version(getattr(keras, "__version__", "")):
        raise ModelError(f"`import keras` gives Keras {getattr(keras, '__version__', '?')}, not Keras 3",
                         hint="pip install 'keras>=3'")
    return keras


def _k3_op_class(class_name: str, module: str | None):
    import importlib

    keras = _keras3()
    if module:
        try:
            return getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError):
            pass
    for m in _KERAS3_OP_MODULES:
        mod = importlib.import_module(f"keras.src.ops.{m}")
        cls = getattr(mod, class_name, None)
        if inspect.isclass(cls) and issubclass(cls, keras.Operation):
            return cls
    raise ModelError(f"Keras {keras.__version__} has no operation {class_name}",
                     hint="save the model with the Keras version that wrote it")


def _repair_h5_config(config):
    """Keras 3 writes .h5 configs without the module of each operation and then cannot read
    them back (it takes `x + 3.0` for an Add layer). Put the module back so Keras 3 can
    rebuild the reference model."""
    if isinstance(config, list):
        return [_repair_h5_config(c) for c in config]
    if not isinstance(config, dict):
        return config
    out = {k: _repair_h5_config(v) for k, v in config.items()}
    if "inbound_nodes" in out and "module" not in out and _is_op_entry(out):
        cls = _k3_op_class(out["class_name"], None)
        out["module"] = cls.__module__
        out["registered_name"] = out["class_name"]
    return out


def _short(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _uses_mixed_precision(config) -> bool:
    if isinstance(config, dict):
        if _dtype_name(config) in _MIXED_POLICIES and "class_name" in config:
            return True
        return any(_uses_mixed_precision(v) for v in config.values())
    if isinstance(config, list):
        return any(_uses_mixed_precision(v) for v in config)
    return False


def _float32_policies(config):
    """The config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if "class_name" in config and _dtype_name(config) in _MIXED_POLICIES:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    return config


def _load_reference(source: _Source):
    """The Keras 3 model the translation is checked against: Keras 3's own reading of the file
    (for mixed-precision models, the same model computed in float32)."""
    keras = _keras3()
    mixed = _uses_mixed_precision(source.config)
    try:
        if source.format == "keras" and not mixed:
            return keras.saving.load_model(source.path, compile=False, safe_mode=True)
        if source.format == "keras":
            model = keras.models.model_from_json(json.dumps(_float32_policies(source.config)))
            model.load_weights(str(source.path))
            return model
        config = _repair_h5_config(_float32_policies(source.config) if mixed else source.config)
        # The top level needs a module for the public loader; inner layers keep the legacy form.
        config.setdefault("module", "keras.src.models.functional" if config.get("class_name") != "Sequential"
                          else "keras")
        config.setdefault("registered_name", config.get("class_name"))
        model = keras.models.model_from_json(json.dumps(config))
        model.load_weights(str(source.path))
        return model
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise ModelError(
            f"Keras {keras.__version__} cannot load {source.path.name}: {_short(e)}",
            hint="load and re-save the model with the Keras version that wrote it",
        ) from e


# --------------------------------------------------------------------------------------------
# Weights, layer by layer


def _weight_key(name: str, layer_name: str) -> str:
    """A weight's name inside its layer: "query/kernel" for both "mha/query/kernel:0" (tf_keras)
    and "model/mha/query/kernel" (Keras 3)."""
    name = name.split(":")[0]
    marker = layer_name + "/"
    if marker in name:
        return name[name.rindex(marker) + len(marker):]
    return name.rsplit("/", 1)[-1]


def _copy_weights(src_layer, dst_layer, src_names, dst_names, label: str):
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


def _k3_weight_names(layer) -> list[str]:
    return [getattr(w, "path", None) or w.name for w in layer.weights]


def _tfk_weight_names(layer) -> list[str]:
    return [w.name for w in layer.weights]


def _transfer_k3_to_tfk(plan: _ModelPlan, k3_model, tfk_model, prefix=""):
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
            _transfer_k3_to_tfk(e.sub, src, dst, prefix + e.name + "/")
        elif src.weights or dst.weights:
            _copy_weights(src, dst, _k3_weight_names(src), _tfk_weight_names(dst), prefix + e.name)


# --------------------------------------------------------------------------------------------
# Proof: outputs equal on random inputs, or the first layer where they diverge


def _random_inputs(shapes_dtypes: list[tuple[tuple, str]], batch: int, fill: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(_SEED)
    arrays = []
    for shape, dtype in shapes_dtypes:
        first = batch if shape[0] is None else int(shape[0])  # a fixed batch size is kept
        dims = [first] + [fill if d is None else int(d) for d in shape[1:]]
        if "int" in dtype:
            arrays.append(rng.integers(0, 2, size=dims).astype(dtype))
        elif dtype == "bool":
            arrays.append(rng.integers(0, 2, size=dims).astype(bool))
        else:
            arrays.append(rng.standard_normal(dims).astype(dtype))
    return arrays


def _flat_numpy(value) -> list[np.ndarray]:
    tf = _tf()
    return [np.asarray(v) for v in tf.nest.flatten(value)]


def _peak(value) -> float:
    return max((float(np.max(np.abs(v))) for v in _flat_numpy(value) if v.size), default=0.0)


def _bound(atol: float, reference) -> float:
    """fp32 rounding grows with the size of the numbers: the allowed difference is atol for
    values up to 1 and atol relative to the largest reference value above that."""
    return float(atol) * max(1.0, _peak(reference))


def _max_abs_diff(a, b) -> float:
    fa, fb = _flat_numpy(a), _flat_numpy(b)
    if len(fa) != len(fb):
        return float("inf")
    worst = 0.0
    for x, y in zip(fa, fb):
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst


def _input_spread(plan: _ModelPlan, input_name: str) -> float:
    """An input that goes straight into a Rescaling layer or preprocess_input's `x / 127.5`
    (image models: 0..255 -> -1..1) gets random values spread by 1/scale, so the check exercises
    the range the model expects."""
    for e in plan.entries:
        if not e.nodes or not any(r.layer == input_name for r in _refs_in(e.nodes[0])):
            continue
        scale = None
        if e.class_name == "Rescaling":
            scale = (e.tfk_config or {}).get("scale")
        elif e.class_name in ("TrueDivide", "Divide") and len(e.nodes[0][0]) == 2:
            divisor = e.nodes[0][0][1]
            scale = 1.0 / divisor if isinstance(divisor, (int, float)) and divisor != 0 else None
        elif e.class_name == "Multiply" and e.kind == "op" and len(e.nodes[0][0]) == 2:
            scale = next((a for a in e.nodes[0][0] if isinstance(a, (int, float))), None)
        if isinstance(scale, (int, float)) and 0 < abs(scale) < 1:
            return 1.0 / abs(float(scale))
    return 1.0


def _inputs_for(plan: _ModelPlan, batch: int) -> tuple[Any, dict]:
    """Random arrays for a plan's inputs, as the structure the model is called with, and by name."""
    by_entry = {e.name: e for e in plan.entries if e.kind == "input"}
    refs = _refs_in(plan.inputs)
    arrays = _random_inputs([(by_entry[r.layer].batch_shape, by_entry[r.layer].dtype) for r in refs], batch)
    arrays = [a * _input_spread(plan, r.layer) if a.dtype.kind == "f" else a for r, a in zip(refs, arrays)]
    by_name = {r.layer: a for r, a in zip(refs, arrays)}
    structure = _map_refs(plan.inputs, lambda r: by_name[r.layer])
    return structure, by_name


def _call_k3(model, x):
    return model(x, training=False)


def _k3_replay(plan: _ModelPlan, k3_model, inputs_by_name: dict) -> dict:
    """Run the Keras 3 model call by call, eagerly: (layer name, node) -> output values."""
    keras = _keras3()
    values = {(name, 0): keras.ops.convert_to_tensor(v) for name, v in inputs_by_name.items()}
    ops = {}

    def lookup(ref: _Ref):
        out = values[(ref.layer, ref.node)]
        return out[ref.tensor] if isinstance(out, (list, tuple)) else out

    pending = [(e, i) for e in plan.entries if e.kind != "input" for i in range(len(e.nodes))]
    while pending:
        remaining = []
        for e, i in pending:
            args, kwargs = e.nodes[i]
            if any((r.layer, r.node) not in values for r in _refs_in((args, kwargs))):
                remaining.append((e, i))
                continue
            args = _map_refs(args, lookup)
            kwargs = {k: v for k, v in _map_refs(kwargs, lookup).items() if v is not None}
            if e.kind == "op":
                if e.name not in ops:
                    ops[e.name] = _k3_op_class(e.class_name, e.op_module)(**e.op_config)
                values[(e.name, i)] = ops[e.name](*args, **kwargs)
            else:
                values[(e.name, i)] = k3_model.get_layer(e.name)(*args, **kwargs)
        if len(remaining) == len(pending):
            break
        pending = remaining
    return values


def _tfk_values(built: _Built, x) -> dict:
    keras = _tfk()
    keys = [k for k in built.tensors if k[0] in {e.name for e in built.plan.entries if e.kind != "input"}]
    probe = keras.Model(built.model.inputs, [built.tensors[k] for k in keys])
    outs = probe(x, training=False)
    if len(keys) == 1:
        outs = [outs]
    return dict(zip(keys, outs))


def _first_divergence(built: _Built, k3_model, inputs_by_name: dict, x, atol: float, prefix="") -> str | None:
    """Name (path) of the first call, in graph order, whose outputs differ by more than atol."""
    plan = built.plan
    k3_vals = _k3_replay(plan, k3_model, inputs_by_name)
    tfk_vals = _tfk_values(built, x)
    for e in plan.entries:
        if e.kind == "input":
            continue
        for i in range(len(e.nodes)):
            key = (e.name, i)
            if key not in k3_vals or key not in tfk_vals:
                continue
            if _max_abs_diff(k3_vals[key], tfk_vals[key]) > _bound(atol, k3_vals[key]):
                label = f"{prefix}{e.name} ({e.class_name})"
                if e.kind == "model" and i == 0:
                    sub_inputs = _node_inputs(e, k3_vals)
                    if sub_inputs is not None:
                        child = built.children[e.name]
                        sub_by_name = dict(zip([r.layer for r in _refs_in(e.sub.inputs)], sub_inputs))
                        sub_x = _map_refs(e.sub.inputs, lambda r: np.asarray(sub_by_name[r.layer]))
                        inner = _first_divergence(child, k3_model.get_layer(e.name), sub_by_name, sub_x, atol,
                                                  prefix + e.name + "/")
                        if inner is not None:
                            return inner
                return label
    return None


def _node_inputs(e: _Entry, values: dict):
    args, _ = e.nodes[0]
    flat = []
    for r in _refs_in(args):
        out = values.get((r.layer, r.node))
        if out is None:
            return None
        flat.append(out[r.tensor] if isinstance(out, (list, tuple)) else out)
    return [np.asarray(v) for v in flat]


def _verify(built: _Built, k3_model, batch: int, atol: float, label: str) -> tuple[float, float, float]:
    """(max abs difference, bound applied, output scale), or ModelError naming the first
    diverging layer."""
    x, by_name = _inputs_for(built.plan, batch)
    expected = _call_k3(k3_model, x)
    got = built.model(x, training=False)
    diff = _max_abs_diff(expected, got)
    bound = _bound(atol, expected)
    if not diff <= bound:
        try:
            where = _first_divergence(built, k3_model, by_name, x, atol)
            place = f"outputs first diverge at layer {where}" if where else "no single layer diverges (wiring differs)"
        except (ValueError, TypeError, KeyError) as e:
            place = f"the diverging layer could not be located: {_short(e, 160)}"
        raise ModelError(
            f"the tf_keras translation of {label} differs from the Keras 3 model by {diff:.3g} on random inputs "
            f"(tolerance {bound:.3g}); {place}",
            hint="this layer's translation is wrong; report it, or rebuild the model in tf_keras",
        )
    return diff, bound, _peak(expected)


# --------------------------------------------------------------------------------------------
# Public API: Keras 3 file -> tf_keras model


def _check_args(check_batch, atol):
    if not isinstance(check_batch, int) or isinstance(check_batch, bool) or check_batch < 1:
        raise ModelError(f"check_batch must be a positive integer, got {check_batch!r}", hint="use e.g. 8")
    if not isinstance(atol, (int, float)) or not atol > 0:
        raise ModelError(f"atol must be a positive number, got {atol!r}", hint=f"use e.g. {DEFAULT_ATOL:g}")


def load_keras3(path, check_batch: int = DEFAULT_CHECK_BATCH, atol: float = DEFAULT_ATOL):
    """Read a model saved by Keras 3 and return (tf_keras model, Keras3Translation).

    Every layer is translated or the model is refused with a ModelError naming every layer that
    cannot be translated. The tf_keras model's outputs are checked against the Keras 3 model's
    on `check_batch` random inputs (standard normal; spread by 1/scale when an input feeds a
    Rescaling layer): a difference above atol * max(1, largest |output|) is refused with the
    layer where the outputs first diverge."""
    _check_args(check_batch, atol)
    path = Path(path)
    source = _read_source(path)
    progress.log(f"{path.name}: saved by Keras {source.keras_version}, translating to tf_keras")
    plan, problems = _plan(source.config)
    if problems or plan is None:
        _refuse(problems, path)
    layer_count = sum(1 for e in plan.walk() if e.kind in ("layer", "model"))
    op_count = sum(1 for e in plan.walk() if e.kind == "op")
    with progress.task("Translating Keras 3 model", total=3) as task:
        k3_model = _load_reference(source)
        task.advance(status="Keras 3 model loaded")
        built = _build(plan)
        _transfer_k3_to_tfk(plan, k3_model, built.model)
        task.advance(status="tf_keras model built")
        diff, bound, scale = _verify(built, k3_model, check_batch, atol, path.name)
        task.advance(status=f"outputs agree within {diff:.2g}")
    info = Keras3Translation(
        source_format=source.format,
        keras_version=source.keras_version,
        layers_translated=layer_count,
        ops_translated=op_count,
        max_abs_diff=diff,
        tolerance=bound,
        atol=float(atol),
        output_scale=scale,
        check_batch=check_batch,
        notes=_notes(plan, source),
    )
    return built.model, info


def _notes(plan: _ModelPlan, source: _Source) -> tuple[str, ...]:
    """What the translation changed on purpose, for the report."""
    notes = []
    if _uses_mixed_precision(source.config):
        notes.append(MIXED_PRECISION_NOTE)
    expanded = sorted({e.name for e in plan.walk() if e.expansion is not None})
    if expanded:
        notes.append(f"{len(expanded)} hard_sigmoid/hard_swish activation(s) rebuilt from tf_keras layers as tf_keras' "
                     f"MobileNetV3 writes them (relu6(x + 3) / 6), e.g. {', '.join(expanded[:3])}")
    pinned = sorted({e.name for e in plan.walk()
                     if e.kind == "model" and any(kw.get("training") is not None for _, kw in e.nodes)})
    if pinned:
        notes.append(f"nested model(s) {', '.join(pinned)} called with a fixed `training`: dropped, as Keras 3 passes "
                     "the caller's flag over it (fit() trains them in training mode) and the translation does too")
    regrouped = [p.name for p in [plan, *(e.sub for e in plan.walk() if e.kind == "model")]
                 if p.kind == "sequential" and not p.as_sequential]
    if regrouped:
        notes.append(f"Sequential model(s) {', '.join(regrouped)} rebuilt as functional: an expanded activation "
                     "needs a branch")
    return tuple(notes)


# --------------------------------------------------------------------------------------------
# tf_keras -> Keras 3 (export)

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


def _k3_name(name: str) -> str:
    """Keras 3 refuses "/" in layer names; tf_keras' own MobileNetV3 uses it ("Conv/BatchNorm")."""
    return name.replace("/", "_")


def _reverse_layer_config(layer) -> tuple[type, dict]:
    keras = _keras3()
    class_name = type(layer).__name__
    forward_classes = {r.tfk_class for r in _LAYER_RULES.values()}
    if class_name not in forward_classes or type(layer).__module__.split(".")[0] != "tf_keras":
        hint = "strip TF-MOT wrappers first (strip_pruning)" if "Prune" in class_name or "Quantize" in class_name else \
            "no Keras 3 equivalent is known to edgeprune"
        raise _Untranslatable(hint)
    config = _plain(layer.get_config())
    config["name"] = _k3_name(config.get("name") or layer.name)
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
    for key in _WRAPPED_LAYER_KEYS:
        inner = config.get(key)
        if isinstance(inner, dict) and "class_name" in inner:
            try:
                config[key] = {**inner, "config": _reverse_config(inner["class_name"], dict(inner["config"]))}
            except _Untranslatable as e:
                problems.append(f"wrapped {inner['class_name']}: {e}")
    if problems:
        raise _Untranslatable("; ".join(problems))
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


def _reverse_ops() -> dict[str, Callable]:
    """tf_keras TFOpLambda symbol -> function(bound arguments of the TF symbol) with Keras 3 ops."""
    ops = _keras3().ops

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


class _Exporter:
    """Rebuilds a tf_keras model with Keras 3 layers and ops, node by node."""

    def __init__(self):
        self.problems: list[_Problem] = []
        self.ops = _reverse_ops()

    def model(self, tfk_model, prefix: str = ""):
        keras = _keras3()
        tfk = _tfk()
        path = prefix + tfk_model.name
        if isinstance(tfk_model, tfk.Sequential):
            layers = []
            for layer in tfk_model.layers:
                converted = self.layer(layer, path + "/")
                if converted is not None:
                    layers.append(converted)
            shape = tfk_model.inputs[0].shape.as_list() if tfk_model.inputs else None
            if shape is None:
                self.problems.append(_Problem(path, "Sequential", "the model was never built"))
                return None
            head = keras.Input(batch_shape=tuple(shape), dtype=tfk_model.inputs[0].dtype.name)
            return keras.Sequential([head, *layers], name=_k3_name(tfk_model.name), trainable=tfk_model.trainable)
        if not getattr(tfk_model, "_is_graph_network", False):
            self.problems.append(_Problem(path, type(tfk_model).__name__, "subclassed model"))
            return None
        return self._functional(tfk_model, path)

    def layer(self, layer, prefix: str):
        tfk = _tfk()
        if isinstance(layer, tfk.Model):
            return self.model(layer, prefix)
        try:
            cls, config = _reverse_layer_config(layer)
            return cls.from_config(config)
        except _Untranslatable as e:
            self.problems.append(_Problem(prefix + layer.name, type(layer).__name__, str(e)))
        except (TypeError, ValueError) as e:
            self.problems.append(_Problem(prefix + layer.name, type(layer).__name__,
                                          f"Keras 3 refuses the translated config: {_short(e)}"))
        return None

    def _functional(self, tfk_model, path: str):
        keras = _keras3()
        tf = _tf()
        tensors: dict = {}
        created: dict = {}

        def key_of(t):
            layer, node_index, tensor_index = t._keras_history
            return (layer.name, node_index, tensor_index)

        def convert(value):
            if hasattr(value, "_keras_history"):  # a tf_keras symbolic tensor
                return tensors[key_of(value)]
            if isinstance(value, tf.Tensor):
                array = value.numpy()
                return array.item() if array.ndim == 0 else array
            if isinstance(value, (list, tuple)):
                return type(value)(convert(v) for v in value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        layer_names = {_k3_name(layer.name) for layer in tfk_model.layers}
        depths = sorted(tfk_model._nodes_by_depth, reverse=True)
        failed = False
        for depth in depths:
            for node in tfk_model._nodes_by_depth[depth]:
                layer = node.layer
                if node.is_input:
                    t = node.outputs
                    tensors[key_of(t)] = keras.Input(batch_shape=tuple(t.shape.as_list()), dtype=t.dtype.name,
                                                     name=_k3_name(layer.name))
                    continue
                if layer.name not in created:
                    created[layer.name] = self._callable(layer, path + "/")
                fn = created[layer.name]
                if fn is None:
                    failed = True
                    continue
                if failed:
                    continue
                args = convert(list(node.call_args))
                kwargs = {k: v for k, v in convert(dict(node.call_kwargs)).items() if v is not None}
                try:
                    out = fn(*args, **kwargs)
                except (TypeError, ValueError) as e:
                    self.problems.append(_Problem(path + "/" + layer.name, type(layer).__name__,
                                                  f"cannot be called in Keras 3: {_short(e)}"))
                    failed = True
                    continue
                flat_tfk = tf.nest.flatten(node.outputs)
                flat_k3 = keras.tree.flatten(out)
                for t, o in zip(flat_tfk, flat_k3):
                    tensors[key_of(t)] = o
                    if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
                        self._rename_op(o, layer_names)
        if failed or self.problems:
            return None
        inputs = tf.nest.map_structure(lambda t: tensors[key_of(t)], tfk_model._nested_inputs)
        outputs = tf.nest.map_structure(lambda t: tensors[key_of(t)], tfk_model._nested_outputs)
        return keras.Model(inputs=inputs, outputs=outputs, name=_k3_name(tfk_model.name),
                           trainable=tfk_model.trainable)

    @staticmethod
    def _rename_op(tensor, taken: set):
        """Keras 3 names an operation after its class ("multiply", "multiply_3", ...), which can be
        the name of a tf_keras layer in the same model (tf_keras names Multiply layers alike):
        Keras 3 then refuses the model. Such an operation gets a free name."""
        history = getattr(tensor, "_keras_history", None)
        operation = history[0] if history else None
        if operation is None or operation.name not in taken:
            if operation is not None:
                taken.add(operation.name)
            return
        base, n = operation.name, 1
        while f"{base}_op{n}" in taken:
            n += 1
        operation.name = f"{base}_op{n}"
        taken.add(operation.name)

    def _callable(self, layer, prefix: str):
        tfk = _tfk()
        symbol = getattr(layer, "symbol", None)
        if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
            fn = self.ops.get(symbol)
            if fn is None:
                self.problems.append(_Problem(prefix + layer.name, type(layer).__name__,
                                              f"TensorFlow op tf.{symbol} has no Keras 3 translation"))
                return None
            signature = inspect.signature(layer.function)

            def call(*args, **kwargs):
                bound = signature.bind(*args, **kwargs)
                return fn(**bound.arguments)

            return call
        if isinstance(layer, tfk.layers.InputLayer):
            return None
        return self.layer(layer, prefix)


def _transfer_tfk_to_k3(tfk_model, k3_model, prefix=""):
    tfk = _tfk()
    for layer in tfk_model.layers:
        if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda", "InputLayer"):
            continue
        dst = k3_model.get_layer(_k3_name(layer.name))
        if isinstance(layer, tfk.Model):
            _transfer_tfk_to_k3(layer, dst, prefix + layer.name + "/")
        elif layer.weights or dst.weights:
            _copy_weights(layer, dst, _tfk_weight_names(layer), _k3_weight_names(dst), prefix + layer.name)


def _tfk_model_inputs(model, batch: int):
    shapes = [(tuple(t.shape.as_list()), t.dtype.name) for t in model.inputs]
    arrays = _random_inputs(shapes, batch)
    return arrays[0] if len(arrays) == 1 else arrays


def save_keras3(model, path, check_batch: int = DEFAULT_CHECK_BATCH, atol: float = DEFAULT_ATOL) -> dict:
    """Write a tf_keras model as a Keras 3 `.keras` file (temp name, then rename), after checking
    that the file, read back by Keras 3, gives the tf_keras model's outputs within `atol` on
    `check_batch` random inputs. Returns {"max_abs_diff", "tolerance", "keras_version", "path"}."""
    _check_args(check_batch, atol)
    tfk = _tfk()
    path = Path(path)
    if path.suffix != ".keras":
        raise OutputError(f"a Keras 3 model file must end in .keras, got {path.name}",
                          hint=f"use {path.with_suffix('.keras').name}")
    if not isinstance(model, tfk.Model):
        raise ModelError(f"save_keras3 needs a tf_keras model, got {type(model).__name__}",
                         hint="load the model with edgeprune first")
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist", hint="create it first")
    keras = _keras3()
    exporter = _Exporter()
    with progress.task("Writing Keras 3 model", total=3) as task:
        k3_model = exporter.model(model)
        if exporter.problems or k3_model is None:
            listed = "; ".join(str(p) for p in exporter.problems)
            raise ModelError(
                f"cannot write {model.name} as a Keras 3 model: {len(exporter.problems)} layer(s) have no Keras 3 "
                f"translation: {listed}",
                hint="export it as .tflite or tf_keras .h5 instead",
            )
        _transfer_tfk_to_k3(model, k3_model)
        task.advance(status="Keras 3 model built")
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            keras.saving.save_model(k3_model, tmp, overwrite=True)
            task.advance(status="written")
            reloaded = keras.saving.load_model(tmp, compile=False, safe_mode=True)
            x = _tfk_model_inputs(model, check_batch)
            expected = model(x, training=False)
            diff = _max_abs_diff(expected, _call_k3(reloaded, x))
            bound = _bound(atol, expected)
            if not diff <= bound:
                raise ModelError(
                    f"the Keras 3 file written for {model.name} differs from the tf_keras model by {diff:.3g} on "
                    f"random inputs (tolerance {bound:.3g})",
                    hint="export it as .tflite or tf_keras .h5 instead, and report the model",
                )
            os.replace(tmp, path)
            task.advance(status=f"outputs agree within {diff:.2g}")
        finally:
            if tmp.exists():
                tmp.unlink()
    return {"max_abs_diff": diff, "tolerance": bound, "atol": float(atol), "keras_version": keras.__version__,
            "path": str(path)}

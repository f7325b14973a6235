"""Models in: tf_keras .keras/.h5 files, SavedModel folders, and built-in architectures by name
(random weights: nothing downloads). Keras 3 files, told from tf_keras ones by content
(edgeprune.keras3.detect), are translated by edgeprune.keras3."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.errors import InputFileError, ModelError
from edgeprune.keras3.detect import check_name, model_file

BUILTIN_ARCHITECTURES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


@dataclass
class ModelSource:
    """Where a model came from, recorded in reports."""

    kind: str  # "file" | "savedmodel" | "builtin" | "keras3"
    path: str | None = None
    architecture: str | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "architecture": self.architecture, "details": self.details}


def detect_format(path: Path | str) -> str:
    """'keras' | 'h5' | 'savedmodel' | 'keras3' for a model path, told from the file's content;
    raises InputFileError otherwise, or when Keras could not read the file under its name."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"model file not found: {p}", "check the path, or name a built-in architecture")
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return "savedmodel"
        raise InputFileError(f"{p} is a folder but not a SavedModel (no saved_model.pb)", "check the path")
    file = model_file(p)
    check_name(file)
    return file.format


def load_model(path: Path | str):
    """Loads a model file or folder into tf_keras. Returns (model, ModelSource)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "keras3":
        from edgeprune.keras3.load import load_keras3

        model, info = load_keras3(p)
        check_supported(model)
        return model, ModelSource("keras3", str(p), model.name, info.to_dict())
    from edgeprune._tf import keras

    try:
        model = keras.models.load_model(p, compile=False)
    except (ValueError, TypeError) as e:
        msg = " ".join(str(e).split())
        if "Unknown layer" in msg or "custom" in msg.lower():
            raise ModelError(f"{p} uses a custom layer or class that edgeprune cannot rebuild ({msg[:160]})",
                             "rebuild the model from built-in tf_keras layers") from None
        raise InputFileError(f"cannot load {p}: {msg[:200]}", "the file may be corrupt or truncated") from None
    except (OSError, KeyError, EOFError) as e:
        raise InputFileError(f"cannot load {p}: {' '.join(str(e).split())[:200]}",
                             "the file may be corrupt or truncated: save the model again") from None
    check_supported(model)
    return model, ModelSource("savedmodel" if fmt == "savedmodel" else "file", str(p), model.name)


def check_supported(model) -> None:
    """Functional and Sequential tf_keras models only."""
    from edgeprune._tf import keras

    if not isinstance(model, keras.Model):
        kind = type(model).__module__.split(".")[0]
        if kind == "keras":
            raise ModelError("this is a Keras 3 model, and TF-MOT prunes only tf_keras (Keras 2) models",
                             "save it to a .keras file and load it with edgeprune, which translates Keras 3")
        raise ModelError(f"expected a tf_keras model, got {type(model).__name__}",
                         "load the model with tf_keras or give a .keras/.h5 file")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelError(f"{model.name} is a subclassed model ({type(model).__name__}); TF-MOT and channel pruning "
                         "need the layer graph", "rebuild it with the functional or Sequential API")


def build_builtin(architecture: str, input_shape=(224, 224, 3), classes: int = 1000, alpha: float = 1.0,
                  bn_momentum: float | None = 0.9, dropout: float = 0.0, seed: int = 0):
    """A keras.applications MobileNet with random weights. `bn_momentum` replaces the applications'
    0.999 (which keeps a model trained from scratch at chance accuracy for several epochs)."""
    from edgeprune._tf import keras

    if architecture not in BUILTIN_ARCHITECTURES:
        import difflib

        close = difflib.get_close_matches(architecture, BUILTIN_ARCHITECTURES, n=1)
        raise ModelError(f"unknown architecture {architecture!r}",
                         f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(BUILTIN_ARCHITECTURES)}")
    shape = tuple(int(v) for v in input_shape)
    keras.utils.set_random_seed(seed)
    apps = keras.applications
    common = dict(input_shape=shape, alpha=alpha, weights=None, classes=classes, include_top=True)
    try:
        if architecture == "mobilenet_v1":
            model = apps.MobileNet(dropout=dropout or 1e-3, **common)
        elif architecture == "mobilenet_v2":
            model = apps.MobileNetV2(**common)
        elif architecture == "mobilenet_v3_small":
            model = apps.MobileNetV3Small(dropout_rate=dropout, include_preprocessing=False, **common)
        else:
            model = apps.MobileNetV3Large(dropout_rate=dropout, include_preprocessing=False, **common)
    except ValueError as e:
        raise ModelError(f"cannot build {architecture} with input {shape}, alpha {alpha}: {' '.join(str(e).split())}",
                         "check input_shape and alpha in the recipe's [model] table") from None
    if bn_momentum is not None:
        config = model.get_config()
        for layer in config["layers"]:
            if layer["class_name"] == "BatchNormalization":
                layer["config"]["momentum"] = float(bn_momentum)
        model = keras.Model.from_config(config)
    return model


def io_shape(model) -> tuple[tuple, int]:
    """(input H, W, C) and the number of outputs of a single-input classifier."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
                         "edgeprune's pipeline works on single-input, single-output classifiers")
    in_shape = tuple(model.inputs[0].shape[1:])
    out_shape = tuple(model.outputs[0].shape[1:])
    if len(out_shape) != 1 or out_shape[0] is None:
        raise ModelError(f"{model.name}'s output has shape {out_shape}; expected (classes,)",
                         "end the model with a Dense classifier")
    return in_shape, int(out_shape[0])


def output_is_softmax(model) -> bool:
    """True when the model's outputs are probabilities (rows of non-negative values summing to 1),
    told from the outputs themselves so that wrapped (QAT, pruning) layers do not mislead it."""
    import numpy as np

    shape = [2, *[int(d) if d else 1 for d in model.inputs[0].shape[1:]]]
    probe = np.random.default_rng(0).standard_normal(shape).astype("float32")
    out = np.asarray(model(probe, training=False))
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def count_params(model) -> int:
    return int(sum(int(w.shape.num_elements()) for w in model.weights))

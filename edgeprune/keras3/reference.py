"""The Keras 3 side: the reference model a translation is checked against, as Keras 3 itself
reads the file."""

from __future__ import annotations

import inspect
import json

from edgeprune.errors import ModelError
from edgeprune.keras3 import libs
from edgeprune.keras3.detect import Source
from edgeprune.keras3.plan import is_op_entry
from edgeprune.keras3.rules import KERAS3_OP_MODULES, MIXED_POLICIES, dtype_name, short


def k3_op_class(class_name: str, module: str | None):
    import importlib

    keras = libs.keras3()
    if module:
        try:
            return getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError):
            pass
    for m in KERAS3_OP_MODULES:
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
    if "inbound_nodes" in out and "module" not in out and is_op_entry(out):
        cls = k3_op_class(out["class_name"], None)
        out["module"] = cls.__module__
        out["registered_name"] = out["class_name"]
    return out


def uses_mixed_precision(config) -> bool:
    if isinstance(config, dict):
        if dtype_name(config) in MIXED_POLICIES and "class_name" in config:
            return True
        return any(uses_mixed_precision(v) for v in config.values())
    if isinstance(config, list):
        return any(uses_mixed_precision(v) for v in config)
    return False


def _float32_policies(config):
    """The config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if "class_name" in config and dtype_name(config) in MIXED_POLICIES:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    return config


def load_reference(source: Source):
    """The Keras 3 model the translation is checked against: Keras 3's own reading of the file
    (for mixed-precision models, the same model computed in float32)."""
    keras = libs.keras3()
    mixed = uses_mixed_precision(source.config)
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
            f"Keras {keras.__version__} cannot load {source.path.name}: {short(e)}",
            hint="load and re-save the model with the Keras version that wrote it",
        ) from e

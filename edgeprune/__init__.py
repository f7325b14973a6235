"""edgeprune: prune, quantize and export Keras models to TFLite, and measure what each step buys
on phones and boards.

    import edgeprune
    recipe = edgeprune.load_recipe("models/mobilenet_v2_fashion.toml")
    report = edgeprune.run(recipe, "runs/demo")

Importing edgeprune is cheap: TensorFlow loads only when a function that needs it is called."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute); resolved on first use so that `import edgeprune` (and the
# CLI's --help, and device benches of ready .tflite files) never import TensorFlow.
_LAZY = {
    "EdgepruneError": ("edgeprune.errors", "EdgepruneError"),
    "load_recipe": ("edgeprune.recipe", "load"),
    "Recipe": ("edgeprune.recipe", "Recipe"),
    "run": ("edgeprune.pipeline", "run"),
    "load_model": ("edgeprune.models", "load_model"),
    "build_builtin": ("edgeprune.models", "build_builtin"),
    "load_dataset": ("edgeprune.data", "load_dataset"),
    "fit_to_model": ("edgeprune.data", "fit_to_model"),
    "prune": ("edgeprune.sparsity", "prune"),
    "quantize_aware": ("edgeprune.quantize", "quantize_aware"),
    "convert": ("edgeprune.export", "convert"),
    "verify": ("edgeprune.export", "verify"),
    "read_tflite": ("edgeprune.tflite_file", "read"),
    "ChannelConfig": ("edgeprune.channels", "ChannelConfig"),
    "prune_channels": ("edgeprune.channels", "prune_channels"),
    "apply_plan": ("edgeprune.channels", "apply_plan"),
    "bench_models": ("edgeprune.bench", "bench_models"),
    "BenchSettings": ("edgeprune.bench", "BenchSettings"),
    "load_keras3": ("edgeprune.keras3", "load_keras3"),
    "save_keras3": ("edgeprune.keras3", "save_keras3"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""Keras 3 models in and out of tf_keras.

TF-MOT works only on tf_keras (Keras 2) models, while most models are now trained and saved
with Keras 3. This package reads a Keras 3 `.keras` archive or `.h5` file, translates its
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

The package follows the translation's steps: detect (is this a Keras 3 file, by content), rules
(Keras 3 -> tf_keras tables), plan (the config decoded and translated), build (the tf_keras
model), reference (Keras 3's own reading of the file), weights, verify (the proof), load
(`load_keras3`), and export_rules/export (`save_keras3`); libs imports TensorFlow, tf_keras and
Keras 3. Importing the package is cheap: a public name below loads its module on first use, and
TensorFlow loads only when a function that needs it is called.
"""

from __future__ import annotations

import importlib

# public name -> submodule; resolved on first use (as in edgeprune/__init__.py)
_LAZY = {
    "Keras3Translation": "load",
    "load_keras3": "load",
    "SCHEMA_VERSION": "load",
    "save_keras3": "export",
    "is_keras3_file": "detect",
    "DEFAULT_ATOL": "verify",
    "DEFAULT_CHECK_BATCH": "verify",
    "MIXED_PRECISION_NOTE": "rules",
}

__all__ = ["Keras3Translation", "is_keras3_file", "load_keras3", "save_keras3", "DEFAULT_ATOL"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})

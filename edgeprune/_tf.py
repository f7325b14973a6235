"""The one place TensorFlow is imported. TF-MOT works only on tf_keras (Keras 2) models, so
TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported; every module that needs
TensorFlow imports it from here."""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgeprune._native import quiet_native_stderr  # noqa: E402

with quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # runs the CUDA probe while muted; logical devices stay configurable

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]

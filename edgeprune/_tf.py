"""The one place TensorFlow is imported. TF-MOT works only on tf_keras (Keras 2) models, so
TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported; every module that needs
TensorFlow imports it from here."""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN off unless the user asks for it. With TF 2.21 on AVX-512 CPUs its weight gradient of a
# strided 1x1 Conv2D on few input channels (the residual branch of the classic mini_XCEPTION)
# corrupts the heap: SIGSEGV or "double free or corruption" on every run measured, and a heap
# overflow that does not crash is no safer. The price, measured on a MobileNetV2 0.35 fine-tune
# here: 1.7x fewer steps per second (medians of 8 runs). TF_ENABLE_ONEDNN_OPTS=1 takes it back
# (the command line then reports a native crash as one line naming this variable);
# edgeprune.cli assumes this default.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from edgeprune._native import quiet_native_stderr  # noqa: E402

with quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # runs the CUDA probe while muted; logical devices stay configurable

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]

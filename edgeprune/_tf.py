"""The one place TensorFlow is imported. TF-MOT works only on tf_keras (Keras 2) models, so
TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported; every module that needs
TensorFlow imports it from here."""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import sys  # noqa: E402


@contextlib.contextmanager
def _quiet_native_stderr():
    """TensorFlow's C++ side prints CUDA probing lines on import, before its log level applies.
    They say nothing useful on a CPU machine, so file descriptor 2 is muted while it loads
    (EDGEPRUNE_DEBUG=1 keeps them). Python exceptions still propagate as usual."""
    if os.environ.get("EDGEPRUNE_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # runs the CUDA probe while muted; logical devices stay configurable

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]

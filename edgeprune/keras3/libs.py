"""TensorFlow, tf_keras and Keras 3, each imported when first needed, so that importing
edgeprune.keras3 (or detecting a Keras 3 file) never loads TensorFlow."""

from __future__ import annotations

from edgeprune.errors import ModelError
from edgeprune.keras3.detect import is_keras3_version


def tfk():
    """tf_keras (Keras 2), the Keras TF-MOT works on."""
    from edgeprune._tf import keras

    return keras


def tf():
    from edgeprune._tf import tf

    return tf


def keras3():
    """Keras 3, or ModelError when `import keras` does not give it."""
    tf()  # TF_USE_LEGACY_KERAS must be set before TensorFlow is imported
    try:
        import keras
    except ImportError as e:
        raise ModelError("Keras 3 is not installed, and it is needed to read or write Keras 3 models",
                         hint="pip install 'keras>=3'") from e
    if not is_keras3_version(getattr(keras, "__version__", "")):
        raise ModelError(f"`import keras` gives Keras {getattr(keras, '__version__', '?')}, not Keras 3",
                         hint="pip install 'keras>=3'")
    return keras

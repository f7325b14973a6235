"""Training and fine-tuning pieces: the tf.distribute strategy named in the recipe, compiling a
classifier, and fitting for a (possibly fractional) number of epochs with progress reported."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from edgeprune import progress
from edgeprune.errors import RecipeError
from edgeprune.models import output_is_softmax


def get_strategy(name: str = "default"):
    """'default' (one device), 'mirrored' (all local devices) or 'multi_worker' (reads TF_CONFIG)."""
    from edgeprune._tf import tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise RecipeError("strategy 'multi_worker' needs the TF_CONFIG environment variable",
                              'set TF_CONFIG=\'{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}\' '
                              "on every machine")
        try:
            cfg = json.loads(raw)
            cfg["cluster"]["worker"], cfg["task"]["index"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise RecipeError(f"TF_CONFIG is malformed ({type(e).__name__}: {e})",
                              "it needs cluster.worker (a list of host:port) and task.index") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise RecipeError(f"unknown strategy {name!r}", "use one of: default, mirrored, multi_worker")


def clone_in_scope(model, strategy, clone_function=None):
    """A copy of `model` whose variables live under `strategy` (weights copied)."""
    from edgeprune._tf import keras

    with strategy.scope():
        copy = keras.models.clone_model(model, clone_function=clone_function)
        if clone_function is None:
            copy.set_weights(model.get_weights())
    return copy


def compile_classifier(model, learning_rate: float, optimizer: str = "adam") -> None:
    from edgeprune._tf import keras

    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9)
    else:
        raise RecipeError(f"unknown optimizer {optimizer!r}", "use adam or sgd")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not output_is_softmax(model))
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])


class ProgressCallback:
    """Builds a tf_keras callback that reports batches to edgeprune.progress."""

    @staticmethod
    def make(label: str, total_steps: int):
        from edgeprune._tf import keras

        class _CB(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self._ctx = progress.task(label, total_steps)
                self._task = self._ctx.__enter__()

            def on_train_batch_end(self, batch, logs=None):
                status = None
                if logs and "loss" in logs:
                    status = f"loss {float(logs['loss']):.3f}"
                    if "accuracy" in logs:
                        status += f" acc {float(logs['accuracy']):.3f}"
                self._task.advance(1, status)

            def on_train_end(self, logs=None):
                self._ctx.__exit__(None, None, None)

        return _CB()


def steps_for(n_examples: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * math.ceil(n_examples / batch_size)))


def fit(model, x: np.ndarray, y: np.ndarray, epochs: float, batch_size: int, label: str,
        callbacks=None, seed: int = 0, strategy=None) -> dict:
    """Fits for `epochs` (fractional epochs run that share of the batches). Returns the last logs."""
    from edgeprune._tf import tf

    steps = steps_for(len(x), batch_size, epochs)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(min(len(x), 20000), seed=seed,
                                                             reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size, drop_remainder=False).prefetch(2)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    cbs = list(callbacks or []) + [ProgressCallback.make(label, steps)]
    history = model.fit(ds, epochs=1, steps_per_epoch=steps, callbacks=cbs, verbose=0)
    return {k: float(v[-1]) for k, v in history.history.items()}


def keras_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    probs = predict(model, x, batch_size)
    return float(np.mean(np.argmax(probs, axis=-1) == y))


def predict(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    outs = [model(x[i:i + batch_size], training=False).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,))

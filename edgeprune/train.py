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
    from edgeprune.sparsity import set_trainable_flags, trainable_flags

    with strategy.scope():
        copy = keras.models.clone_model(model, clone_function=clone_function)
        if clone_function is None:
            copy.set_weights(model.get_weights())
    set_trainable_flags(copy, trainable_flags(model))  # cloning loses a nested model's own flag
    return copy


LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "sgd")


def learning_rate_for(learning_rate: float, schedule: str = "constant", total_steps: int = 0,
                      warmup_steps: int = 0):
    """A constant rate, or cosine decay to zero over `total_steps` after a linear warm-up of
    `warmup_steps` from zero (the schedule most image classifiers are trained with)."""
    from edgeprune._tf import keras

    if schedule == "constant":
        return learning_rate
    if schedule != "cosine":
        raise RecipeError(f"unknown learning-rate schedule {schedule!r}", f"use one of: {', '.join(LR_SCHEDULES)}")
    warmup = max(0, min(int(warmup_steps), int(total_steps) - 1))
    decay = max(1, int(total_steps) - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay)
    return keras.optimizers.schedules.CosineDecay(0.0, decay, warmup_target=learning_rate, warmup_steps=warmup)


def make_optimizer(learning_rate, optimizer: str = "adam"):
    from edgeprune._tf import keras

    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    raise RecipeError(f"unknown optimizer {optimizer!r}", f"use {' or '.join(OPTIMIZERS)}")


def task_loss(model, label_smoothing: float = 0.0):
    """Cross-entropy on the model's outputs (logits or probabilities, told from the outputs).
    With label smoothing the labels must be one-hot (`fit` does that when asked to smooth)."""
    from edgeprune._tf import keras

    logits = not output_is_softmax(model)
    if label_smoothing > 0:
        return keras.losses.CategoricalCrossentropy(from_logits=logits, label_smoothing=label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)


def compile_classifier(model, learning_rate, optimizer: str = "adam", label_smoothing: float = 0.0) -> None:
    """`learning_rate` is a number or a schedule from `learning_rate_for`."""
    model.compile(optimizer=make_optimizer(learning_rate, optimizer), loss=task_loss(model, label_smoothing),
                  metrics=["accuracy"])


class ProgressCallback:
    """Builds a tf_keras callback that reports batches to edgeprune.progress."""

    @staticmethod
    def make(label: str, total_steps: int):
        from edgeprune._tf import keras

        class _CB(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self._task = progress.get_reporter().task(label, total_steps)

            def on_train_batch_end(self, batch, logs=None):
                status = None
                if logs and "loss" in logs:
                    status = f"loss {float(logs['loss']):.3f}"
                    if "accuracy" in logs:
                        status += f" acc {float(logs['accuracy']):.3f}"
                self._task.advance(1, status)

            def on_train_end(self, logs=None):
                self._task.close()

        return _CB()


def steps_for(n_examples: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * math.ceil(n_examples / batch_size)))


def augment_images(x, shift: int = 2, flip: bool = True):
    """Light augmentation of one NHWC image: a random shift of up to `shift` pixels (zero padding,
    then a random crop back to the size) and a random left-right flip."""
    from edgeprune._tf import tf

    h, w = x.shape[0], x.shape[1]
    if shift > 0:
        x = tf.image.pad_to_bounding_box(x, shift, shift, h + 2 * shift, w + 2 * shift)
        x = tf.image.random_crop(x, (h, w, x.shape[-1]))
    if flip:
        x = tf.image.random_flip_left_right(x)
    return x


def dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0, augment: bool = False,
            num_classes: int | None = None, strategy=None):
    """An endless, shuffled, batched tf.data pipeline; `num_classes` makes the labels one-hot."""
    from edgeprune._tf import tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(min(len(x), 20000), seed=seed,
                                                             reshuffle_each_iteration=True).repeat()
    if augment:
        ds = ds.map(lambda a, b: (augment_images(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=False)
    if num_classes:
        ds = ds.map(lambda a, b: (a, tf.one_hot(tf.cast(b, tf.int32), num_classes)))
    ds = ds.prefetch(2)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds


def fit(model, x: np.ndarray, y: np.ndarray, epochs: float, batch_size: int, label: str,
        callbacks=None, seed: int = 0, strategy=None, augment: bool = False, one_hot: int | None = None,
        validation=None) -> dict:
    """Fits for `epochs` (fractional epochs run that share of the batches). Returns the last logs.
    `one_hot` (the number of classes) feeds one-hot labels, for label smoothing. With `validation`
    (x, y) and more than one epoch, fits epoch by epoch and records the validation accuracy of each
    under "curve" (the learning curve)."""
    steps = steps_for(len(x), batch_size, epochs)
    ds = dataset(x, y, batch_size, seed, augment, one_hot, strategy)
    cbs = list(callbacks or []) + [ProgressCallback.make(label, steps)]
    if validation is None or epochs <= 1:
        history = model.fit(ds, epochs=1, steps_per_epoch=steps, callbacks=cbs, verbose=0)
        return {k: float(v[-1]) for k, v in history.history.items()}
    per_epoch = steps_for(len(x), batch_size, 1)
    n_epochs = math.ceil(steps / per_epoch)
    curve = []

    class _Curve(_keras_callback()):
        def on_epoch_end(self, epoch, logs=None):
            acc = keras_accuracy(model, validation[0], validation[1])
            curve.append({"epoch": epoch + 1, "train_loss": float(logs.get("loss", float("nan"))),
                          "train_accuracy": float(logs.get("accuracy", float("nan"))), "val_accuracy": acc})
            progress.log(f"{label}: epoch {epoch + 1}/{n_epochs} val accuracy {acc:.4f}")

    history = model.fit(ds, epochs=n_epochs, steps_per_epoch=per_epoch, callbacks=[*cbs[:-1], _Curve(),
                        ProgressCallback.make(label, per_epoch * n_epochs)], verbose=0)
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    logs["curve"] = curve
    return logs


def _keras_callback():
    from edgeprune._tf import keras

    return keras.callbacks.Callback


def keras_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    probs = predict(model, x, batch_size)
    return float(np.mean(np.argmax(probs, axis=-1) == y))


def predict(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    outs = [model(x[i:i + batch_size], training=False).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,))

"""Recovery after surgery: BatchNormalization statistics re-estimated on data, and fine-tuning with
optional distillation from the unpruned model. `make_fine_tune` returns the callable
`prune_channels(..., fine_tune=...)` calls after every pruning step."""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgeprune._tf import keras, tf
from edgeprune.errors import DataError
from edgeprune.progress import log, task


def _batch_norms(model) -> list:
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _batch_norms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def reestimate_bn(model, x, batch_size: int = 32, max_batches: int = 20):
    """Replace every BatchNormalization's moving mean and variance by the average of its batch
    statistics over `x` (up to max_batches batches): after channels are removed, the statistics
    the model learned no longer describe what reaches each BN. Returns the model (changed in place)."""
    if x is None:
        return model
    x = np.asarray(x)
    layers = _batch_norms(model)
    if not layers or len(x) == 0:
        return model
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, min(len(x), batch_size * max_batches), batch_size), start=1):
            for layer in layers:
                layer.momentum = (k - 1) / k  # cumulative average: batch k weighs 1/k
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    return model


def _outputs_are_probabilities(out) -> bool:
    out = out.numpy()
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def make_fine_tune(x, y, *, teacher=None, batch_size: int = 64, learning_rate: float = 1e-3,
                   temperature: float = 4.0, alpha: float = 0.5, loss=None, seed: int = 0
                   ) -> Callable[["keras.Model", int], "keras.Model"]:
    """fine_tune(model, epochs) -> model. With `teacher` (the unpruned model), the loss is
    alpha * task loss + (1 - alpha) * T^2 * KL(teacher || student) on temperature-softened outputs."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"fine-tuning data has {len(x)} inputs and {len(y)} labels",
                        "pass as many labels as inputs (> 0)")
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"distillation alpha {alpha!r} is outside [0, 1]", "e.g. alpha=0.5")

    def run(model, epochs: int):
        probe = model(x[:batch_size], training=False)
        probs = _outputs_are_probabilities(probe)
        task_loss = loss
        if task_loss is None:
            if np.issubdtype(y.dtype, np.integer):
                task_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)
            else:
                task_loss = keras.losses.MeanSquaredError()
        optimizer = keras.optimizers.Adam(learning_rate)
        t_probs = None if teacher is None else _outputs_are_probabilities(teacher(x[:batch_size], training=False))

        def logits(out, is_probs):
            return tf.math.log(tf.maximum(out, 1e-8)) if is_probs else out

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                out = model(xb, training=True)
                value = task_loss(yb, out)
                if teacher is not None:
                    t = tf.nn.softmax(logits(teacher(xb, training=False), t_probs) / temperature)
                    s = tf.nn.log_softmax(logits(out, probs) / temperature)
                    kl = tf.reduce_mean(tf.reduce_sum(t * (tf.math.log(tf.maximum(t, 1e-8)) - s), axis=-1))
                    value = alpha * value + (1.0 - alpha) * temperature ** 2 * kl
            grads = tape.gradient(value, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return value

        rng = np.random.default_rng(seed)
        with task("fine-tune", total=epochs) as progress:
            for epoch in range(epochs):
                order = rng.permutation(len(x))
                total, n = 0.0, 0
                for start in range(0, len(x), batch_size):
                    idx = order[start:start + batch_size]
                    total += float(step(tf.constant(x[idx]), tf.constant(y[idx])))
                    n += 1
                log(f"fine-tune epoch {epoch + 1}/{epochs}: loss {total / max(n, 1):.4f}")
                progress.advance(1)
        return model

    return run

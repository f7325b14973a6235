"""Recovery after surgery: BatchNormalization statistics re-estimated on data. Fine-tuning, with
distillation from the unpruned model, is `edgeprune.finetune.make_fine_tune`, the callable
`prune_channels(..., fine_tune=...)` calls after every pruning step."""

from __future__ import annotations

import numpy as np

from edgeprune._tf import keras


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

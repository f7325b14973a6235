"""Quantization-aware fine-tuning. After pruning, only the pruning-preserving scheme (PQAT) keeps
the zeros: plain QAT re-learns them away (measured: 80 % sparsity became 0.2 %), so edgeprune never
picks it silently. Post-training modes live in edgeprune.export (the converter does them)."""

from __future__ import annotations

import numpy as np

from edgeprune.errors import ModelError


def quantize_aware(model, x: np.ndarray, y: np.ndarray, *, preserve_sparsity: bool, epochs: float,
                   batch_size: int = 256, learning_rate: float = 1e-4, strategy=None, seed: int = 0):
    """QAT fine-tune of a plain (stripped) model. `preserve_sparsity` selects
    Default8BitPrunePreserveQuantizeScheme (PQAT). Returns the quantize-aware model."""
    import tensorflow_model_optimization as tfmot

    from edgeprune.train import compile_classifier, fit, get_strategy

    strategy = strategy or get_strategy("default")
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity else None
    with strategy.scope():
        try:
            annotated = tfmot.quantization.keras.quantize_annotate_model(model)
            qat = tfmot.quantization.keras.quantize_apply(annotated, scheme) if scheme is not None \
                else tfmot.quantization.keras.quantize_apply(annotated)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"TF-MOT cannot make {model.name} quantization-aware: {' '.join(str(e).split())[:200]}",
                             "use post-training int8 (quantize = \"int8\") for this model") from None
        compile_classifier(qat, learning_rate)
    if epochs > 0:
        fit(qat, x, y, epochs, batch_size, "fine-tune (PQAT)" if preserve_sparsity else "fine-tune (QAT)",
            seed=seed, strategy=strategy)
    return qat

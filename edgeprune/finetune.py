"""One fine-tune path for every recovery step (channel and block removal, the pipeline and the
`prune` command): optional distillation from the unpruned model, a learning-rate schedule over the
fine-tune's own steps, light augmentation and label smoothing, under the recipe's strategy.

    fine_tune = make_fine_tune(x, y, teacher=baseline, learning_rate=5e-4)
    smaller = fine_tune(smaller, 2.0)     # epochs may be fractional
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from edgeprune.errors import DataError

FineTune = Callable[[object, float], object]


@dataclasses.dataclass(frozen=True)
class FineTuneSettings:
    learning_rate: float = 5e-4
    # "constant" | "cosine" (over the fine-tune's steps, 5 % warm-up). Constant by default: on the
    # headline benchmark a one-epoch recovery lost 3.8 points more with cosine (BENCHMARKS.md).
    schedule: str = "constant"
    batch_size: int = 256
    optimizer: str = "adam"
    distill: bool = True  # from the unpruned model when one is given
    temperature: float = 4.0
    alpha: float = 0.3  # weight of the label loss; 1 - alpha goes to the teacher's soft targets
    label_smoothing: float = 0.0
    augment: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_fine_tune(x, y, teacher=None, settings: FineTuneSettings | None = None, strategy=None,
                   label: str = "fine-tune") -> FineTune:
    """fine_tune(model, epochs) -> the fine-tuned model (trained in place unless the strategy
    needs a copy of it). With a teacher and settings.distill, the loss is distillation's."""
    from edgeprune.distill import Distiller, check_settings
    from edgeprune.models import io_shape, output_is_softmax
    from edgeprune.train import clone_in_scope, fit, learning_rate_for, make_optimizer, steps_for, task_loss

    s = settings or FineTuneSettings()
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"fine-tuning data has {len(x)} inputs and {len(y)} labels",
                        "pass as many labels as inputs (> 0)")
    if s.distill and teacher is not None:
        check_settings(s.temperature, s.alpha)

    def run(model, epochs: float):
        if epochs <= 0:
            return model
        from edgeprune._tf import tf

        strat = strategy or tf.distribute.get_strategy()
        many = strat.num_replicas_in_sync > 1
        if many:
            model = clone_in_scope(model, strat)  # a rebuilt model's variables must live under the strategy
        steps = steps_for(len(x), s.batch_size, epochs)
        classes = io_shape(model)[1] if s.label_smoothing > 0 else None
        with strat.scope():
            rate = learning_rate_for(s.learning_rate, s.schedule, steps, warmup_steps=int(0.05 * steps))
            loss = task_loss(model, s.label_smoothing)
            if s.distill and teacher is not None:
                t = clone_in_scope(teacher, strat) if many else teacher
                trainer = Distiller(model, t, s.temperature, s.alpha, student_probabilities=output_is_softmax(model),
                                    teacher_probabilities=output_is_softmax(t))
            else:
                trainer = model
            trainer.compile(optimizer=make_optimizer(rate, s.optimizer), loss=loss, metrics=["accuracy"])
        fit(trainer, x, y, epochs, s.batch_size, label, seed=s.seed, strategy=strat, augment=s.augment,
            one_hot=classes)
        return model

    return run

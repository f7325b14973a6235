"""Knowledge distillation (Hinton et al., 2015): a pruned student learns from the unpruned teacher's
softened outputs as well as from the labels.

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

z are logits. A model that ends in softmax gives probabilities; their logarithm is the logits less
a constant per row, which softmax(z / T) does not see, so log-probabilities serve as logits."""

from __future__ import annotations

from edgeprune._tf import keras, tf
from edgeprune.errors import RecipeError

_TINY = 1e-30


def as_logits(out, is_probabilities: bool):
    return tf.math.log(tf.maximum(out, _TINY)) if is_probabilities else out


def soft_kl(teacher_logits, student_logits, temperature: float):
    """Mean over the batch of KL(softmax(t / T) || softmax(s / T)), times T^2 (which keeps the
    gradient scale of the soft term independent of T)."""
    t = tf.nn.softmax(teacher_logits / temperature)
    log_t = tf.nn.log_softmax(teacher_logits / temperature)
    log_s = tf.nn.log_softmax(student_logits / temperature)
    return temperature ** 2 * tf.reduce_mean(tf.reduce_sum(t * (log_t - log_s), axis=-1))


def check_settings(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise RecipeError(f"distillation temperature {temperature!r} must be positive", "use 2 to 4, e.g. 4")
    if not 0.0 <= alpha <= 1.0:
        raise RecipeError(f"distillation alpha {alpha!r} is outside [0, 1]",
                          "it weighs the label loss against the teacher's: e.g. 0.3")


class Distiller(keras.Model):
    """Wraps a student and a frozen teacher so that `fit` trains the student on the mixed loss.
    Compile it with the optimizer and the task loss (which may smooth one-hot labels); the
    `accuracy` metric is the student's against the labels."""

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.3,
                 student_probabilities: bool = False, teacher_probabilities: bool = False, **kw):
        super().__init__(name=f"distill_{student.name}", **kw)
        check_settings(temperature, alpha)
        self.student = student
        self.teacher = teacher  # called in inference mode; only the student's variables are updated
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.student_probabilities = student_probabilities
        self.teacher_probabilities = teacher_probabilities

    def call(self, x, training=False):
        return self.student(x, training=training)

    def train_step(self, data):
        x, y = data
        teacher_out = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            out = self.student(x, training=True)
            task = self.compiled_loss(y, out, regularization_losses=self.student.losses)
            soft = soft_kl(as_logits(teacher_out, self.teacher_probabilities),
                           as_logits(out, self.student_probabilities), self.temperature)
            loss = self.alpha * task + (1.0 - self.alpha) * soft
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.compiled_metrics.update_state(y, out)
        return {"loss": loss, "task_loss": task, "kd_loss": soft, **{m.name: m.result() for m in self.metrics
                                                                   if m.name not in ("loss",)}}

"""Recovery by distillation: the loss against a hand computation, and a pruned CNN that ends closer
to its teacher with distillation than without, on a fixed seed."""

import numpy as np
import pytest

import core_fixtures
from edgeprune._tf import keras, tf
from edgeprune.channels import ChannelConfig, prune_channels
from edgeprune.distill import Distiller, soft_kl
from edgeprune.errors import RecipeError
from edgeprune.finetune import FineTuneSettings, make_fine_tune


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_soft_kl_matches_a_hand_computation():
    t = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
    s = np.array([[1.0, 1.0, 0.0], [0.5, -0.5, 1.0]], np.float32)
    T = 3.0
    p, q = _softmax(t / T), _softmax(s / T)
    want = T ** 2 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    assert float(soft_kl(tf.constant(t), tf.constant(s), T)) == pytest.approx(want, rel=1e-5)
    assert float(soft_kl(tf.constant(t), tf.constant(t), T)) == pytest.approx(0.0, abs=1e-6)


def test_the_distillation_loss_mixes_labels_and_soft_targets_as_written():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])

    def dense(seed, activation=None):
        keras.utils.set_random_seed(seed)
        i = keras.Input((4,))
        return keras.Model(i, keras.layers.Dense(3, activation=activation)(i))

    student, teacher = dense(1), dense(2, "softmax")  # a logits student, a probabilities teacher
    z_s, p_t = student(x).numpy(), teacher(x).numpy()
    T, alpha = 2.0, 0.25
    ce = -np.mean(np.log(_softmax(z_s)[np.arange(8), y]))
    p, q = _softmax(np.log(p_t) / T), _softmax(z_s / T)
    kd = T ** 2 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    d = Distiller(student, teacher, T, alpha, student_probabilities=False, teacher_probabilities=True)
    d.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = d.train_step((tf.constant(x), tf.constant(y)))
    assert float(logs["task_loss"]) == pytest.approx(ce, rel=1e-5)
    assert float(logs["kd_loss"]) == pytest.approx(kd, rel=1e-4)
    assert float(logs["loss"]) == pytest.approx(alpha * ce + (1 - alpha) * kd, rel=1e-4)


def test_settings_out_of_range_are_refused():
    with pytest.raises(RecipeError, match=r"distillation alpha 1.5 is outside \[0, 1\]"):
        make_fine_tune(np.zeros((2, 1)), np.zeros(2, np.int64), teacher=object(),
                       settings=FineTuneSettings(alpha=1.5))


def test_a_pruned_cnn_ends_closer_to_its_teacher_with_distillation(tmp_path):
    ds = core_fixtures.tiny_dataset()
    x, y = ds.x_train, ds.y_train  # the 3,000 training images
    xt = ds.x_test
    teacher = core_fixtures.load_trained(str(tmp_path))
    teacher_top1 = teacher(xt).numpy().argmax(-1)
    agreements = {}
    for distill in (False, True):
        keras.utils.set_random_seed(0)
        settings = FineTuneSettings(learning_rate=3e-3, batch_size=64, distill=distill, seed=0)  # T 4, alpha 0.3
        fine_tune = make_fine_tune(x, y, teacher=teacher, settings=settings)
        small = prune_channels(teacher, ChannelConfig(ratio=0.6, round_to=1), data=(x[:256], y[:256]),
                               fine_tune=fine_tune, fine_tune_epochs=2).model
        agreements[distill] = float(np.mean(small(xt).numpy().argmax(-1) == teacher_top1))
    assert agreements[True] >= agreements[False], agreements
    assert agreements[True] > 0.55

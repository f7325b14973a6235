"""Recovery after surgery: BN statistics re-estimated from data, fine-tuning with distillation."""

import numpy as np

from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, prune_channels
from edgeprune.channels.recovery import reestimate_bn
from edgeprune.finetune import FineTuneSettings, make_fine_tune
from channel_models import batch, chain


def test_bn_statistics_are_re_estimated_from_data():
    model = chain()
    x = batch((8, 8, 3), n=64, seed=5)
    bn = model.get_layer("bn1")
    before_bn = keras.Model(model.inputs, model.get_layer("c1").output)(x).numpy()
    reestimate_bn(model, x, batch_size=16)
    np.testing.assert_allclose(bn.moving_mean.numpy(), before_bn.mean(axis=(0, 1, 2)), atol=1e-4)
    per_batch_var = np.mean([before_bn[i:i + 16].var(axis=(0, 1, 2)) for i in range(0, 64, 16)], axis=0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), per_batch_var, rtol=0.1)
    assert bn.momentum == 0.99  # restored


def test_prune_with_data_recalibrates_bn_and_fine_tunes_with_distillation():
    teacher = chain()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8, 8, 3)).astype("float32")
    reestimate_bn(teacher, x)
    y = teacher(x).numpy().argmax(axis=1)

    def agreement(m):
        return float((m(x).numpy().argmax(axis=1) == y).mean())

    plain = prune_channels(teacher, ChannelConfig(ratio=0.7, round_to=1), recalibrate_bn=False)
    calibrated = prune_channels(teacher, ChannelConfig(ratio=0.7, round_to=1), data=(x, y))
    assert calibrated.model.get_layer("bn2").moving_mean.numpy().tolist() != \
        plain.model.get_layer("bn2").moving_mean.numpy().tolist()
    fine_tune = make_fine_tune(x, y, teacher=teacher,
                               settings=FineTuneSettings(learning_rate=3e-3, schedule="constant", batch_size=64))
    tuned = prune_channels(teacher, ChannelConfig(ratio=0.7, round_to=1, iterative_steps=2), data=(x, y),
                           fine_tune=fine_tune, fine_tune_epochs=4)
    assert agreement(tuned.model) > max(agreement(plain.model), 0.5)
    assert tuned.model.get_layer("c1").filters == 5

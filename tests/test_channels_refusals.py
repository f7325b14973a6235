"""Unsupported cases give clear errors that name the layer and the reason, and say how to go on."""

import numpy as np
import pytest

from edgeprune._tf import keras, tf
from edgeprune.channels import ChannelConfig, ChannelGraph, prune_channels
from edgeprune.errors import ModelError, PruningError, RecipeError
from channel_models import batch, randomize

L = keras.layers


def _model(middle):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = middle(x)
    x = L.Conv2D(8, 1, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return randomize(keras.Model(inp, L.Dense(3, name="fc")(x)))


@pytest.mark.parametrize("middle, layer, reason", [
    (lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(x), "dw2",
     "depth_multiplier=2"),
    (lambda x: L.Lambda(lambda t: t * 2.0, name="double")(x), "double", "Lambda layers run arbitrary code"),
    (lambda x: L.Reshape((8, 16, 8), name="mix")(x), "mix", "moves the channel axis"),
    (lambda x: L.Conv2D(16, 3, groups=4, padding="same", name="grouped")(x), "grouped", "grouped convolution"),
    (lambda x: L.Permute((1, 3, 2), name="perm")(L.Reshape((8, 8, 16))(x)), "perm", "Permute"),
    (lambda x: tf.transpose(x, [0, 2, 1, 3]), "tf.compat.v1.transpose", "has no channel rule"),
])
def test_unsupported_layers_are_refused_by_name(middle, layer, reason):
    model = _model(middle)
    with pytest.raises(PruningError) as err:
        prune_channels(model, ChannelConfig(ratio=0.5))
    text = str(err.value)
    assert repr(layer) in text and reason in text and "protect" in text


def test_protecting_a_refused_layer_lets_the_rest_be_pruned():
    model = _model(lambda x: L.Lambda(lambda t: t * 2.0, name="double")(x))
    result = prune_channels(model, ChannelConfig(ratio=0.5, round_to=1, protect=["^double$"]))
    layers = {l.name: l for l in result.model.layers}
    assert layers["c1"].filters == 16  # feeds the protected Lambda: kept whole
    assert layers["c2"].filters == 4
    x = batch((8, 8, 3))
    assert result.model(x).shape == (4, 3)


def test_softmax_and_layer_norm_keep_their_channels():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, name="c1")(inp)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Conv2D(16, 3, name="c2")(x)
    x = L.Softmax(name="sm")(x)
    x = L.Conv2D(16, 1, name="c3")(x)
    model = keras.Model(inp, L.GlobalAveragePooling2D()(x))
    g = ChannelGraph(model)
    assert g.groups == []
    assert any("normalizes across channels" in r for r in g.fixed.values())
    with pytest.raises(PruningError, match="no channel group that can be pruned"):
        prune_channels(model, ChannelConfig(ratio=0.5))


def test_models_that_cannot_be_traced_are_refused():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 4), "float32"))
    with pytest.raises(ModelError, match="subclassed"):
        prune_channels(sub, ChannelConfig())
    with pytest.raises(ModelError, match="no input shape"):
        prune_channels(keras.Sequential([L.Dense(3)]), ChannelConfig())
    with pytest.raises(ModelError, match="tf_keras"):
        prune_channels(object(), ChannelConfig())


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 1.2}, "out of range"),
    ({"criterion": "bn_gama"}, "did you mean 'bn_gamma'"),
    ({"allocation": "globl"}, "did you mean 'global'"),
    ({"round_to": 0}, "round_to"),
    ({"macs_target": 0.5, "params_target": 0.5}, "several budgets"),
    ({"protect": ["("]}, "not a valid regex"),
    ({"iterative_steps": 0}, "iterative_steps"),
])
def test_bad_config_values_are_refused(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        ChannelConfig(**kwargs)


def test_config_round_trip():
    cfg = ChannelConfig(ratio=0.4, protect=["^stem"], allocation="global")
    assert ChannelConfig.from_dict(cfg.to_dict()) == cfg

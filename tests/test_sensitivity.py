"""Sensitivity allocation keeps more channels in a group whose removal is planted to hurt."""

import numpy as np

from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, ChannelGraph, prune_channels

L = keras.layers


def two_branch():
    """Two parallel conv groups feeding one classifier: 'a' carries the signal, 'b' only noise
    with tiny weights downstream."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2), name="image")
    a = L.Conv2D(16, 1, name="a")(inp)
    b = L.Conv2D(16, 1, name="b")(inp)
    x = L.Concatenate(name="cat")([L.ReLU(name="ra")(a), L.ReLU(name="rb")(b)])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(4, name="fc")(x)
    model = keras.Model(inp, out, name="two_branch")
    rng = np.random.default_rng(0)
    wa = rng.normal(0, 1.0, (1, 1, 2, 16)).astype("float32")
    wb = rng.normal(0, 1.0, (1, 1, 2, 16)).astype("float32") * 3  # larger norms: magnitude alone prefers b
    model.get_layer("a").set_weights([wa, np.zeros(16, np.float32)])
    model.get_layer("b").set_weights([wb, np.zeros(16, np.float32)])
    fc = rng.normal(0, 1.0, (32, 4)).astype("float32")
    fc[16:] *= 1e-3  # b's channels barely reach the output
    model.get_layer("fc").set_weights([fc, np.zeros(4, np.float32)])
    return model


def test_sensitivity_keeps_more_channels_where_removal_hurts():
    model = two_branch()
    x = np.random.default_rng(1).normal(size=(512, 8, 8, 2)).astype("float32")
    y = model(x).numpy().argmax(-1)
    kept = {}
    for allocation in ("uniform", "sensitivity"):
        r = prune_channels(model, ChannelConfig(ratio=0.5, round_to=4, allocation=allocation, max_ratio=0.75),
                           data=(x, y), recalibrate_bn=False)
        kept[allocation] = {row["layer"]: row["after"] for row in r.layers if row["layer"] != "fc"}
    assert kept["uniform"] == {"a": 8, "b": 8}
    assert kept["sensitivity"]["a"] > kept["sensitivity"]["b"]
    assert kept["sensitivity"]["a"] + kept["sensitivity"]["b"] <= 16  # the budget still holds
    table = r.steps[0]["sensitivity"]
    assert set(table) == {g.key for g in ChannelGraph(model).groups}
    assert table["a:out"]["4"] > table["b:out"]["4"]

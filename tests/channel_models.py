"""Tiny tf_keras models that exercise every channel rule, shared by the channel-pruning tests."""

from __future__ import annotations

import numpy as np

from edgeprune._tf import keras, tf

L = keras.layers


def randomize(model, seed: int = 0):
    """Random weights everywhere, BN statistics included, so no channel is accidentally equal."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize(layer, seed + 1)
            continue
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if "moving_variance" in w.name or "variance" in w.name:
                values.append(rng.uniform(0.5, 2.0, shape).astype("float32"))
            elif "gamma" in w.name:
                values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
            elif w.dtype == tf.int64:
                values.append(w.numpy())
            else:
                values.append(rng.normal(0, 0.3, shape).astype("float32"))
        layer.set_weights(values)
    return model


def zoo(input_shape=(16, 16, 3), classes=5):
    """Residual add, depthwise, squeeze-excite (conv and Reshape forms), hard-swish as TF ops, concat
    of conv and separable conv, pooling, Flatten -> Dense."""
    inp = keras.Input(input_shape, name="image")
    x = L.Conv2D(16, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    y = L.Conv2D(16, 1, name="res_conv")(x)
    y = L.BatchNormalization(name="res_bn")(y)
    x = L.Add(name="res_add")([x, y])
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.Activation("swish", name="dw_act")(x)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = L.Conv2D(8, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se_mul")([x, s])
    x = L.Multiply(name="hswish")([x, L.ReLU(6.0, name="hs_relu")(x + 3.0) * (1.0 / 6.0)])
    a = L.Conv2D(16, 1, name="branch_a")(x)
    b = L.SeparableConv2D(16, 3, padding="same", name="branch_b")(x)
    x = L.Concatenate(name="concat")([a, b])
    x = L.BatchNormalization(name="concat_bn")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(24, 3, padding="same", activation="relu", name="conv2")(x)
    s = L.GlobalAveragePooling2D(name="se2_pool")(x)
    s = L.Reshape((1, 1, 24), name="se2_reshape")(s)
    s = L.Conv2D(8, 1, activation="relu", name="se2_reduce")(s)
    s = L.Conv2D(24, 1, activation="sigmoid", name="se2_expand")(s)
    x = L.Multiply(name="se2_mul")([x, s])
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.AveragePooling2D(name="avg")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(32, activation="relu", name="fc")(x)
    x = L.Dropout(0.2, name="drop")(x)
    out = L.Dense(classes, name="logits")(x)
    return randomize(keras.Model(inp, out, name="zoo"))


def nested(input_shape=(16, 16, 3), classes=5):
    """A functional backbone and a Sequential head used as layers of an outer model."""
    inner_in = keras.Input(input_shape)
    x = L.Conv2D(16, 3, padding="same", name="conv")(inner_in)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(24, 3, strides=2, padding="same", name="conv_b")(x)
    backbone = keras.Model(inner_in, x, name="backbone")
    head = keras.Sequential([keras.Input((8, 8, 24)), L.Conv2D(16, 1, name="conv"), L.GlobalAveragePooling2D(),
                             L.Dense(classes, name="fc")], name="head")
    inp = keras.Input(input_shape, name="image")
    out = head(backbone(inp))
    return randomize(keras.Model(inp, out, name="outer"))


def chain(input_shape=(8, 8, 3), classes=4):
    """conv -> BN -> ReLU -> conv -> GAP -> Dense: small enough to count by hand."""
    inp = keras.Input(input_shape)
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(32, 3, strides=2, padding="same", name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(classes, name="fc")(x)
    return randomize(keras.Model(inp, out, name="chain"))


def batch(shape, n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def masked_copy(graph, kept: dict[int, np.ndarray]):
    """The same model at full width with every removed channel cut off from its consumers (their
    input rows zeroed): numerically what the pruned model computes. A check for surgery."""
    from edgeprune.channels.surgery import rebuild

    model = rebuild(graph, {})
    layers = {layer.name: layer for layer in model.layers}
    for group in graph.groups:
        removed = np.setdiff1d(np.arange(group.size), kept.get(group.root, np.arange(group.size)))
        if not len(removed):
            continue
        for m in graph.members(group):
            if m.weight.role != "consume":
                continue
            var = getattr(layers[m.layer], m.weight.attr)
            arr = np.moveaxis(var.numpy(), m.weight.axis, 0)
            arr[m.positions[removed].ravel()] = 0
            var.assign(np.moveaxis(arr, 0, m.weight.axis))
    return model

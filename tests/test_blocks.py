"""Block removal: which blocks can go, the surgery's proof, refusals by name, fewer ops in the
flatbuffer, composition with channels and int8, and the same network at another input size."""

import numpy as np
import pytest

from edgeprune import export, tflite_file
from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, prune_channels
from edgeprune.channels.blocks import (BlockConfig, find_blocks, prune_blocks, remove_blocks, score_blocks,
                                       with_input_shape)
from edgeprune.errors import PruningError, RecipeError
from edgeprune.models import build_builtin
from channel_models import batch, randomize

L = keras.layers


def resnetish(input_shape=(16, 16, 3), classes=5):
    """stem -> two identity blocks -> a projection block (stride 2) -> an identity block -> head."""
    inp = keras.Input(input_shape, name="image")
    x = L.Conv2D(16, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)

    def identity(x, name):
        y = L.Conv2D(16, 3, padding="same", name=f"{name}_conv")(x)
        y = L.BatchNormalization(name=f"{name}_bn")(y)
        y = L.ReLU(name=f"{name}_relu")(y)
        y = L.Conv2D(16, 1, name=f"{name}_project")(y)
        y = L.BatchNormalization(name=f"{name}_project_bn")(y)
        return L.Add(name=f"{name}_add")([x, y])

    x = identity(x, "b1")
    x = identity(x, "b2")
    s = L.Conv2D(16, 1, strides=2, name="b3_shortcut")(x)
    y = L.Conv2D(16, 3, strides=2, padding="same", name="b3_conv")(x)
    x = L.Add(name="b3_add")([s, y])
    x = identity(x, "b4")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(classes, name="fc")(x)
    return randomize(keras.Model(inp, out, name="resnetish"))


def test_finds_the_identity_blocks_and_their_layers():
    blocks = {b.name: b for b in find_blocks(resnetish())}
    assert sorted(blocks) == ["b1", "b2", "b4"]
    assert blocks["b1"].ops == ("b1_conv", "b1_bn", "b1_relu", "b1_project", "b1_project_bn")
    assert blocks["b1"].params == (3 * 3 * 16 * 16 + 16) + 4 * 16 + (16 * 16 + 16) + 4 * 16


def test_mobilenet_v2_has_ten_removable_blocks():
    model = build_builtin("mobilenet_v2", (32, 32, 1), 10, 0.35)
    assert [b.name for b in find_blocks(model)] == ["block_2", "block_4", "block_5", "block_7", "block_8",
                                                   "block_9", "block_11", "block_12", "block_14", "block_15"]


def test_removing_a_block_whose_branch_outputs_zero_changes_nothing():
    model = resnetish()
    x = batch((16, 16, 3), n=8)
    bn = model.get_layer("b2_project_bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, var])  # F(x) = 0 exactly
    smaller = remove_blocks(model, ["b2"])
    assert len(smaller.layers) == len(model.layers) - 6
    assert not any(layer.name.startswith("b2_") for layer in smaller.layers)
    np.testing.assert_allclose(smaller(x).numpy(), model(x).numpy(), atol=1e-5)


def test_removing_a_live_block_changes_the_outputs_and_scores_say_so():
    model = resnetish()
    x = batch((16, 16, 3), n=32)
    bn = model.get_layer("b1_project_bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 1e-4, beta * 0, mean, var])  # b1 nearly dead, b2 and b4 live
    scores = score_blocks(model, find_blocks(model), x)
    assert min(scores, key=scores.get) == "b1"
    assert scores["b1"] < 1e-3 * max(scores["b2"], scores["b4"])
    result = prune_blocks(model, BlockConfig(count=1), data=(x, np.zeros(len(x), np.int64)), recalibrate_bn=False)
    assert result.removed == ["b1"]
    assert result.layers_after == result.layers_before - 6


def test_refuses_blocks_without_identity_skip_by_name():
    with pytest.raises(PruningError) as e:
        remove_blocks(resnetish(), ["b3", "stem"])
    msg = e.value.one_line()
    assert "b3: its Add 'b3_add' has no identity skip (both inputs are computed: a projection)" in msg
    assert "stem: no residual Add of that name joins the block's input to its output" in msg
    assert msg.endswith("removable blocks: b1, b2, b4.")
    with pytest.raises(PruningError, match="cannot remove 4 blocks of 'resnetish': it has 3 removable"):
        prune_blocks(resnetish(), BlockConfig(count=4), data=(batch((16, 16, 3)), None))
    with pytest.raises(RecipeError, match="exactly one of count or names"):
        BlockConfig()


def test_the_flatbuffer_has_fewer_ops_and_the_int8_export_with_channels_is_verified():
    model = resnetish(classes=10)
    x = batch((16, 16, 3), n=64)
    y = np.argmax(model(x).numpy(), axis=-1)
    before = tflite_file.read(export.convert(model, "float32"))
    smaller = remove_blocks(model, ["b1", "b4"])
    pruned = prune_channels(smaller, ChannelConfig(ratio=0.5, round_to=4), data=(x, y)).model
    content = export.convert(pruned, "int8", representative=x[:16])
    after = tflite_file.read(content)
    # each block is two convs (BN and ReLU fused into them) and the Add
    assert after.op_counts["CONV_2D"] == before.op_counts["CONV_2D"] - 2 * 2
    assert after.op_counts["ADD"] == before.op_counts["ADD"] - 2
    kernels = [t for t in after.tensors if t.is_constant and len(t.shape) == 4]
    assert len(kernels) == after.op_counts["CONV_2D"]
    assert all(t.shape[0] == 8 and t.dtype == "INT8" for t in kernels)  # every group: 16 -> 8 channels
    v = export.verify(content, x, y, y)
    assert v.ok, v.failures


def test_channels_then_blocks_composes_too():
    model = resnetish()
    x = batch((16, 16, 3), n=32)
    first = prune_channels(model, ChannelConfig(ratio=0.5, round_to=4), data=(x, None)).model
    assert [b.name for b in find_blocks(first)] == ["b1", "b2", "b4"]
    both = remove_blocks(first, ["b2"])
    assert first.count_params() - both.count_params() == next(b.params for b in find_blocks(first) if b.name == "b2")
    np.testing.assert_array_equal(both.get_layer("b4_conv").get_weights()[0], first.get_layer("b4_conv").get_weights()[0])


def test_a_pruned_network_replayed_at_224_keeps_its_widths_and_its_export_runs():
    model = resnetish()
    x = batch((16, 16, 3), n=16)
    pruned = prune_channels(remove_blocks(model, ["b2"]), ChannelConfig(ratio=0.5, round_to=4), data=(x, None)).model
    big = with_input_shape(pruned, (224, 224, 3))
    assert big.input_shape == (None, 224, 224, 3)

    def widths(m):
        return {layer.name: layer.get_weights()[0].shape for layer in m.layers if layer.get_weights()}

    assert widths(big) == widths(pruned)
    content = export.convert(big, "float32")
    info = tflite_file.read(content)
    assert info.tensors[info.inputs[0]].shape == [1, 224, 224, 3]
    kernels = sorted(tuple(t.shape) for t in info.tensors if t.is_constant and len(t.shape) == 4)
    small_info = tflite_file.read(export.convert(pruned, "float32"))
    assert kernels == sorted(tuple(t.shape) for t in small_info.tensors if t.is_constant and len(t.shape) == 4)
    xb = np.random.default_rng(1).random((2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(export.TFLiteModel(content).predict(xb), big(xb).numpy(),
                               atol=1e-4 * max(1.0, float(np.abs(big(xb).numpy()).max())))


def test_a_flatten_dense_model_is_refused_at_another_input_size():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="c")(inp)
    out = L.Dense(2, name="fc")(L.Flatten(name="flat")(x))
    with pytest.raises(Exception) as e:
        with_input_shape(keras.Model(inp, out), (16, 16, 3))
    assert "depend on the input size" in e.value.one_line()

"""Breadth of the Keras 3 -> tf_keras translation: every layer class, activation and operation in
the translation tables appears in one of these small models, which must translate to outputs
equal to Keras 3's and go back to Keras 3 equal as well."""

import numpy as np
import pytest

from edgeprune._tf import keras as tfk
from edgeprune._tf import tf
from edgeprune.keras3 import detect, plan, rules, verify
from edgeprune.keras3.export import save_keras3
from edgeprune.keras3.load import load_keras3

keras = pytest.importorskip("keras")
L = keras.layers
ops = keras.ops


def image_layers():
    x = keras.Input((12, 12, 3), name="image")
    h = L.Normalization(mean=0.5, variance=2.0, name="norm")(x)
    h = L.Conv2D(6, 3, padding="same", activation="relu6", name="conv")(h)
    h = L.DepthwiseConv2D(3, padding="same", activation="leaky_relu", name="dw")(h)
    h = L.SeparableConv2D(6, 3, padding="same", activation="elu", name="sep")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.LayerNormalization(name="ln")(h)
    h = L.GroupNormalization(groups=2, name="gn")(h)
    h = L.ReLU(max_value=4.0, negative_slope=0.1, threshold=0.2, name="relu")(h)
    h = L.LeakyReLU(negative_slope=0.1, name="leaky")(h)
    h = L.PReLU(name="prelu")(h)
    h = L.ELU(alpha=0.5, name="elu")(h)
    h = L.Conv2DTranspose(6, 3, strides=2, padding="same", activation="selu", name="deconv")(h)
    h = L.MaxPooling2D(name="maxpool")(h)
    h = L.AveragePooling2D(2, padding="same", name="avgpool")(h)
    h = L.ZeroPadding2D(1, name="pad")(h)
    h = L.Cropping2D(1, name="crop")(h)
    h = L.UpSampling2D(2, name="up")(h)
    h = L.SpatialDropout2D(0.2, name="sdrop")(h)
    h = L.GaussianNoise(0.1, name="gnoise")(h)
    h = L.GaussianDropout(0.1, name="gdrop")(h)
    h = L.AlphaDropout(0.1, name="adrop")(h)
    h = L.Rescaling(0.5, offset=0.1, name="rescale")(h)
    h = L.UnitNormalization(name="unit")(h)
    branches = [L.Activation(a, name=f"act_{a}")(h) for a in (
        "softplus", "softsign", "tanh", "sigmoid", "gelu", "mish", "silu", "swish", "hard_sigmoid",
        "hard_silu", "linear", "relu", "log_softmax")]
    merged = [
        L.Add(name="add")(branches[:3]),
        L.Subtract(name="sub")(branches[3:5]),
        L.Multiply(name="mul")(branches[5:7]),
        L.Average(name="avg")(branches[7:9]),
        L.Maximum(name="max")(branches[9:11]),
        L.Minimum(name="min")(branches[11:13]),
    ]
    h = L.Concatenate(name="concat")(merged)
    g1 = L.GlobalAveragePooling2D(keepdims=True, name="gap")(h)
    g2 = L.GlobalMaxPooling2D(name="gmp")(h)
    g1 = L.Reshape((-1,), name="reshape")(g1)
    p = L.Permute((2, 1), name="permute")(L.Reshape((6, 6), name="square")(g2))
    f = L.Flatten(name="flatten")(p)
    h = L.Concatenate(name="concat2")([g1, f])
    h = L.Identity(name="identity")(h)
    h = L.ActivityRegularization(l1=0.01, name="actreg")(h)
    h = L.Dropout(0.5, name="drop")(h)
    outs = [L.Dense(3, activation=a, name=f"dense_{a}")(h) for a in (
        "hard_silu", "exponential", "softmax", "selu")]
    outs.append(L.Softmax(name="softmax")(L.Dense(4, kernel_regularizer="l1", kernel_constraint="max_norm",
                                                  name="dense_plain")(h)))
    return keras.Model(x, outs, name="image_layers")


def sequence_layers():
    x = keras.Input((10, 4), name="seq")
    tokens = keras.Input((10,), dtype="int32", name="tokens")
    h = L.Conv1D(6, 3, padding="same", activation="relu", name="conv1")(x)
    h = L.DepthwiseConv1D(3, padding="same", name="dw1")(h)
    h = L.SeparableConv1D(6, 3, padding="same", name="sep1")(h)
    h = L.Conv1DTranspose(6, 3, strides=1, padding="same", name="deconv1")(h)
    h = L.MaxPooling1D(name="maxpool1")(h)
    h = L.AveragePooling1D(2, padding="same", name="avgpool1")(h)
    h = L.ZeroPadding1D(2, name="pad1")(h)
    h = L.Cropping1D(1, name="crop1")(h)
    h = L.UpSampling1D(2, name="up1")(h)
    h = L.SpatialDropout1D(0.2, name="sdrop1")(h)
    e = L.Embedding(5, 6, name="embed")(tokens)
    adapted = L.Normalization(name="adapted")
    adapted.adapt(np.random.default_rng(1).standard_normal((20, 6)).astype("float32") * 3.0 + 1.0)
    e = adapted(e)
    h = L.Concatenate(axis=1, name="join")([h, e])
    h = L.Add(name="attend")([h, L.MultiHeadAttention(2, 3, value_dim=4, name="mha")(h, h, h)])
    r1 = L.LSTM(5, return_sequences=True, name="lstm")(h)
    r2 = L.GRU(5, name="gru")(r1)
    r3 = L.SimpleRNN(5, name="rnn")(r1)
    g = L.Concatenate(name="pool")([L.GlobalAveragePooling1D(name="gap1")(r1), L.GlobalMaxPooling1D(name="gmp1")(r1)])
    rep = L.Flatten(name="flat")(L.RepeatVector(2, name="repeat")(r2))
    both = L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode="sum", name="bigru")(r1)
    td = L.GlobalMaxPooling1D(name="gmp_td")(L.TimeDistributed(L.Dense(3, activation="relu"), name="td")(both))
    td = L.EinsumDense("bc,cd->bd", output_shape=4, bias_axes="d", activation="tanh", name="einsum")(td)
    return keras.Model([x, tokens], [g, rep, r3, td], name="sequence_layers")


def volume_layers():
    x = keras.Input((4, 4, 4, 2), name="volume")
    h = L.Conv3D(3, 2, padding="same", name="conv3")(x)
    h = L.Conv3DTranspose(3, 2, padding="same", name="deconv3")(h)
    h = L.ZeroPadding3D(1, name="pad3")(h)
    h = L.Cropping3D(1, name="crop3")(h)
    h = L.UpSampling3D(2, name="up3")(h)
    h = L.SpatialDropout3D(0.1, name="sdrop3")(h)
    a = L.MaxPooling3D(name="maxpool3")(h)
    b = L.AveragePooling3D(2, name="avgpool3")(h)
    return keras.Model(x, [L.GlobalAveragePooling3D(name="gap3")(a), L.GlobalMaxPooling3D(name="gmp3")(b)],
                       name="volume_layers")


def operations():
    x = keras.Input((4, 6), name="x")
    y = keras.Input((4, 6), name="y")
    outs = [
        x + y, 3.0 - x, x * y, x / 2.0, ops.divide(x, 4.0), -x, x ** 2, abs(x), ops.square(x),
        ops.sqrt(ops.abs(x) + 1.0), ops.exp(ops.clip(x, -2.0, 2.0)), ops.log(ops.abs(x) + 1.0), ops.tanh(x),
        ops.maximum(x, y), ops.minimum(x, 0.5),
        ops.matmul(x, ops.transpose(y, (0, 2, 1))),
        ops.mean(x, axis=1, keepdims=True), ops.sum(x, axis=-1), ops.max(x, axis=1), ops.min(x, axis=2),
        ops.reshape(x, (-1, 24)), ops.concatenate([x, y], axis=1), ops.expand_dims(x, 1),
        ops.squeeze(ops.expand_dims(y, 2), axis=2), x[:, 1:3, ::2], x[..., None, 0], ops.cast(x, "float16"),
        ops.relu(x), ops.relu6(x * 4.0), ops.sigmoid(x), ops.silu(x), ops.leaky_relu(x, negative_slope=0.3),
        ops.softmax(x, axis=1), ops.log_softmax(x), ops.gelu(x), ops.gelu(x, approximate=False),
        ops.hard_sigmoid(x * 4.0), ops.hard_silu(x * 4.0),
    ]
    return keras.Model([x, y], outs, name="operations")


def sequential_with_expansion():
    return keras.Sequential([keras.Input((5,)), L.Dense(4, activation="hard_silu", name="d1"),
                             L.Dense(2, name="d2")], name="seq_hard_swish")


def shared_and_multi_output():
    """A layer and a nested functional model each called twice, a layer with several outputs,
    and dict outputs."""
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    shared = L.Dense(6, activation="tanh", name="shared")
    i = keras.Input((6,), name="inner_in")
    block = keras.Model(i, L.Dense(6, name="inner_dense")(i) * 0.5, name="block")
    ha, hb = block(shared(a)), block(shared(b))
    swish = L.Activation("hard_swish", name="shared_swish")
    ha, hb = swish(ha), swish(hb)
    seq = L.Reshape((2, 6), name="stack")(L.Concatenate(name="cat")([ha, hb]))
    out, state_h, state_c = L.LSTM(3, return_state=True, name="lstm_state")(seq)
    return keras.Model([a, b], {"out": out, "h": state_h, "c": L.Add(name="mix")([state_c, shared(ha)[:, :3]])},
                       name="shared_and_multi_output")


def transfer_learning():
    """The keras.io transfer-learning recipe: augmentation, preprocess_input (two operations), a
    frozen MobileNetV2 base called with training=False, a new head."""
    augmentation = keras.Sequential([
        L.RandomFlip("horizontal"), L.RandomRotation(0.1), L.RandomZoom(0.1), L.RandomTranslation(0.1, 0.1),
        L.RandomContrast(0.1), L.RandomBrightness(0.1),
    ], name="augmentation")
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    base.trainable = False
    inputs = keras.Input((36, 36, 3), name="photo")
    x = augmentation(inputs)
    x = L.Resizing(34, 34, name="resize")(x)
    x = L.CenterCrop(32, 32, name="center")(x)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    return keras.Model(inputs, L.Dense(5, name="head")(x), name="transfer_learning")


BUILDERS = [image_layers, transfer_learning, sequence_layers, volume_layers, operations, sequential_with_expansion,
            shared_and_multi_output]


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
        elif v.path.endswith("embeddings") or "kernel" in v.path or v.path.endswith(("bias", "gamma", "beta",
                                                                                       "moving_mean", "alpha")):
            v.assign((rng.standard_normal(tuple(v.shape)) * 0.3).astype(v.dtype))
    return model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras3_zoo")
    out = {}
    for i, build in enumerate(BUILDERS):
        model = randomize(build(), seed=i)
        path = folder / f"{build.__name__}.keras"
        model.save(path)
        out[build.__name__] = (model, path)
    return out


def test_tables_are_covered_by_the_zoo(zoo):
    """Every translated layer class and operation appears in the models below."""
    classes, op_classes = set(), set()

    def walk(model):
        for layer in model.operations if hasattr(model, "operations") else model.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            elif isinstance(layer, keras.layers.Layer):
                classes.add(type(layer).__name__)
            else:
                op_classes.add(type(layer).__name__)

    for model, _ in zoo.values():
        walk(model)
    missing_layers = set(rules.LAYER_RULES) - classes
    missing_ops = set(rules.tf_ops()) - op_classes
    assert not missing_layers, missing_layers
    assert not missing_ops, missing_ops


@pytest.mark.slow
@pytest.mark.parametrize("name", [b.__name__ for b in BUILDERS])
def test_zoo_model_translates_and_returns(zoo, tmp_path, name):
    original, path = zoo[name]
    model, info = load_keras3(path)
    assert info.max_abs_diff <= info.tolerance
    if name == "sequential_with_expansion":
        assert not isinstance(model, tfk.Sequential)  # hard_swish needs a branch: built as functional
        assert [layer.name for layer in model.layers if layer.weights] == ["d1", "d2"]
        assert any("rebuilt as functional" in note for note in info.notes)
        assert any("1 hard_sigmoid/hard_swish" in note for note in info.notes)

    rng = np.random.default_rng(5)
    x = [rng.integers(0, 5, (3, *t.shape[1:])).astype(t.dtype) if "int" in str(t.dtype)
         else rng.standard_normal((3, *t.shape[1:])).astype("float32") for t in original.inputs]
    x = x[0] if len(x) == 1 else x
    if name == "transfer_learning":
        x = (x + 2.0) * 50.0  # images in 0..255
    expected = tf.nest.flatten(original(x, training=False))
    got = tf.nest.flatten(model(x, training=False))
    for e, g in zip(expected, got):
        e, g = np.asarray(e, "float32"), np.asarray(g, "float32")
        assert np.max(np.abs(e - g)) <= 1e-4 * max(1.0, float(np.max(np.abs(e)))), name

    back = tmp_path / f"{name}.keras"
    result = save_keras3(model, back)
    assert result["max_abs_diff"] <= result["tolerance"]
    reloaded = keras.saving.load_model(back, compile=False)
    for e, g in zip(expected, tf.nest.flatten(reloaded(x, training=False))):
        e, g = np.asarray(e, "float32"), np.asarray(g, "float32")
        assert np.max(np.abs(e - g)) <= 1e-4 * max(1.0, float(np.max(np.abs(e)))), name


def assert_same_outputs(k3_model, tfk_model, x):
    """The translation against a forward pass of the Keras 3 model itself, on inputs of our own."""
    expected = tf.nest.flatten(k3_model(x, training=False))
    got = tf.nest.flatten(tfk_model(x, training=False))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        e, g = np.asarray(e, "float32"), np.asarray(g, "float32")
        assert e.shape == g.shape
        assert np.max(np.abs(e - g)) <= 1e-4 * max(1.0, float(np.max(np.abs(e))))


def test_operations_survive_the_h5_format(zoo, tmp_path):
    """Keras 3 cannot read its own .h5 files when they hold operations; edgeprune can."""
    original, _ = zoo["operations"]
    path = tmp_path / "operations.h5"
    original.save(path)
    model, info = load_keras3(path)
    assert info.source_format == "h5"
    assert info.ops_translated >= 38
    rng = np.random.default_rng(11)
    assert_same_outputs(original, model, [rng.standard_normal((3, 4, 6)).astype("float32") for _ in range(2)])


def test_a_fixed_batch_size_is_kept(tmp_path):
    x = keras.Input((4,), batch_size=2, name="fixed")
    y = L.Dense(4, name="d")(ops.reshape(x, (1, 8)))  # only works with the batch of 2
    path = tmp_path / "fixed.keras"
    original = keras.Model(x, y)
    original.save(path)
    model, info = load_keras3(path)
    assert tuple(model.inputs[0].shape) == (2, 4)
    assert_same_outputs(original, model, np.random.default_rng(12).standard_normal((2, 4)).astype("float32"))


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_mixed_precision_models_become_float32(tmp_path, fmt):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([
            keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation="relu", name="c"), L.BatchNormalization(name="bn"),
            L.GlobalAveragePooling2D(name="gap"), L.Dense(3, name="d"),
            L.Activation("softmax", dtype="float32", name="probs"),
        ], name="mixed")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    randomize(model, seed=3)
    path = tmp_path / f"mixed.{fmt}"
    model.save(path)
    translated, info = load_keras3(path)
    assert info.notes[0] == rules.MIXED_PRECISION_NOTE
    assert info.max_abs_diff <= info.tolerance
    assert {layer.dtype_policy.name for layer in translated.layers} == {"float32"}
    # against the mixed-precision Keras 3 model itself: equal within float16 rounding
    x = np.random.default_rng(2).standard_normal((4, 8, 8, 3)).astype("float32")
    assert np.max(np.abs(np.asarray(model(x)) - translated(x).numpy())) < 5e-3


def test_translated_hard_swish_converts_to_the_tflite_hard_swish_op(tmp_path):
    """hard_silu is rebuilt as tf_keras' own MobileNetV3 writes it, which the converter fuses."""
    import contextlib
    import io
    import re

    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, activation="hard_silu", name="conv")(x)
    h = L.Activation("hard_swish", name="act")(L.Conv2D(4, 1, name="conv2")(h))
    path = tmp_path / "hs.keras"
    randomize(keras.Model(x, h), seed=4).save(path)
    model, _ = load_keras3(path)
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_content=flatbuffer)
    ops_found = re.findall(r"Op#\d+ (\w+)", text.getvalue())
    assert ops_found.count("HARD_SWISH") == 2, ops_found


def test_check_inputs_follow_the_models_own_input_scaling(tmp_path):
    """Image models divide 0..255 inputs by 127.5: the check spreads its random inputs to match."""
    for name, head in (("div", lambda x: x / 127.5 - 1.0), ("rescale", L.Rescaling(1 / 255.0)),
                       ("plain", L.Dense(2))):
        x = keras.Input((4,), name="pixels")
        path = tmp_path / f"{name}.keras"
        keras.Model(x, L.Dense(2, name="d")(head(x))).save(path)
        model_plan, problems = plan.make_plan(detect.read_source(path).config)
        assert not problems
        _, by_name = verify.inputs_for(model_plan, 64)
        expected = {"div": 127.5, "rescale": 255.0, "plain": 1.0}[name]
        assert float(np.std(by_name["pixels"])) == pytest.approx(expected, rel=0.2)


@pytest.mark.slow
def test_tf_keras_mobilenet_v3_exports_to_keras3(tmp_path):
    """tf_keras' own MobileNetV3 names layers "Conv/BatchNorm" (Keras 3 refuses "/") and Multiply
    layers "multiply", the name Keras 3 gives its multiply operation."""
    model = tfk.applications.MobileNetV3Small(input_shape=(32, 32, 1), alpha=0.75, weights=None, classes=4,
                                              include_preprocessing=False)
    rng = np.random.default_rng(6)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in v.name
                       else (rng.standard_normal(w.shape) * 0.2).astype("float32")
                       for v, w in zip(model.weights, model.get_weights())])
    result = save_keras3(model, tmp_path / "v3.keras")
    assert result["max_abs_diff"] <= result["tolerance"]
    back = keras.saving.load_model(tmp_path / "v3.keras", compile=False)
    assert back.get_layer("Conv_BatchNorm").get_weights()[0].shape == model.get_layer("Conv/BatchNorm").gamma.shape

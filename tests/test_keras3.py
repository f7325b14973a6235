"""Keras 3 files into tf_keras and back: models are built with Keras 3 here, given random weights
(batch-norm statistics included, so no layer is an identity), saved as .keras and .h5, translated,
and compared output for output with the Keras 3 model."""

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeprune._tf import keras as tfk
from edgeprune._tf import tf
from edgeprune.errors import InputFileError, ModelError, OutputError, SchemaError
from edgeprune.keras3 import build, detect, plan, reference, verify, weights
from edgeprune.keras3.detect import is_keras3_file
from edgeprune.keras3.export import save_keras3
from edgeprune.keras3.load import Keras3Translation, load_keras3
from edgeprune.models import detect_format, load_model

keras = pytest.importorskip("keras")  # Keras 3 (tf_keras is `tfk`)

MODEL_NAMES = ["mobilenet_v2", "mobilenet_v3_small", "functional_nested", "sequential_cnn"]
FORMATS = ["keras", "h5"]
ROUND_TRIPS = ["mobilenet_v3_small", "functional_nested"]
MEASURED = {}  # (model, format or "round trip") -> (built-in check, independent check, largest |output|)


def randomize(model, seed=0):
    """Random weights everywhere; batch-norm variances positive."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif v.path.endswith("gamma"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            v.assign((rng.standard_normal(shape) * 0.2).astype("float32"))
    return model


def build_mobilenet_v2():
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5, classifier_activation=None)


def build_mobilenet_v3_small():
    return keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=5, minimalistic=False,
        include_preprocessing=True, classifier_activation=None,
    )


def build_functional_nested():
    layers = keras.layers
    inner = keras.Sequential(
        [keras.Input((12,)), layers.Dense(8, activation="relu", kernel_regularizer="l2"), layers.Dense(4)],
        name="inner",
    )
    i = keras.Input((6,), name="i")
    block = keras.Model(i, layers.Dense(6, activation="tanh", name="block_dense")(i) - i, name="block")
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    s = layers.Add(name="sum")([a, b])
    s = block(s)
    c = layers.Concatenate(name="concat")([s, a])
    z = inner(c)
    z2 = layers.Multiply(name="gate")([z * 2.0 + 1.0, a[:, :4]])
    return keras.Model([a, b], [z, z2], name="functional_nested")


def build_sequential_cnn():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            layers.Conv2D(8, 3, activation="relu", name="conv_a"),
            layers.BatchNormalization(name="bn_a"),
            layers.MaxPooling2D(name="pool_a"),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b"),
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="dense_a"),
            layers.Dropout(0.3, name="dropout"),
            layers.Dense(3, activation="softmax", name="dense_out"),
        ],
        name="sequential_cnn",
    )


BUILDERS = {
    "mobilenet_v2": build_mobilenet_v2,
    "mobilenet_v3_small": build_mobilenet_v3_small,
    "functional_nested": build_functional_nested,
    "sequential_cnn": build_sequential_cnn,
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> {"model": Keras 3 model, "keras": path, "h5": path}"""
    folder = tmp_path_factory.mktemp("keras3_models")
    out = {}
    for i, (name, builder) in enumerate(BUILDERS.items()):
        model = randomize(builder(), seed=i)
        paths = {"keras": folder / f"{name}.keras", "h5": folder / f"{name}.h5"}
        model.save(paths["keras"])
        model.save(paths["h5"])
        out[name] = {"model": model, **paths}
    return out


@pytest.fixture(scope="module")
def translated(saved):
    """(name, format) -> (tf_keras model, Keras3Translation), translated once per module."""
    cache = {}

    def get(name, fmt):
        if (name, fmt) not in cache:
            cache[(name, fmt)] = load_keras3(saved[name][fmt])
        return cache[(name, fmt)]

    return get


def own_inputs(model, batch=4, seed=123, spread=1.0):
    rng = np.random.default_rng(seed)
    arrays = [(rng.uniform(-1, 1, (batch, *t.shape[1:])) * spread).astype("float32") for t in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def max_diff(a, b):
    fa, fb = tf.nest.flatten(a), tf.nest.flatten(b)
    assert len(fa) == len(fb)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(fa, fb))


def largest(outputs):
    return max(float(np.max(np.abs(np.asarray(t)))) for t in tf.nest.flatten(outputs))


def spread_for(name):
    return 127.5 if name == "mobilenet_v3_small" else 1.0  # that model rescales 0..255 itself


def independent_check(saved, translated, name, fmt):
    """The translation against the Keras 3 model on other inputs than load_keras3 used; recorded
    in MEASURED. Returns the Keras 3 outputs and (built-in check, independent check, scale)."""
    model, info = translated(name, fmt)
    k3 = saved[name]["model"]
    x = own_inputs(k3, spread=spread_for(name))
    expected = k3(x, training=False)
    MEASURED[(name, fmt)] = (info.max_abs_diff, max_diff(expected, model(x, training=False)), largest(expected))
    return expected, MEASURED[(name, fmt)]


def round_trip(saved, translated, name, folder):
    """The translated .h5 written back to Keras 3 in `folder`, read by Keras 3 and compared with the
    original; recorded in MEASURED. Returns save_keras3's result, the file and the record."""
    model, _ = translated(name, "h5")
    out = folder / f"{name}_back.keras"
    result = save_keras3(model, out)
    back = keras.saving.load_model(out, compile=False)
    original = saved[name]["model"]
    x = own_inputs(original, seed=7, spread=spread_for(name))
    expected = original(x, training=False)
    MEASURED[(name, "round trip")] = (result["max_abs_diff"], max_diff(expected, back(x, training=False)),
                                      largest(expected))
    return result, out, MEASURED[(name, "round trip")]


# --- detection -------------------------------------------------------------------------------


def test_detects_keras3_files_by_content(saved, tmp_path):
    for name in MODEL_NAMES:
        assert is_keras3_file(saved[name]["keras"])
        assert is_keras3_file(saved[name]["h5"])
    # the same file under another name is still recognised
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(saved["sequential_cnn"]["keras"].read_bytes())
    assert is_keras3_file(renamed)

    legacy = tfk.Sequential([tfk.Input((3,)), tfk.layers.Dense(2)])
    legacy.save(tmp_path / "legacy.h5")
    legacy.save(tmp_path / "legacy.keras")
    assert not is_keras3_file(tmp_path / "legacy.h5")
    assert not is_keras3_file(tmp_path / "legacy.keras")
    assert not is_keras3_file(tmp_path / "missing.keras")
    (tmp_path / "notes.keras").write_text("not a model")
    assert not is_keras3_file(tmp_path / "notes.keras")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("config.json", "{}")
    assert not is_keras3_file(tmp_path / "other.zip")


FIXTURES = Path(__file__).parent / "fixtures"


def test_one_detector_tells_keras3_from_tf_keras_by_content_whatever_the_name(tmp_path):
    """Real Keras 3.11 files (tests/fixtures) and tf_keras files, each also copied under a name that
    lies: model_file classifies them by content; edgeprune.models asks the same detector, loads a
    tf_keras .h5 under any name (tf_keras reads HDF5 by content too) and refuses, with the name
    to give it, a file Keras would open with the wrong reader."""
    legacy = tfk.Sequential([tfk.Input((3,)), tfk.layers.Dense(2)], name="legacy")
    legacy.save(tmp_path / "tf_keras.keras")
    legacy.save(tmp_path / "tf_keras.h5")
    originals = {
        FIXTURES / "transfer_learned_k311.keras": ("keras", "3.11.3", "keras3"),
        FIXTURES / "transfer_learned_k311.h5": ("h5", "3.11.3", "keras3"),
        tmp_path / "tf_keras.keras": ("keras", tfk.__version__, "keras"),
        tmp_path / "tf_keras.h5": ("h5", tfk.__version__, "h5"),
    }
    for original, (container, version, fmt) in originals.items():
        lying = "h5" if container == "keras" else "keras"
        for name in (original.name, f"renamed.{lying}", "renamed.bin", "renamed"):
            path = original if name == original.name else tmp_path / f"{original.stem}_{container}-{name}"
            if path != original:
                path.write_bytes(original.read_bytes())
            found = detect.model_file(path)
            assert (found.container, found.keras_version, found.format) == (container, version, fmt), path.name
            assert is_keras3_file(path) == (fmt == "keras3"), path.name
            if path == original:
                assert detect_format(path) == fmt
            elif container == "h5" and fmt == "h5":  # tf_keras opens HDF5 whatever the name
                assert detect_format(path) == "h5"
            else:
                right = path.with_suffix(".keras" if container == "keras" else ".h5").name
                with pytest.raises(InputFileError, match=f"rename it to {re.escape(right)}\\.$"):
                    detect_format(path)
                if fmt == "keras3":
                    with pytest.raises(InputFileError, match=f"rename it to {re.escape(right)}\\.$"):
                        load_keras3(path)
    loaded, source = load_model(tmp_path / "tf_keras_h5-renamed.keras")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype("float32")
    assert source.kind == "file" and np.array_equal(loaded(x).numpy(), legacy(x).numpy())

    # neither archive nor HDF5: refused by what the name promised, as before
    (tmp_path / "notes.keras").write_text("not a model")
    (tmp_path / "notes.bin").write_text("not a model")
    with pytest.raises(InputFileError, match=r"not a readable \.keras file \(BadZipFile"):
        detect.model_file(tmp_path / "notes.keras")
    with pytest.raises(InputFileError, match=r"unknown model file type \.bin"):
        detect.model_file(tmp_path / "notes.bin")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("notes.txt", "no model")
    with pytest.raises(InputFileError, match=r"unknown model file type \.zip"):
        detect.model_file(tmp_path / "other.zip")


def test_loading_a_non_keras3_file_says_so(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_keras3(tmp_path / "missing.keras")
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(InputFileError, match="not a model saved by Keras 3"):
        load_keras3(tmp_path / "notes.keras")


# --- translation equals the Keras 3 model ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_translation_matches_keras3_outputs(saved, translated, name, fmt):
    model, info = translated(name, fmt)
    assert isinstance(model, tfk.Model)
    assert all(type(layer).__module__.startswith("tf_keras") for layer in model.layers)
    assert info.source_format == fmt
    assert info.keras_version == keras.__version__
    assert info.tolerance == pytest.approx(1e-4 * max(1.0, info.output_scale))  # the bound the README states
    assert info.layers_translated > 0
    assert info.max_abs_diff <= info.tolerance

    # an independent check, on other inputs than the ones load_keras3 used
    expected, (_, diff, scale) = independent_check(saved, translated, name, fmt)
    assert diff <= 1e-4 * max(1.0, scale)
    # outputs are not trivially constant (random weights reach the output)
    assert float(np.std(np.asarray(tf.nest.flatten(expected)[0]))) > 1e-3


def test_hard_swish_and_squeeze_excite_are_translated(translated):
    model, info = translated("mobilenet_v3_small", "keras")
    names = [layer.name for layer in model.layers]
    assert any(n.endswith("_hard_swish") for n in names)  # hard_silu activations
    assert any(n.endswith("squeeze_excite_mul") for n in names)
    assert info.ops_translated > 0  # x + 3, x * (1/6) of the SE hard sigmoid


def test_nested_models_stay_nested(translated):
    model, info = translated("functional_nested", "h5")
    inner = model.get_layer("inner")
    assert isinstance(inner, tfk.Sequential)
    assert isinstance(model.get_layer("block"), tfk.Model)
    assert inner.get_layer("dense").kernel_regularizer is not None
    assert info.ops_translated == 4  # -, *, +, [:, :4]


def test_translation_info_round_trips_and_refuses_unknown_versions(translated):
    _, info = translated("sequential_cnn", "keras")
    data = json.loads(json.dumps(info.to_dict()))
    assert data["schema_version"] == 1
    assert Keras3Translation.from_dict(data) == info
    with pytest.raises(SchemaError, match="schema_version"):
        Keras3Translation.from_dict({**data, "schema_version": 99})
    with pytest.raises(SchemaError, match="unknown keys"):
        Keras3Translation.from_dict({**data, "surprise": 1})


# --- refusals -----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="edgeprune_tests")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def test_custom_layer_is_refused_by_name(tmp_path):
    x = keras.Input((4,))
    y = Scale(name="my_scale")(keras.layers.Dense(4, name="d")(x))
    path = tmp_path / "custom.keras"
    keras.Model(x, y).save(path)
    with pytest.raises(ModelError, match="my_scale") as err:
        load_keras3(path)
    assert "Scale" in str(err.value) and "custom layer" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_untranslatable_layer_is_listed(tmp_path, fmt):
    x = keras.Input((4,))
    h = Scale(name="first_custom")(x)
    h = keras.layers.Dense(4, activation="hard_shrink", name="odd_activation")(h)
    inner = keras.Sequential([keras.Input((4,)), Scale(name="nested_custom")], name="holder")
    y = Scale(name="second_custom")(inner(h))
    path = tmp_path / f"two_custom.{fmt}"
    keras.Model(x, y).save(path)
    with pytest.raises(ModelError) as err:
        load_keras3(path)
    message = str(err.value)
    for name in ("first_custom", "second_custom", "holder/nested_custom", "odd_activation"):
        assert name in message
    assert "4 layer(s)" in message
    assert message.count("custom layer") == 3
    assert "hard_shrink" in message


def test_subclassed_model_is_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="edgeprune_tests")
    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Tiny(name="tiny")
    model(np.zeros((1, 3), "float32"))
    path = tmp_path / "tiny.keras"
    model.save(path)
    with pytest.raises(ModelError, match="tiny.*subclassed"):
        load_keras3(path)


def _tamper_and_verify(path, layer_path, atol=1e-4):
    """Run the translation steps by hand, spoil one layer's weights, then check."""
    source = detect.read_source(path)
    model_plan, problems = plan.make_plan(source.config)
    assert not problems
    k3_model = reference.load_reference(source)
    built = build.build_model(model_plan)
    weights.transfer_k3_to_tfk(model_plan, k3_model, built.model)
    target = built.model
    for part in layer_path.split("/"):
        target = target.get_layer(part)
    target.set_weights([w + 0.5 for w in target.get_weights()])
    return verify.verify_translation(built, k3_model, 4, atol, path.name)


def test_divergence_names_the_first_diverging_layer(saved):
    with pytest.raises(ModelError, match=r"first diverge at layer conv_b \(Conv2D\)"):
        _tamper_and_verify(saved["sequential_cnn"]["keras"], "conv_b")


def test_divergence_inside_a_nested_model_is_located(saved):
    second_dense = saved["functional_nested"]["model"].get_layer("inner").layers[1].name
    with pytest.raises(ModelError, match=re.escape(f"first diverge at layer inner/{second_dense} (Dense)")):
        _tamper_and_verify(saved["functional_nested"]["keras"], f"inner/{second_dense}")


def test_the_check_refuses_beyond_atol_on_check_batch_inputs(saved, monkeypatch):
    """atol sets the bound the check refuses beyond (times the largest |output|), and the check
    runs the Keras 3 model on check_batch inputs."""
    path = saved["sequential_cnn"]["keras"]
    diff, bound, scale = _tamper_and_verify(path, "conv_b", atol=10.0)  # spoiled, yet inside a loose bound
    assert diff > 1e-3 and bound == pytest.approx(10.0 * max(1.0, scale))
    with pytest.raises(ModelError, match="differs from the Keras 3 model"):
        _tamper_and_verify(path, "conv_b", atol=diff / 2 / max(1.0, scale))
    batches = []
    call = verify.call_k3
    monkeypatch.setattr(verify, "call_k3", lambda model, x: batches.append(len(x)) or call(model, x))
    _, info = load_keras3(path, check_batch=3, atol=1e-3)
    assert batches == [3] and info.check_batch == 3
    assert info.tolerance == pytest.approx(1e-3 * max(1.0, info.output_scale))


def test_bad_arguments_are_refused(saved):
    with pytest.raises(ModelError, match="check_batch"):
        load_keras3(saved["sequential_cnn"]["keras"], check_batch=0)
    with pytest.raises(ModelError, match="atol"):
        load_keras3(saved["sequential_cnn"]["keras"], atol=-1)


# --- back to Keras 3 ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_round_trip_back_to_keras3_is_equal(saved, translated, tmp_path, name):
    result, out, (_, diff, scale) = round_trip(saved, translated, name, tmp_path)
    assert result["max_abs_diff"] <= result["tolerance"]
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temp file left behind
    assert is_keras3_file(out)
    assert diff <= 1e-4 * max(1.0, scale)  # read back by Keras 3 itself, on other inputs


def test_save_keras3_refuses_wrong_suffix_and_foreign_layers(translated, tmp_path):
    model, _ = translated("sequential_cnn", "keras")
    with pytest.raises(OutputError, match=r"\.keras"):
        save_keras3(model, tmp_path / "model.h5")
    x = tfk.Input((4,))
    odd = tfk.Model(x, tfk.layers.LocallyConnected1D(2, 1, name="local")(tfk.layers.Reshape((4, 1))(x)))
    with pytest.raises(ModelError, match="local"):
        save_keras3(odd, tmp_path / "odd.keras")
    assert not (tmp_path / "odd.keras").exists()
    # tf_keras' hard_sigmoid (slope 0.2) is not Keras 3's (relu6(x + 3) / 6): refused, not mistranslated
    hs = tfk.Sequential([tfk.Input((3,)), tfk.layers.Dense(2, activation="hard_sigmoid", name="gate")])
    with pytest.raises(ModelError, match="gate.*hard_sigmoid"):
        save_keras3(hs, tmp_path / "hs.keras")


# --- TF-MOT accepts the result --------------------------------------------------------------


@pytest.mark.slow
def test_tfmot_prunes_translated_models(translated, tmp_path):
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    schedule = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)

    # every layer of MobileNetV2 and the Sequential CNN is in TF-MOT's registry: whole-model wrapping
    model, _ = translated("mobilenet_v2", "keras")
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    assert sum(type(layer).__name__ == "PruneLowMagnitude" for layer in pruned.layers) == len(model.layers) - 1

    model, _ = translated("sequential_cnn", "h5")
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8, 16, 16, 1)).astype("float32")
    pruned.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    with pytest.raises(ModelError, match="strip_pruning"):
        save_keras3(pruned, tmp_path / "wrapped.keras")
    stripped = sparsity.strip_pruning(pruned)
    for name in ("conv_a", "conv_b", "dense_a", "dense_out"):
        assert float(np.mean(stripped.get_layer(name).kernel.numpy() == 0)) == pytest.approx(0.5, abs=0.05)
    # the pruned model goes back to Keras 3 with its zeros
    save_keras3(stripped, tmp_path / "pruned.keras")
    back = keras.saving.load_model(tmp_path / "pruned.keras", compile=False)
    assert float(np.mean(back.get_layer("dense_a").kernel.numpy() == 0)) == pytest.approx(0.5, abs=0.05)

    # MobileNetV3 has TFOpLambda (x + 3) and Rescaling, which TF-MOT 0.8.1 does not list (its
    # registry entry for Rescaling is broken): wrap layer by layer, as TF-MOT documents
    model, _ = translated("mobilenet_v3_small", "keras")

    def wrap(layer):
        if isinstance(layer, (tfk.layers.Conv2D, tfk.layers.Dense)):
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer.__class__.from_config(layer.get_config())

    pruned = tfk.models.clone_model(model, clone_function=wrap)
    wrapped = [layer for layer in pruned.layers if type(layer).__name__ == "PruneLowMagnitude"]
    assert len(wrapped) == sum(isinstance(layer, tfk.layers.Conv2D) for layer in model.layers)
    assert pruned(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 5)


@pytest.mark.slow
def test_zzz_report_measured_differences(saved, translated, tmp_path, capsys):
    """Every model was checked both ways and stayed within the stated bound; prints the measured
    differences (run with -s to see them). Measures what the tests above have not (when run alone,
    or after a failure)."""
    for name in MODEL_NAMES:
        for fmt in FORMATS:
            if (name, fmt) not in MEASURED:
                independent_check(saved, translated, name, fmt)
    for name in ROUND_TRIPS:
        if (name, "round trip") not in MEASURED:
            round_trip(saved, translated, name, tmp_path)
    assert set(MEASURED) == {(n, f) for n in MODEL_NAMES for f in FORMATS} | {(n, "round trip") for n in ROUND_TRIPS}
    for key, (checked, independent, scale) in MEASURED.items():
        bound = 1e-4 * max(1.0, scale)
        assert checked <= bound and independent <= bound, (key, checked, independent, bound)
    with capsys.disabled():
        for key, (checked, independent, scale) in sorted(MEASURED.items()):
            print(f"\n  {key}: built-in check {checked:.3g}, independent check {independent:.3g}, "
                  f"largest |output| {scale:.3g}", end="")


def test_loading_reports_progress_prints_nothing_and_leaves_the_file_alone(saved, capfd):
    import hashlib

    from edgeprune import progress

    class Recorder(progress.Reporter):
        def __init__(self):
            self.labels, self.messages = [], []

        def task(self, label, total):
            self.labels.append(label)
            return progress.Task(label, total)

        def log(self, message):
            self.messages.append(message)

    path = saved["sequential_cnn"]["h5"]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    recorder = Recorder()
    previous = progress.set_reporter(recorder)
    try:
        capfd.readouterr()
        load_keras3(path)
        out = capfd.readouterr().out
    finally:
        progress.set_reporter(previous)
    assert out == ""
    assert recorder.labels == ["Translating Keras 3 model"]
    assert "Keras 3" in recorder.messages[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before

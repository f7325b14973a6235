"""Transfer-learned models: a base model called with training=False, most of its layers frozen, a
new head. The fixtures are real files written by Keras 3.11.3 (tests/fixtures/make_transfer_learned.py):
before the fix they loaded with every layer unfrozen and pruned to 0 % inside the base, because
the recorded training=False pinned TF-MOT's wrappers to inference mode."""

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import core_fixtures as cf
from edgeprune import export, sparsity
from edgeprune.errors import PruningError
from edgeprune.models import load_model

FIXTURES = Path(__file__).parent / "fixtures"
FILES = ["transfer_learned_k311.h5", "transfer_learned_k311.keras"]
BASE = "mobilenetv2_0.20_96"


def _frozen_in_file(path: Path) -> set[str]:
    """Names of the base's layers saved with trainable = false, read from the file's config."""
    if path.suffix == ".h5":
        with h5py.File(path) as f:
            config = json.loads(f.attrs["model_config"])
    else:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    base = next(lay for lay in config["config"]["layers"] if lay["config"].get("name") == BASE)
    return {lay["config"]["name"] for lay in base["config"]["layers"]
            if lay["class_name"] != "InputLayer" and lay["config"].get("trainable") is False}


@pytest.fixture(scope="module")
def data():
    from edgeprune.data import fit_to_model, load_fashion_mnist

    return fit_to_model(load_fashion_mnist(), (96, 96, 3), 10, train_limit=64, test_limit=32)


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_frozen_layers_of_a_keras311_file_are_pruned_and_export(name, data):
    path = FIXTURES / name
    frozen = _frozen_in_file(path)
    assert len(frozen) == 122  # 123 of 155 layers, the input included
    model, source = load_model(path)
    base = model.get_layer(BASE)
    assert {lay.name for lay in base.layers if not lay.trainable} == frozen  # the file's flags, kept
    assert any("training" in note for note in source.details["notes"])

    pruned, rep = sparsity.prune(model, "unstructured", data.x_train, data.y_train, target=0.5, epochs=1,
                                 batch_size=32)
    inner = pruned.get_layer(BASE)
    targeted = {lay.name for lay in rep.layers if lay.targeted}
    frozen_convs = {n for n in frozen if type(inner.get_layer(n)).__name__ == "Conv2D"} - {"Conv1"}
    assert len(frozen_convs) == 26 and frozen_convs <= targeted and "dense" not in targeted
    for layer_name in targeted:  # measured here, from the stripped weights
        kernel = inner.get_layer(layer_name).kernel.numpy()
        assert abs(np.mean(kernel == 0) - 0.5) < 0.01, layer_name
    assert {lay.name for lay in inner.layers if not lay.trainable} == frozen  # still frozen after pruning
    dense = {lay.name: lay.reason for lay in rep.layers if not lay.targeted}
    assert dense["Conv1"] == "skipped by the recipe's skip patterns"
    assert "never prunes" in dense["block_5_depthwise"]

    content = export.convert(pruned, "float32")
    v = export.verify(content, data.x_test, data.y_test, keras_model=pruned, float32=True)
    assert v.ok, v.failures


def _tiny_transfer(pinned: bool):
    """A tf_keras transfer set-up on the tiny CNN: base frozen but for conv_b and its BN, called
    with training=False (pinned) or not; GAP and a new head."""
    from edgeprune._tf import keras

    keras.utils.set_random_seed(1)
    L = keras.layers
    i = keras.Input(cf.INPUT)
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.Conv2D(16, 3, padding="same", name="conv_a")(x)
    x = L.BatchNormalization(name="bn_a")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(32, 1, name="conv_b")(x)
    x = L.BatchNormalization(name="bn_b")(x)
    base = keras.Model(i, L.ReLU()(x), name="base")
    for layer in base.layers:
        layer.trainable = layer.name in ("conv_b", "bn_b")
    inp = keras.Input(cf.INPUT)
    y = base(inp, training=False) if pinned else base(inp)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="head")(L.Dropout(0.2)(y)), name="transfer")


@pytest.mark.parametrize("pinned", [True, False], ids=["training=False", "no-training-arg"])
def test_tf_keras_base_called_for_inference_is_pruned_and_stays_in_inference_mode(pinned):
    ds = cf.tiny_dataset(train=640, test=64)
    model = _tiny_transfer(pinned)
    moving = model.get_layer("base").get_layer("bn_b").moving_mean.numpy().copy()
    pruned, rep = sparsity.prune(model, "unstructured", ds.x_train, ds.y_train, target=0.5, epochs=1,
                                 batch_size=64, schedule="polynomial")
    inner = pruned.get_layer("base")
    assert {lay.name for lay in rep.layers if lay.targeted} == {"conv_a", "conv_b"}
    for name in ("conv_a", "conv_b"):  # conv_a frozen, conv_b trainable
        assert abs(np.mean(inner.get_layer(name).kernel.numpy() == 0) - 0.5) < 0.01, name
    assert not inner.get_layer("conv_a").trainable and inner.get_layer("conv_b").trainable
    moved = float(np.abs(inner.get_layer("bn_b").moving_mean.numpy() - moving).max())
    # training=False keeps the trainable BatchNormalization on its moving statistics, as the model asks
    assert (moved == 0.0) if pinned else (moved > 0.0)
    wrapped, _ = sparsity.apply_pruning(model, "unstructured", sparsity.make_schedule(
        "unstructured", "constant", 0.5, 0.0, 0, -1, None, 10)[0], {"stem", "head"}, _default_strategy())
    pins = {w.layer.name: by for w, by in sparsity.pinned_wrappers(wrapped)}
    assert pins == ({"conv_a": "base", "conv_b": "base"} if pinned else {})


def _default_strategy():
    from edgeprune.train import get_strategy

    return get_strategy("default")


def _report(target, schedule, *layers):
    rep = sparsity.SparsityReport("unstructured", target, schedule=schedule)
    rep.layers = [sparsity.LayerSparsity(name, "Conv2D", 100, zeros, True) for name, zeros in layers]
    return rep


def test_a_target_missed_names_its_cause():
    sched = {"kind": "constant", "target": 0.5, "begin_step": 0, "end_step": -1, "frequency": 1, "steps": 8}
    sparsity.check_target(_report(0.5, sched, ("a", 50), ("b", 50)), {"a": 8, "b": 8})
    with pytest.raises(PruningError, match=r"1 of them \(b\) never ran a training step") as e:
        sparsity.check_target(_report(0.5, sched, ("a", 50), ("b", 0)), {"a": 8, "b": 0})
    assert "lower frequency" not in str(e.value)
    rare = {**sched, "frequency": 100}
    with pytest.raises(PruningError, match=r"updates the masks at no step.*lower frequency or fine-tune longer"):
        sparsity.check_target(_report(0.5, rare, ("a", 0)), {"a": 8})
    with pytest.raises(PruningError, match=r"although the masks were updated on 8 steps") as e:
        sparsity.check_target(_report(0.5, sched, ("a", 10)), {"a": 8})
    assert "lower frequency" not in str(e.value)
    assert sparsity.mask_update_steps({"steps": 250, "begin_step": 0, "frequency": 100}) == 2
    assert sparsity.mask_update_steps({"steps": 10, "begin_step": 3, "frequency": 2, "end_step": 8}) == 3


def _kernels(model, *names):
    base = model.get_layer("base")
    return {n: base.get_layer(n).kernel.numpy().copy() for n in names}


@pytest.mark.parametrize("mode", sparsity.FROZEN_MODES)
def test_frozen_layers_are_unfrozen_kept_or_skipped_and_the_flags_come_back(mode):
    """conv_a is frozen, conv_b trains: `frozen` decides whether conv_a trains while it is pruned
    (unfreeze), is pruned but keeps its weights (keep) or stays dense (skip)."""
    ds = cf.tiny_dataset(train=640, test=64)
    model = _tiny_transfer(pinned=False)
    before = _kernels(model, "conv_a", "conv_b")
    pruned, rep = sparsity.prune(model, "unstructured", ds.x_train, ds.y_train, target=0.5, epochs=1,
                                 batch_size=64, frozen=mode)
    after = _kernels(pruned, "conv_a", "conv_b")
    kept = after["conv_a"] != 0
    assert rep.frozen == {"mode": mode, "layers": ["conv_a"]}
    assert abs(np.mean(after["conv_b"] == 0) - 0.5) < 0.01
    if mode == "skip":
        np.testing.assert_array_equal(after["conv_a"], before["conv_a"])
        assert {lay.name: lay.reason for lay in rep.layers}["conv_a"] == sparsity.FROZEN_SKIP_REASON
    else:
        assert abs(np.mean(~kept) - 0.5) < 0.01
        same = np.array_equal(after["conv_a"][kept], before["conv_a"][kept])
        assert same == (mode == "keep")  # unfreeze: the kept weights trained to make up for the zeros
    assert not pruned.get_layer("base").get_layer("conv_a").trainable  # the model's flags, restored
    assert pruned.get_layer("base").get_layer("conv_b").trainable


def test_a_frozen_base_stays_frozen_with_keep_even_where_its_layers_say_trainable():
    """base.trainable = False, then conv_b set trainable: nothing in the base trains (Keras counts
    the model's flag first). Cloning loses a nested model's own flag; pruning must not."""
    ds = cf.tiny_dataset(train=640, test=64)
    model = _tiny_transfer(pinned=False)
    base = model.get_layer("base")
    base.trainable = False
    base.get_layer("conv_b").trainable = True
    before = _kernels(model, "conv_b")["conv_b"]
    pruned, rep = sparsity.prune(model, "unstructured", ds.x_train, ds.y_train, target=0.5, epochs=1,
                                 batch_size=64, frozen="keep")
    after = _kernels(pruned, "conv_b")["conv_b"]
    assert rep.frozen["layers"] == ["conv_a", "conv_b"]
    np.testing.assert_array_equal(after[after != 0], before[after != 0])
    inner = pruned.get_layer("base")
    assert not inner.trainable and inner.get_layer("conv_b").trainable

"""TF-MOT sparsity, PQAT and export on a tiny CNN trained on real Fashion-MNIST: achieved
sparsity, the 2:4 pattern, sparsity surviving into the int8 flatbuffer, accuracy through LiteRT."""

import numpy as np
import pytest

import core_fixtures as cf
from edgeprune import export, quantize, sparsity, tflite_file
from edgeprune.errors import DataError, PruningError, RecipeError


@pytest.fixture(scope="module")
def trained(tiny_model_dir):
    return cf.load_trained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def ds():
    return cf.tiny_dataset()


@pytest.fixture(scope="module")
def pruned70(trained, ds):
    return sparsity.prune(trained, "unstructured", ds.x_train, ds.y_train, target=0.7, epochs=1, batch_size=64,
                          learning_rate=1e-3)


def test_unstructured_reaches_target_and_reports_dense_layers(pruned70):
    model, rep = pruned70
    by_name = {lay.name: lay for lay in rep.layers}
    assert {n for n, lay in by_name.items() if lay.targeted} == {"conv_a", "conv_b"}
    for name in ("conv_a", "conv_b"):
        k = model.get_layer(name).kernel.numpy()
        assert abs(np.mean(k == 0) - 0.7) < 0.01, name  # measured from the stripped weights
    assert by_name["dw"].sparsity == 0 and "never prunes" in by_name["dw"].reason
    assert by_name["stem"].reason == "skipped by the recipe's skip patterns"
    assert by_name["classifier"].sparsity == 0
    assert type(model.get_layer("conv_a")).__name__ == "Conv2D"  # stripped: no wrapper left


def test_frequency_trap_fails_loudly(trained, ds):
    with pytest.raises(PruningError, match=r"targeted layers ended below the 80% target"):
        sparsity.prune(trained, "unstructured", ds.x_train[:640], ds.y_train[:640], target=0.8, epochs=0.5,
                       batch_size=64, frequency=100)


def test_skip_regex_matching_nothing_is_an_error(trained, ds):
    with pytest.raises(RecipeError, match=r"skip pattern '\^nope' matches no layer of tiny"):
        sparsity.prune(trained, "unstructured", ds.x_train, ds.y_train, skip_patterns=["^nope"])


def test_two_of_four_pattern_holds_in_every_group(trained, ds):
    model, rep = sparsity.prune(trained, "2:4", ds.x_train[:1024], ds.y_train[:1024], epochs=0.25, batch_size=64)
    assert rep.m_by_n_ok is True
    k = model.get_layer("conv_b").kernel.numpy()  # (1, 1, 16, 32): groups of 4 along the 16 inputs
    groups = np.transpose(k, (3, 0, 1, 2)).reshape(32, 4, 4)
    assert np.all(np.count_nonzero(groups, axis=-1) <= 2)
    assert not {lay.name: lay for lay in rep.layers}["dw"].targeted  # depthwise stays dense under 2:4 too
    dense = trained.get_layer("conv_b").kernel.numpy()
    assert sparsity.m_by_n_violations(dense) > 0  # the checker does see a dense kernel


def test_sparsity_survives_pqat_into_int8_flatbuffer(pruned70, ds):
    model, _ = pruned70
    qat = quantize.quantize_aware(model, ds.x_train, ds.y_train, preserve_sparsity=True, epochs=0.2, batch_size=64)
    content = export.convert(qat, "qat")
    info = tflite_file.read(content)
    kernels = {t.name: t for t in info.tensors if t.is_constant and t.dtype == "INT8" and len(t.shape) == 4}
    conv_b = next(t for n, t in kernels.items() if "conv_b" in n)
    assert conv_b.shape == [32, 1, 1, 16]
    assert conv_b.zero_fraction >= 0.69
    v = export.verify(content, ds.x_test, ds.y_test)
    assert v.ok and v.accuracy > 0.5


def test_float32_export_matches_keras_and_sparse_encoding_is_chosen_by_bytes(pruned70, ds):
    from edgeprune.steps import choose_encoding

    model, _ = pruned70
    content, info = choose_encoding(model, "float32", "auto", True)
    # both encodings converted here: the file chosen is the smaller, and it holds sparse tensors
    # exactly when it is the sparse one (both run in the default interpreter: verified below)
    dense, sparse = export.convert(model, "float32"), export.convert(model, "float32", sparse=True)
    assert tflite_file.read(sparse).has_sparse_tensors and not tflite_file.read(dense).has_sparse_tensors
    assert len(content) == min(len(dense), len(sparse))
    assert tflite_file.read(content).has_sparse_tensors == (len(sparse) < len(dense))
    assert export.verify(sparse, ds.x_test[:50], ds.y_test[:50]).ok
    v = export.verify(content, ds.x_test, ds.y_test, keras_model=model, float32=True)
    assert v.ok and v.max_abs_diff_vs_keras < export.FLOAT32_ATOL
    keras_acc = cf.np_accuracy(model.predict(ds.x_test, verbose=0), ds.y_test)
    assert abs(v.accuracy - keras_acc) < 0.005


def test_int8_ptq_accuracy_through_litert_and_needs_data(trained, ds):
    with pytest.raises(DataError, match="int8 export needs representative data"):
        export.convert(trained, "int8")
    content = export.convert(trained, "int8", representative=ds.x_train[:100])
    info = tflite_file.read(content)
    assert any(t.dtype == "INT8" and len(t.shape) == 4 for t in info.tensors if t.is_constant)
    base = cf.np_accuracy(trained.predict(ds.x_test, verbose=0), ds.y_test)
    v = export.verify(content, ds.x_test, ds.y_test, np.argmax(trained.predict(ds.x_test, verbose=0), -1))
    assert v.ok and v.accuracy > base - 0.05 and v.agreement > 0.9


def test_pruning_reaches_layers_inside_a_nested_base_model(trained, ds):
    """Transfer learning nests a base model as one layer; its convolutions must still be pruned."""
    from edgeprune._tf import keras

    base = keras.Model(trained.input, trained.get_layer("conv_b").output, name="base")
    base.trainable = False
    i = keras.Input(cf.INPUT)
    x = keras.layers.GlobalAveragePooling2D()(base(i))
    o = keras.layers.Dense(10, activation="softmax", name="head")(x)
    outer = keras.Model(i, o, name="transfer")
    pruned, rep = sparsity.prune(outer, "unstructured", ds.x_train[:640], ds.y_train[:640], target=0.5,
                                 epochs=0.5, batch_size=64)
    targeted = {lay.name for lay in rep.layers if lay.targeted}
    assert targeted == {"conv_a", "conv_b"}  # stem (first conv) and head (classifier) skipped
    inner = pruned.get_layer("base")
    assert abs(np.mean(inner.get_layer("conv_b").kernel.numpy() == 0) - 0.5) < 0.01

import gzip
import struct

import numpy as np
import pytest

from edgeprune import data, recipe
from edgeprune.errors import DataError, InputFileError, RecipeError


def test_fashion_mnist_idx_reader_reads_the_real_package():
    ds = data.load_fashion_mnist()
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(ds.y_train)) == list(range(10))
    assert np.bincount(ds.y_test).tolist() == [1000] * 10  # balanced classes


def test_truncated_idx_file_is_refused(tmp_path):
    p = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 10, 28, 28) + b"\0" * 100)
    with pytest.raises(InputFileError, match=r"is truncated: 100 data bytes, expected 7840"):
        data.read_idx(p)


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        data.load_fashion_mnist(tmp_path)
    assert "sudo apt-get install dataset-fashion-mnist" in str(e.value)


def test_fit_to_model_resizes_converts_channels_and_normalises():
    ds = data.Dataset("t", np.full((4, 28, 28, 1), 255, np.uint8), np.arange(4) % 2,
                      np.zeros((2, 28, 28, 1), np.uint8), np.array([0, 1]), 2)
    out = data.fit_to_model(ds, (32, 32, 3), 2, "-1_1")
    assert out.x_train.shape == (4, 32, 32, 3) and out.x_train.dtype == np.float32
    assert np.allclose(out.x_train, 1.0) and np.allclose(out.x_test, -1.0)
    with pytest.raises(DataError, match="the dataset t has 2 classes but the model outputs 10"):
        data.fit_to_model(ds, (32, 32, 3), 10)


def test_npz_and_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8), y_train=np.arange(6) % 3,
             x_test=rng.integers(0, 255, (3, 8, 8), dtype=np.uint8), y_test=np.arange(3))
    ds = data.load_npz(tmp_path / "d.npz")
    assert ds.x_train.shape == (6, 8, 8, 1) and ds.num_classes == 3
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="lacks the arrays y_train, x_test, y_test"):
        data.load_npz(tmp_path / "bad.npz")
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = data.load_image_folder(tmp_path / "imgs", test_fraction=0.2)
    assert ds.class_names == ["cat", "dog"] and len(ds.x_train) == 8 and len(ds.x_test) == 2
    assert ds.x_train.shape[1:] == (10, 12, 3)


RECIPE = """
name = "r"
[model]
architecture = "mobilenet_v2"
[[variant]]
name = "a"
"""


def test_recipe_unknown_key_names_the_closest(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(RECIPE + "target_sparsty = 0.5\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert e.value.one_line() == "unknown key 'target_sparsty' in [variant a]; did you mean 'target_sparsity'?"


def test_recipe_sparsity_range_and_overrides(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(RECIPE + "prune = 'unstructured'\ntarget_sparsity = 1.0\n")
    with pytest.raises(RecipeError, match=r"target_sparsity = 1.0 is outside \[0, 1\)"):
        recipe.load(p)
    r = recipe.load(p, ["variant.a.target_sparsity=0.75", "baseline.epochs=2", "bench.threads=[1, 4]"])
    assert r.variants[0].target_sparsity == 0.75 and r.baseline.epochs == 2.0 and r.bench.threads == [1, 4]
    with pytest.raises(RecipeError, match="quantize = 'qat' after unstructured pruning would erase the sparsity"):
        recipe.load(p, ["variant.a.target_sparsity=0.5", "variant.a.quantize=qat"])


def test_default_recipe_is_valid():
    r = recipe.load("models/mobilenet_v2_fashion.toml")
    assert r.model.architecture == "mobilenet_v2" and r.baseline.epochs == 3
    assert {v.prune for v in r.variants} >= {"none", "unstructured", "2:4"}


def test_recipe_channels_table_is_checked_at_load(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(RECIPE + "prune = 'channels'\nchannels = { ratio = 0.3, critrion = 'l1' }\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert e.value.one_line() == "unknown key 'critrion' in [variant a] channels; did you mean 'criterion'?"
    p.write_text(RECIPE + "prune = 'channels'\nchannels = { ratio = 1.3 }\n")
    with pytest.raises(RecipeError, match=r"\[variant a\] channels: channel ratio 1.3 is out of range"):
        recipe.load(p)
    p.write_text(RECIPE + "prune = 'channels'\n")
    with pytest.raises(RecipeError, match="needs a \\[variant.channels\\] table"):
        recipe.load(p)

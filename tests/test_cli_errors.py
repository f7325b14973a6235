"""Bad input through the real CLI: one clear line, exit code 2, no traceback, nothing lost."""

import hashlib
import shutil

import numpy as np
import pytest

from test_bad_inputs import snapshot


@pytest.fixture
def error_line(cli_run, tmp_path):
    """Runs edgeprune (in tmp_path) and returns its one `error: ...` line, having checked that the
    exit code is 2, that nothing else is printed on stdout or stderr, and that no file under
    tmp_path was created, changed or removed."""

    def run(*args, env=None):
        before = snapshot(tmp_path)
        r = cli_run(*args, env=env)
        assert (r.returncode, r.stdout) == (2, ""), (r.returncode, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert snapshot(tmp_path) == before
        return lines[0]

    return run


@pytest.fixture
def tiny(tiny_model_dir, tmp_path):
    p = tmp_path / "tiny.keras"
    shutil.copyfile(tiny_model_dir / "tiny.keras", p)
    return p


def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_missing_model_file(error_line):
    line = error_line("prune", "nope.keras", "--method", "unstructured", "--out", "o.keras")
    assert line == "error: model file not found: nope.keras; check the path, or name a built-in architecture."


def test_corrupt_and_truncated_model_files(error_line, tmp_path, tiny):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert "bad.keras is not a readable .keras file" in error_line("eval", bad)
    h5 = tmp_path / "t.h5"
    from edgeprune._tf import keras

    keras.models.load_model(tiny, compile=False).save(h5)
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    assert "t.h5 is not a readable .h5 file" in error_line("eval", h5)


def test_corrupt_tflite(error_line, tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    assert "m.tflite is corrupt or truncated" in error_line("inspect", p)
    p.write_bytes(b"hello world, not a model")
    assert "is not a TFLite flatbuffer (no TFL3 identifier)" in error_line("inspect", p)


def test_subclassed_model_is_refused():
    from edgeprune._tf import keras
    from edgeprune.errors import ModelError
    from edgeprune.models import check_supported

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ModelError) as e:
        check_supported(Net())
    assert e.value.one_line() == ("net is a subclassed model (Net); TF-MOT and channel pruning need the layer graph; "
                                  "rebuild it with the functional or Sequential API.")


def test_bad_sparsity_and_skip_regex(error_line, tiny):
    before = digest(tiny)
    line = error_line("prune", tiny, "--method", "unstructured", "--sparsity", "1.2", "--out", "o.keras",
                      "--train-limit", "64", "--test-limit", "64")
    assert "target sparsity 1.2 is outside [0, 1)" in line
    line = error_line("prune", tiny, "--method", "unstructured", "--skip", "^nope", "--out", "o.keras",
                      "--train-limit", "64", "--test-limit", "64")
    assert "skip pattern '^nope' matches no layer of tiny" in line
    assert "is the input file" in error_line("prune", tiny, "--method", "unstructured", "--out", tiny, "--force")
    assert digest(tiny) == before


def test_dataset_that_does_not_fit(error_line, tmp_path, tiny):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x_train=rng.integers(0, 255, (8, 16, 16), dtype=np.uint8),
             y_train=np.arange(8) % 3, x_test=rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), y_test=np.arange(3))
    line = error_line("eval", tiny, "--data", tmp_path / "three.npz")
    assert "the dataset three has 3 classes but the model outputs 10" in line
    np.savez(tmp_path / "rgba.npz", x_train=np.zeros((4, 16, 16, 2), np.uint8), y_train=np.arange(4),
             x_test=np.zeros((10, 16, 16, 2), np.uint8), y_test=np.arange(10))
    assert "images have 2 channels but the model wants 1" in error_line("eval", tiny, "--data", tmp_path / "rgba.npz")


def test_fashion_mnist_not_installed(error_line, tiny, tmp_path):
    line = error_line("eval", tiny, env={"EDGEPRUNE_FASHION_MNIST_DIR": str(tmp_path / "none")})
    assert "install it with: sudo apt-get install dataset-fashion-mnist" in line


def test_int8_without_training_data(error_line, tmp_path, tiny):
    np.savez(tmp_path / "notrain.npz", x_train=np.zeros((0, 16, 16), np.uint8), y_train=np.zeros(0, np.int64),
             x_test=np.zeros((10, 16, 16), np.uint8), y_test=np.arange(10))
    line = error_line("quantize", tiny, "--mode", "int8", "--data", tmp_path / "notrain.npz", "--out", "m.tflite")
    assert "int8 calibration needs training images" in line


RECIPE = """
name = "r"
[model]
path = "{model}"
[data]
train_limit = 64
test_limit = 64
[[variant]]
name = "a"
"""


def test_output_folder_with_a_run_is_kept_and_unwritable_folder(error_line, tmp_path, tiny):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(model=tiny))
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text('{"keep": true}')
    line = error_line("run", recipe, "--out", run)
    assert f"the output folder {run} already holds a run; pass --force to replace it" in line
    (tmp_path / "afile").write_text("x")
    assert "cannot write the output folder" in error_line("run", recipe, "--out", tmp_path / "afile" / "run")


def test_recipe_with_unknown_key(error_line, tmp_path, tiny):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(model=tiny).replace("[data]", "[data]\nnormalisation = '0_1'"))
    line = error_line("run", recipe)
    assert "unknown key 'normalisation' in [data]" in line
    assert line.endswith("did you mean 'normalization'?")

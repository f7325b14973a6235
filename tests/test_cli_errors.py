"""Bad input through the real CLI: one clear line, exit code 2, no traceback, nothing lost."""

import hashlib
import shutil

import numpy as np
import pytest


def assert_one_line_error(r, expected: str):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def tiny(tiny_model_dir, tmp_path):
    p = tmp_path / "tiny.keras"
    shutil.copyfile(tiny_model_dir / "tiny.keras", p)
    return p


def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_missing_model_file(cli_run):
    r = cli_run("prune", "nope.keras", "--method", "unstructured", "--out", "o.keras")
    line = assert_one_line_error(r, "model file not found: nope.keras")
    assert line == "error: model file not found: nope.keras; check the path, or name a built-in architecture."


def test_corrupt_and_truncated_model_files(cli_run, tmp_path, tiny):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert_one_line_error(cli_run("eval", bad), "bad.keras is not a readable .keras file")
    h5 = tmp_path / "t.h5"
    from edgeprune._tf import keras

    keras.models.load_model(tiny, compile=False).save(h5)
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli_run("eval", h5), "t.h5 is not a readable .h5 file")


def test_corrupt_tflite(cli_run, tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    assert_one_line_error(cli_run("inspect", p), "m.tflite is corrupt or truncated")
    p.write_bytes(b"hello world, not a model")
    assert_one_line_error(cli_run("inspect", p), "is not a TFLite flatbuffer (no TFL3 identifier)")


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


def test_bad_sparsity_and_skip_regex(cli_run, tiny):
    before = digest(tiny)
    r = cli_run("prune", tiny, "--method", "unstructured", "--sparsity", "1.2", "--out", "o.keras",
                "--train-limit", "64", "--test-limit", "64")
    assert_one_line_error(r, "target sparsity 1.2 is outside [0, 1)")
    r = cli_run("prune", tiny, "--method", "unstructured", "--skip", "^nope", "--out", "o.keras",
                "--train-limit", "64", "--test-limit", "64")
    assert_one_line_error(r, "skip pattern '^nope' matches no layer of tiny")
    r = cli_run("prune", tiny, "--method", "unstructured", "--out", tiny, "--force")
    assert_one_line_error(r, "is the input file")
    assert digest(tiny) == before


def test_dataset_that_does_not_fit(cli_run, tmp_path, tiny):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x_train=rng.integers(0, 255, (8, 16, 16), dtype=np.uint8),
             y_train=np.arange(8) % 3, x_test=rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), y_test=np.arange(3))
    r = cli_run("eval", tiny, "--data", tmp_path / "three.npz")
    assert_one_line_error(r, "the dataset three has 3 classes but the model outputs 10")
    np.savez(tmp_path / "rgba.npz", x_train=np.zeros((4, 16, 16, 2), np.uint8), y_train=np.arange(4),
             x_test=np.zeros((10, 16, 16, 2), np.uint8), y_test=np.arange(10))
    assert_one_line_error(cli_run("eval", tiny, "--data", tmp_path / "rgba.npz"), "images have 2 channels but the model wants 1")


def test_fashion_mnist_not_installed(cli_run, tiny, tmp_path):
    r = cli_run("eval", tiny, env={"EDGEPRUNE_FASHION_MNIST_DIR": str(tmp_path / "none")})
    assert_one_line_error(r, "install it with: sudo apt-get install dataset-fashion-mnist")


def test_int8_without_training_data(cli_run, tmp_path, tiny):
    np.savez(tmp_path / "notrain.npz", x_train=np.zeros((0, 16, 16), np.uint8), y_train=np.zeros(0, np.int64),
             x_test=np.zeros((10, 16, 16), np.uint8), y_test=np.arange(10))
    r = cli_run("quantize", tiny, "--mode", "int8", "--data", tmp_path / "notrain.npz", "--out", "m.tflite")
    assert_one_line_error(r, "int8 calibration needs training images")
    assert not (tmp_path / "m.tflite").exists()


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


def test_output_folder_with_a_run_is_kept_and_unwritable_folder(cli_run, tmp_path, tiny):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(model=tiny))
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text('{"keep": true}')
    r = cli_run("run", recipe, "--out", run)
    assert_one_line_error(r, f"the output folder {run} already holds a run; pass --force to replace it")
    assert (run / "report.json").read_text() == '{"keep": true}'
    (tmp_path / "afile").write_text("x")
    r = cli_run("run", recipe, "--out", tmp_path / "afile" / "run")
    assert_one_line_error(r, "cannot write the output folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_recipe_with_unknown_key(cli_run, tmp_path, tiny):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(model=tiny).replace("[data]", "[data]\nnormalisation = '0_1'"))
    r = cli_run("run", recipe)
    line = assert_one_line_error(r, "unknown key 'normalisation' in [data]")
    assert line.endswith("did you mean 'normalization'?")

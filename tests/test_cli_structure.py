"""The structural steps from the command line: prune --method blocks and channels with distillation
and sensitivity, and export --input-shape, on a small residual CNN and real Fashion-MNIST."""

import json

import numpy as np

import core_fixtures
from edgeprune import tflite_file
from edgeprune._tf import keras
from test_blocks import resnetish


def _data(tmp_path):
    ds = core_fixtures.tiny_dataset(600, 200)
    rgb = lambda a: np.repeat(a, 3, axis=-1)  # noqa: E731
    path = tmp_path / "fm.npz"
    np.savez(path, x_train=rgb(ds.x_train), y_train=ds.y_train, x_test=rgb(ds.x_test), y_test=ds.y_test)
    return path


def test_prune_blocks_then_channels_then_export_at_another_size(tmp_path, cli_run):
    model = resnetish(classes=10)
    model.save(tmp_path / "res.keras")
    data = _data(tmp_path)
    r = cli_run("prune", "res.keras", "--method", "blocks", "--blocks", "2", "--epochs", "0.5", "--batch-size", "64",
                "--data", data, "--out", "b.keras", "-q")
    assert r.returncode == 0, r.stderr
    removed = json.loads((tmp_path / "b.blocks.json").read_text())["removed"]
    assert len(removed) == 2 and set(removed) <= {"b1", "b2", "b4"}
    assert r.stdout.splitlines()[0].startswith(f"blocks: removed {', '.join(removed)}; layers 26 -> 14,")
    small = keras.models.load_model(tmp_path / "b.keras", compile=False)
    assert not any(layer.name.startswith(tuple(f"{n}_" for n in removed)) for layer in small.layers)
    assert oct((tmp_path / "b.keras").stat().st_mode & 0o777) == oct((tmp_path / "fm.npz").stat().st_mode & 0o777)

    r = cli_run("prune", "b.keras", "--method", "channels", "--ratio", "0.5", "--round-to", "4",
                "--allocation", "sensitivity", "--epochs", "0.5", "--batch-size", "64", "--data", data,
                "--out", "bc.keras", "-q")
    assert r.returncode == 0, r.stderr
    plan = json.loads((tmp_path / "bc.plan.json").read_text())
    assert "sensitivity" in plan["notes"]["steps"][0]

    r = cli_run("export", "bc.keras", "--input-shape", "32,32,3", "--out", "bc32.tflite", "-q")
    assert r.returncode == 0, r.stderr
    info = tflite_file.read(tmp_path / "bc32.tflite")
    assert info.tensors[info.inputs[0]].shape == [1, 32, 32, 3]
    assert info.op_counts["ADD"] == 2  # of four: the identity block left and b3, whose skip is a projection

    r = cli_run("export", "bc.keras", "--input-shape", "32,32", "--out", "bad.tflite")
    assert (r.returncode, r.stdout, r.stderr) == (
        2, "", "error: --input-shape '32,32' is not three positive integers; write H,W,C, e.g. 224,224,3.\n")
    assert not (tmp_path / "bad.tflite").exists()

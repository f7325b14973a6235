"""Native crashes. Fitting the classic mini_XCEPTION (face-emotion projects) under TensorFlow 2.21
with oneDNN on an AVX-512 CPU dies with SIGSEGV or "double free or corruption": oneDNN's weight
gradient of a strided 1x1 Conv2D on fewer than 16 input channels corrupts the heap (its first
residual Conv2D(16, 1, strides=2) on 8 channels). edgeprune turns oneDNN off by default, and the
command line reports any native crash that still happens as one `error:` line."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from edgeprune.cli import run_guarded


def build_mini_xception(classes: int = 7, shape=(64, 64, 1)):
    from edgeprune._tf import keras

    L = keras.layers
    i = keras.Input(shape)
    x = L.Conv2D(8, 3, use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(8, 3, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    for k in (16, 32, 64, 128):
        r = L.Conv2D(k, 1, strides=2, padding="same", use_bias=False)(x)
        r = L.BatchNormalization()(r)
        x = L.SeparableConv2D(k, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(k, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        x = L.add([x, r])
    x = L.Conv2D(classes, 3, padding="same")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Activation("softmax", name="predictions")(x), name="mini_XCEPTION")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "EDGEPRUNE_DEBUG")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def xception_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("xception")
    build_mini_xception().save(d / "mini_xception.keras")
    rng = np.random.default_rng(0)
    np.savez(d / "faces.npz", x_train=rng.integers(0, 256, (96, 64, 64, 1), dtype=np.uint8),
             y_train=rng.integers(0, 7, 96), x_test=rng.integers(0, 256, (32, 64, 64, 1), dtype=np.uint8),
             y_test=rng.integers(0, 7, 32))
    return d


def _prune_cli(d, env, out):
    return subprocess.run([sys.executable, "-m", "edgeprune", "prune", str(d / "mini_xception.keras"),
                           "--method", "unstructured", "--batch-size", "32", "--data", str(d / "faces.npz"),
                           "--out", str(d / out), "--quiet"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=d)


@pytest.mark.slow
def test_mini_xception_fits_through_edgeprune(xception_files):
    """The CLI, as a user runs it (no TF_ENABLE_ONEDNN_OPTS in the environment): 3 steps of
    pruning fine-tune, the step that crashed every time on this AVX-512 host with oneDNN on."""
    r = _prune_cli(xception_files, _env(), "pruned.keras")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (xception_files / "pruned.keras").is_file()
    layers = json.loads((xception_files / "pruned.sparsity.json").read_text())["layers"]
    separable = [lay for lay in layers if lay["kind"] == "SeparableConv2D"]
    assert len(separable) == 8 and all(lay["targeted"] and abs(lay["sparsity"] - 0.5) < 0.01 for lay in separable)


@pytest.mark.slow
def test_a_real_native_crash_is_one_error_line(xception_files):
    """oneDNN forced on: where the oneDNN bug is (AVX-512) the child dies, and the user reads one
    line saying what crashed and what to try; elsewhere the command succeeds."""
    r = _prune_cli(xception_files, _env(TF_ENABLE_ONEDNN_OPTS="1"), "pruned_onednn.keras")
    if r.returncode == 0:
        pytest.skip("oneDNN does not crash on this CPU")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
    assert "native code crashed (SIG" in errors[0] and "rerun with TF_ENABLE_ONEDNN_OPTS=0" in errors[0]
    assert "in tensorflow, called from edgeprune/" in errors[0]  # where, from faulthandler's stack
    assert "Segmentation fault" not in r.stderr and "Fatal Python error" not in r.stderr
    assert not (xception_files / "pruned_onednn.keras").exists()


_SEGV_IN_FIT = ("from edgeprune.cli import enable_fault_log\n"
                "enable_fault_log()\n"
                "import os, signal\n"
                "def fit():\n"
                "    os.kill(os.getpid(), signal.SIGSEGV)\n"
                "fit()\n")


@pytest.mark.parametrize("sig, what", [(signal.SIGSEGV, "segmentation fault"), (signal.SIGABRT, "double free")])
def test_a_forced_crash_is_reported_as_one_line(capfd, sig, what):
    child = [sys.executable, "-c", f"import os; print('working', flush=True); os.kill(os.getpid(), {int(sig)})"]
    assert run_guarded(child) == 1
    out, err = capfd.readouterr()
    assert out == "working\n"  # the child's own output, through
    assert err.count("\n") == 1 and err.startswith(f"error: native code crashed ({sig.name}, ")
    assert what in err and "TF_ENABLE_ONEDNN_OPTS=0" in err


def test_the_crash_site_comes_from_faulthandler(capfd, monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert run_guarded([sys.executable, "-c", _SEGV_IN_FIT]) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "rerun with TF_ENABLE_ONEDNN_OPTS=0" in err
    monkeypatch.setenv("EDGEPRUNE_DEBUG", "1")  # the stack itself, before the line, for those who ask
    assert run_guarded([sys.executable, "-c", _SEGV_IN_FIT]) == 1
    err = capfd.readouterr().err
    assert "Fatal Python error: Segmentation fault" in err and 'line 5 in fit' in err
    assert err.rstrip().splitlines()[-1].startswith("error: native code crashed (SIGSEGV")


def test_exit_codes_pass_through_and_a_kill_is_named(capfd):
    assert run_guarded([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert run_guarded([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]) == 1
    assert "killed (SIGKILL), most often by the kernel's out-of-memory killer" in capfd.readouterr().err


def test_the_console_entry_runs_the_command_in_a_child():
    r = subprocess.run([sys.executable, "-m", "edgeprune", "--version"], capture_output=True, text=True,
                       timeout=120, env=_env())
    assert r.returncode == 0 and "version" in r.stdout and r.stderr == ""
    r = subprocess.run([sys.executable, "-m", "edgeprune", "eval", "missing.keras"], capture_output=True,
                       text=True, timeout=120, env=_env())
    assert r.returncode == 2 and r.stderr.startswith("error: model file not found")

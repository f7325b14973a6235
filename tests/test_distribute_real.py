"""The recipe's `strategy` run for real: two MultiWorkerMirroredStrategy workers on 127.0.0.1 with a
TF_CONFIG each, fine-tuning and pruning through edgeprune's library path, must end with the same
weights although each worker trains on different images; and `edgeprune run` with
strategy = "mirrored" over two logical CPU devices. Strategies must be created before TensorFlow
runs anything, so every case runs in subprocesses, each bounded by a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sshd_fixture import free_port

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
WORKER_TIMEOUT = 300

WORKER = r"""
import json, sys
sys.path.insert(0, {tests!r})
from edgeprune.train import clone_in_scope, compile_classifier, fit, get_strategy
strategy = get_strategy("multi_worker")  # before anything else runs in TensorFlow
import numpy as np
import core_fixtures as cf
from edgeprune import sparsity
index = {index}
ds = cf.tiny_dataset(1024, 64)
# each worker trains on its own images: only the all-reduce keeps the weights equal
x, y = ds.x_train[index * 512:(index + 1) * 512], ds.y_train[index * 512:(index + 1) * 512]
model = cf.build_tiny(seed=0)
initial = model.get_weights()
tuned = clone_in_scope(model, strategy)
with strategy.scope():
    compile_classifier(tuned, 3e-3)
logs = fit(tuned, x, y, 1, 64, "fine-tune", strategy=strategy)
after_fit = tuned.get_weights()
pruned, report = sparsity.prune(tuned, "unstructured", x, y, target=0.5, epochs=1, batch_size=64,
                                strategy=strategy)
final = pruned.get_weights()
np.savez({out!r} + "/fit.npz", *after_fit)
np.savez({out!r} + "/pruned.npz", *final)
from edgeprune._tf import tf
print(json.dumps({{"replicas": strategy.num_replicas_in_sync,
                  "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
                  "loss": logs["loss"], "targeted": report.targeted_sparsity,
                  "changed": sum(not np.array_equal(a, b) for a, b in zip(initial, after_fit))}}))
"""


def _run_workers(scripts: list[str], envs: list[dict], logs: Path,
                 timeout: float) -> list[tuple[int, str, str]]:
    """Runs the workers side by side; (exit code, stdout, stderr) of each. When one fails or the
    time is up, the others are stopped: they would wait for it forever."""
    procs, files = [], []
    try:
        for i, (script, env) in enumerate(zip(scripts, envs)):
            out, err = open(logs / f"w{i}.out", "w+"), open(logs / f"w{i}.err", "w+")
            files += [out, err]
            procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=out, stderr=err,
                                          text=True))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for f in files:
            f.close()
    return [(p.returncode, (logs / f"w{i}.out").read_text(), (logs / f"w{i}.err").read_text())
            for i, p in enumerate(procs)]


def test_two_multi_worker_processes_fine_tune_and_prune_to_the_same_weights(tmp_path):
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    scripts, envs = [], []
    for i in range(2):
        (tmp_path / f"w{i}").mkdir()
        scripts.append(WORKER.format(tests=str(TESTS), index=i, out=str(tmp_path / f"w{i}")))
        task = {"type": "worker", "index": i}
        envs.append(dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": task})))
    outputs = _run_workers(scripts, envs, tmp_path, WORKER_TIMEOUT)
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs]
    for r in results:
        assert r["multi_worker"] and r["replicas"] == 2
        assert r["changed"] >= 10  # the fine-tune moved the weights
        assert r["targeted"] == pytest.approx(0.5, abs=0.01)
    assert results[0]["loss"] == results[1]["loss"]  # the loss is all-reduced too
    for name in ("fit.npz", "pruned.npz"):
        w0, w1 = np.load(tmp_path / "w0" / name), np.load(tmp_path / "w1" / name)
        assert w0.files == w1.files and len(w0.files) >= 15
        for k in w0.files:
            np.testing.assert_array_equal(w0[k], w1[k], err_msg=f"{name} {k}")


MIRRORED_RECIPE = """
name = "mirrored"
strategy = "mirrored"
fine_tune_batch_size = 64
[model]
path = "{model}"
[data]
kind = "fashion_mnist"
train_limit = 1024
test_limit = 200
representative_count = 32
[baseline]
epochs = 1
batch_size = 64
cache = false
[bench]
threads = [1]
runs = 3
warmup = 0
min_secs = 0.01
[[variant]]
name = "s50"
prune = "unstructured"
target_sparsity = 0.5
fine_tune_epochs = 0.5
quantize = "int8"
[[variant]]
name = "ch50"
prune = "channels"
channels = {{ ratio = 0.5, round_to = 4 }}
fine_tune_epochs = 0.5
quantize = "int8"
"""

# Two logical CPUs, then the real CLI; get_strategy is wrapped only to record what it returned.
MIRRORED_MAIN = r"""
import json, sys
from edgeprune._tf import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import edgeprune.train as train
real, seen = train.get_strategy, []
def recording(name="default"):
    s = real(name)
    seen.append([name, type(s).__name__, s.num_replicas_in_sync])
    return s
train.get_strategy = recording
from edgeprune.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as e:
    code = e.code
print("STRATEGIES=" + json.dumps(seen))
sys.exit(code)
"""


def test_run_with_mirrored_strategy_on_two_logical_cpus(tmp_path):
    import core_fixtures as cf

    cf.build_tiny().save(tmp_path / "tiny.keras")
    (tmp_path / "r.toml").write_text(MIRRORED_RECIPE.format(model=tmp_path / "tiny.keras"))
    r = subprocess.run([sys.executable, "-c", MIRRORED_MAIN, "run", "r.toml", "--out", "run", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                       env=dict(os.environ, EDGEPRUNE_CACHE_DIR=str(tmp_path / "cache")))
    assert r.returncode == 0, r.stderr[-3000:]
    marker = next(ln for ln in r.stdout.splitlines() if ln.startswith("STRATEGIES="))
    seen = json.loads(marker[len("STRATEGIES="):])
    assert seen == [["mirrored", "MirroredStrategy", 2]]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["strategy"] == "mirrored"
    assert report["baseline"]["trained"] and report["baseline"]["epochs"] == 1
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["baseline", "s50", "ch50"]
    assert all(v["status"] == "ok" for v in rows.values()), [v["failures"] for v in rows.values()]
    assert rows["s50"]["sparsity"]["targeted_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert rows["s50"]["tflite_info"]["input_dtype"] == "FLOAT32"
    assert "INT8" in rows["s50"]["tflite_info"]["tensor_dtypes"]
    ch = rows["ch50"]["channels"]
    assert ch["params_after"] < 0.6 * ch["params_before"]
    for v in rows.values():
        assert v["verification"]["runs_in_default_interpreter"] and v["verification"]["samples"] == 200

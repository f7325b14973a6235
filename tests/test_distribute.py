"""Fine-tuning under tf.distribute: pruning callbacks work under MirroredStrategy over two logical
CPU devices. Logical devices must be set before TensorFlow initialises, so it runs in a subprocess."""

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
sys.path.insert(0, "tests")
from edgeprune._tf import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import core_fixtures as cf
from edgeprune import sparsity
from edgeprune.train import get_strategy
strategy = get_strategy("mirrored")
ds = cf.tiny_dataset(1024, 128)
model = cf.build_tiny()
pruned, rep = sparsity.prune(model, "unstructured", ds.x_train, ds.y_train, target=0.6, epochs=1, batch_size=64,
                             strategy=strategy)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "targeted": rep.targeted_sparsity,
                  "layers": {l.name: l.sparsity for l in rep.layers if l.targeted}}))
"""


def test_pruning_under_mirrored_strategy_on_two_logical_cpus():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["targeted"] == pytest.approx(0.6, abs=0.01)
    assert all(abs(s - 0.6) < 0.01 for s in out["layers"].values())


def test_multi_worker_needs_tf_config(monkeypatch):
    from edgeprune.errors import RecipeError
    from edgeprune.train import get_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(RecipeError, match="strategy 'multi_worker' needs the TF_CONFIG environment variable"):
        get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(RecipeError, match="TF_CONFIG is malformed"):
        get_strategy("multi_worker")

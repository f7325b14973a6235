"""`edgeprune run` with a device target: every verified export is also measured on the device
(here the adbd emulator through the real adb client) and the device's rows join the report."""

import json
import subprocess
import sys

from adb_emulator import AdbEmulator, AdbServer
from conftest import require_tool

RECIPE = """
name = "tiny-device"
fine_tune_batch_size = 64
[model]
path = "{model}"
[data]
train_limit = 256
test_limit = 128
representative_count = 20
[bench]
threads = [1]
runs = 5
warmup = 1
min_secs = 0.02
[[variant]]
name = "int8"
quantize = "int8"
"""

INVENTORY = """
[[device]]
name = "phone"
target = "adb:{serial}"
runner = "python"
python = "{python}"
"""


def test_run_measures_exports_on_a_device_target(tiny_model_dir, tmp_path):
    adb = require_tool("adb")
    props = {"ro.product.model": "Pixel Test 7", "ro.product.cpu.abi": "arm64-v8a"}
    (tmp_path / "r.toml").write_text(RECIPE.format(model=tiny_model_dir / "tiny.keras"))
    with AdbEmulator(props=props) as dev, AdbServer(dev, adb=adb) as srv:
        (tmp_path / "devices.toml").write_text(INVENTORY.format(serial=dev.serial, python=sys.executable))
        r = subprocess.run([sys.executable, "-m", "edgeprune", "run", "r.toml", "--out", "run", "--target", "phone",
                            "--inventory", "devices.toml"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600, env=srv.env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["device_failures"] == []
    assert [d["name"] for d in report["devices"]] == ["phone"] and report["devices"][0]["model"] == "Pixel Test 7"
    for v in report["variants"]:
        targets = sorted((x["target"], x["threads"]) for x in v["latency"])
        assert targets == [("local", 1), ("phone", 1)], (v["name"], targets)
        phone_row = next(x for x in v["latency"] if x["target"] == "phone")
        assert phone_row["median_ms"] > 0 and phone_row["runs"] >= 5
    bench = json.loads((tmp_path / "run" / "bench" / "bench.json").read_text())
    assert sorted(m["name"] for m in bench["models"]) == ["baseline.tflite", "int8.tflite"]

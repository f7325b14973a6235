"""`edgeprune run` with a device target: every verified export is measured by the bench harness on
the host and on the device (here the adbd emulator through the real adb client), side by side,
and every view of the run (report.html, `report -f md|csv|json`, `compare`) shows the phone's
latencies under the phone's name, apart from the host's."""

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from adb_emulator import AdbEmulator, AdbServer
from conftest import require_tool

FIXTURES = Path(__file__).parent / "fixtures" / "v1"

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
runs = 20
warmup = 1
min_secs = 0.0
input_shapes = [[32, 32, 1]]
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


def edgeprune(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "edgeprune", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """Two pipeline runs of one recipe on the host and the phone."""
    adb = require_tool("adb")
    d = tmp_path_factory.mktemp("devices")
    props = {"ro.product.model": "Pixel Test 7", "ro.product.cpu.abi": "arm64-v8a"}
    (d / "r.toml").write_text(RECIPE.format(model=tiny_model_dir / "tiny.keras"))
    with AdbEmulator(props=props) as dev, AdbServer(dev, adb=adb) as srv:
        (d / "devices.toml").write_text(INVENTORY.format(serial=dev.serial, python=sys.executable))
        for name in ("a", "b"):
            r = edgeprune("run", "r.toml", "--out", name, "--target", "phone", "--inventory", "devices.toml",
                          cwd=d, env=srv.env)
            assert r.returncode == 0, r.stderr[-3000:]
            (d / f"{name}.stdout").write_text(r.stdout)
    return d


def test_the_run_records_every_measurement_with_raw_samples_and_paired_ratios(runs):
    report = json.loads((runs / "a" / "report.json").read_text())
    assert report["version"] == 2
    bench = report["bench"]
    assert bench["failures"] == [] and bench["settings"]["paired"] is True
    assert [d["name"] for d in bench["devices"]] == ["local", "phone"]
    assert bench["devices"][1]["model"] == "Pixel Test 7"
    files = ["baseline.tflite", "int8.tflite", "baseline@32x32.tflite", "int8@32x32.tflite"]
    measured = sorted((r["model"], r["device"]) for r in bench["results"])
    assert measured == sorted((f, d) for f in files for d in ("local", "phone"))
    assert all(len(r["samples_us"]) >= 20 for r in bench["results"])
    ratios = {(x["model"], x["device"]): x for x in bench["ratios"] if x["model"] != x["reference"]}
    assert set(ratios) == {(f, d) for f in ("int8.tflite", "int8@32x32.tflite") for d in ("local", "phone")}
    for (model, _), x in ratios.items():  # each input size is its own group, its baseline the reference
        assert x["reference"] == model.replace("int8", "baseline") and x["low"] <= x["ratio"] <= x["high"]
    by_sha = {v["sha256"]: v["name"] for v in report["variants"]}
    by_sha |= {e["sha256"]: v["name"] + "@32" for v in report["variants"] for e in v["exports"]}
    assert sorted(by_sha[m["sha256"]] for m in bench["models"]) == ["baseline", "baseline@32", "int8", "int8@32"]


def test_the_summary_shows_every_device_and_the_other_input_size(runs):
    out = (runs / "a.stdout").read_text()
    table = out.split("\n\n")[0].splitlines()
    assert table[0].split() == ["variant", "KB", "gz", "KB", "acc", "agree", "zeros", "ms@1t", "x", "ms@32", "x@32"]
    int8 = next(x.split() for x in table if x.startswith("int8"))
    assert float(int8[-1]) > 0 and float(int8[-3]) > 0  # paired speed-ups at both sizes
    assert "on the other devices" in out and "phone x1" in out  # the phone's medians, under its name
    assert "measured side by side (paired" in out and max(len(x) for x in out.splitlines()[:12]) <= 80


def test_every_view_shows_the_phone_under_its_own_name(runs, tmp_path):
    html = tmp_path / "r.html"
    r = edgeprune("report", runs / "a", "-o", html, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    cards = re.findall(r'<div class="card device"><h3>(.*?)</h3>', page)
    assert cards == ["local", "phone"] and "Pixel Test 7" in page
    own = (runs / "a" / "report.html").read_text()  # the page the run wrote itself
    assert re.findall(r'<div class="card device"><h3>(.*?)</h3>', own) == ["local", "phone"]

    md = edgeprune("report", runs / "a", "-f", "md", cwd=tmp_path).stdout
    assert "| variant " in md and "local x1" in md and "phone x1" in md
    assert "### phone (adb:" in md and "### local (local)" in md

    rows = list(csv.DictReader(io.StringIO(edgeprune("report", runs / "a", "-f", "csv", cwd=tmp_path).stdout)))
    names = ["baseline", "baseline@32x32", "int8", "int8@32x32"]
    assert sorted((x["variant"], x["device"]) for x in rows) == [(n, d) for n in names for d in ("local", "phone")]
    assert {x["of"] for x in rows if "@" in x["variant"]} == {"baseline", "int8"}
    phone_int8 = next(x for x in rows if x["device"] == "phone" and x["variant"] == "int8")
    assert phone_int8["target"].startswith("adb:") and phone_int8["speedup_method"] == "interleaved"
    assert float(phone_int8["speedup_low"]) <= float(phone_int8["speedup"]) <= float(phone_int8["speedup_high"])

    merged = json.loads(edgeprune("report", runs / "a", "-f", "json", cwd=tmp_path).stdout)
    report = json.loads((runs / "a" / "report.json").read_text())
    phone_us = {r["model"]: r["stats"]["median_us"] for r in report["bench"]["results"] if r["device"] == "phone"}
    for m in merged["measurements"]:
        assert m["device"] in ("local", "phone")
        if m["device"] == "phone":
            assert m["median_ms"] == pytest.approx(phone_us[m["variant"] + ".tflite"] / 1e3)
            assert m["target"].startswith("adb:") and m["samples_ms"]
    assert [d["name"] for d in merged["devices"]] == ["local", "phone"]


def test_compare_of_two_pipeline_runs_tests_the_raw_samples(runs):
    r = edgeprune("compare", "a", "b", "--threshold", "100", cwd=runs)
    assert r.returncode == 0, r.stderr
    assert "phone (" in r.stdout and "local (" in r.stdout
    rows = [x for x in r.stdout.splitlines() if re.match(r"\s+(baseline|int8)(@32x32)?\s+1\s", x)]
    assert len(rows) == 8  # two variants at two input sizes on two devices
    for row in rows:  # a p-value from the Mann-Whitney test on raw samples, not the p5-p95 rule
        assert re.search(r"\s(<?0\.\d+|1\.0+|<0\.001)\s", row), row
    assert "summary statistics only" not in r.stdout
    side = r.stdout.split("measured side by side in each run")[1].split("\n\n")[0]
    paired = [x.split() for x in side.splitlines() if x.startswith("int8")]
    assert sorted((x[0], x[1]) for x in paired) == [(n, d) for n in ("int8", "int8@32x32") for d in ("local", "phone")]
    assert all(x[3].endswith("x") and x[4].startswith("[") for x in paired), side


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "html"])
def test_version_1_runs_still_render_with_the_phone_under_its_name(fmt, tmp_path):
    out = tmp_path / f"r.{fmt}"
    r = edgeprune("report", FIXTURES / "run_a", FIXTURES / "bench", "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "phone" in text and ("Pixel Test 7" in text or fmt == "csv")  # the CSV names devices, not models
    if fmt == "csv":
        devices = {x["device"] for x in csv.DictReader(io.StringIO(text))}
        assert devices == {"local", "phone"}


def test_version_1_runs_and_benches_still_compare(tmp_path):
    r = edgeprune("compare", FIXTURES / "run_a", FIXTURES / "run_b", "--threshold", "100", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "phone (" in r.stdout and "local (" in r.stdout and "summary statistics only" in r.stdout
    r = edgeprune("compare", FIXTURES / "bench", FIXTURES / "bench", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no change" in r.stdout

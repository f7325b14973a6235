"""`edgeprune run` end to end on a tiny trained CNN and real Fashion-MNIST, then `inspect` and
`eval` on what it wrote."""

import json

import pytest

RECIPE = """
name = "tiny-e2e"
fine_tune_batch_size = 64
[model]
path = "{model}"
[data]
kind = "fashion_mnist"
train_limit = 2000
test_limit = 400
representative_count = 50
[bench]
threads = [1, 2]
runs = 10
warmup = 2
min_secs = 0.05
[[variant]]
name = "int8"
quantize = "int8"
[[variant]]
name = "s60"
prune = "unstructured"
target_sparsity = 0.6
fine_tune_epochs = 1
[[variant]]
name = "s70-pqat"
prune = "unstructured"
schedule = "polynomial"
target_sparsity = 0.7
fine_tune_epochs = 1
quantize = "pqat"
qat_epochs = 0.25
[[variant]]
name = "2of4-int8"
prune = "2:4"
fine_tune_epochs = 0.5
quantize = "int8"
[[variant]]
name = "ch50-int8"
prune = "channels"
channels = {{ ratio = 0.5, criterion = "l2", round_to = 4, allocation = "sensitivity" }}
fine_tune_epochs = 2
quantize = "int8"
"""


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    import subprocess
    import sys

    d = tmp_path_factory.mktemp("e2e")
    (d / "r.toml").write_text(RECIPE.format(model=tiny_model_dir / "tiny.keras"))
    r = subprocess.run([sys.executable, "-m", "edgeprune", "run", "r.toml", "--out", "run"], cwd=d,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run", r


def test_run_writes_a_complete_verified_report(run_dir):
    run, proc = run_dir
    report = json.loads((run / "report.json").read_text())
    assert report["schema"] == "edgeprune.run" and report["version"] == 2
    bench = report["bench"]
    assert bench["settings"]["paired"] and [d["name"] for d in bench["devices"]] == ["local"]
    results = {(r["model"], r["threads"]): r for r in bench["results"]}
    names = [v["name"] for v in report["variants"]]
    assert names == ["baseline", "int8", "s60", "s70-pqat", "2of4-int8", "ch50-int8"]
    base = report["variants"][0]
    assert all(v["status"] == "ok" for v in report["variants"]), [v.get("failures") for v in report["variants"]]
    for v in report["variants"]:
        assert (run / v["tflite"]).stat().st_size == v["bytes"]
        assert v["gzip_bytes"] < v["bytes"] * 1.01
        assert v["verification"]["runs_in_default_interpreter"]
        assert v["accuracy"] > 0.45, (v["name"], v["accuracy"])  # measured through LiteRT on 400 images
        for t in (1, 2):  # measured by the harness on the host, with raw samples
            r = results[(f"{v['name']}.tflite", t)]
            assert r["device"] == "local" and r["stats"]["median_us"] > 0 and len(r["samples_us"]) >= 10
            if v["name"] != "baseline":  # a paired ratio against the baseline at every thread count
                (x,) = [x for x in bench["ratios"] if x["model"] == f"{v['name']}.tflite" and x["threads"] == t]
                assert x["reference"] == "baseline.tflite" and x["low"] <= x["ratio"] <= x["high"]
    assert base["verification"]["max_abs_diff_vs_keras"] < 1e-4
    assert base["agreement"] == 1.0
    s60 = next(v for v in report["variants"] if v["name"] == "s60")
    assert s60["sparsity"]["targeted_sparsity"] == pytest.approx(0.6, abs=0.01)
    per_layer = {lay["name"]: lay for lay in s60["sparsity"]["layers"]}
    assert per_layer["dw"]["targeted"] is False and per_layer["dw"]["sparsity"] == 0
    pqat = next(v for v in report["variants"] if v["name"] == "s70-pqat")
    assert "INT8" in pqat["tflite_info"]["tensor_dtypes"]
    assert pqat["tflite_info"]["weights_zero_fraction"] > 0.4  # survived PQAT into the int8 file
    assert pqat["gzip_bytes"] < next(v for v in report["variants"] if v["name"] == "int8")["gzip_bytes"]
    two = next(v for v in report["variants"] if v["name"] == "2of4-int8")
    assert two["sparsity"]["m_by_n_ok"] is True
    ch = next(v for v in report["variants"] if v["name"] == "ch50-int8")
    assert ch["params"] < base["params"] * 0.6 and ch["channels"]["macs_after"] < ch["channels"]["macs_before"]
    assert (run / "variants" / "ch50-int8" / "channel_plan.json").is_file()
    import edgeprune.tflite_file as tf_file

    kernels = sorted(t.shape for t in tf_file.read(run / ch["tflite"]).tensors if t.is_constant and len(t.shape) == 4)
    # per-group widths from measured sensitivity: half of the 56 channels in all, multiples of 4,
    # and the flatbuffer's kernels have exactly the widths the report records
    after = {lay["layer"]: lay["after"] for lay in ch["channels"]["layers"]}
    assert [(lay["layer"], lay["before"]) for lay in ch["channels"]["layers"]][:4] == [
        ("stem", 8), ("conv_a", 16), ("dw", 16), ("conv_b", 32)]
    assert after["conv_a"] == after["dw"] and all(after[n] % 4 == 0 for n in ("stem", "conv_a", "conv_b"))
    assert after["stem"] + after["conv_a"] + after["conv_b"] <= 28
    assert kernels == sorted([[after["stem"], 3, 3, 1], [after["conv_a"], 3, 3, after["stem"]],
                              [1, 3, 3, after["dw"]], [after["conv_b"], 1, 1, after["dw"]]])
    assert len(ch["channels"]["sensitivity"]) == 1 and set(ch["channels"]["sensitivity"][0]) == {
        "stem:out", "conv_a:out", "conv_b:out"}
    md = (run / "report.md").read_text()
    assert "| variant " in md and "s70-pqat" in md and "stayed dense" in md
    assert "baseline" in proc.stdout and "Run folder:" in proc.stdout
    for line in proc.stdout.splitlines()[:8]:
        assert len(line) <= 80, line


def test_inspect_and_eval_read_the_exports(run_dir, cli_run):
    run, _ = run_dir
    r = cli_run("inspect", run / "tflite" / "s70-pqat.tflite")
    assert r.returncode == 0, r.stderr
    assert "CONV_2D" in r.stdout and "INT8" in r.stdout and "FLOAT32 [1, 16, 16, 1]" in r.stdout
    r = cli_run("inspect", run / "tflite" / "s70-pqat.tflite", "--json")
    info = json.loads(r.stdout)
    assert info["inputs"][0]["shape"] == [1, 16, 16, 1]
    r = cli_run("eval", run / "tflite" / "int8.tflite", "--test-limit", "400", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    report = json.loads((run / "report.json").read_text())
    int8 = next(v for v in report["variants"] if v["name"] == "int8")
    assert result["bytes"] == int8["bytes"] and 0.4 < result["accuracy"] <= 1.0


def test_rerun_without_force_keeps_the_run(run_dir, cli_run):
    run, _ = run_dir
    before = (run / "report.json").read_bytes()
    r = cli_run("run", run.parent / "r.toml", "--out", run)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert (run / "report.json").read_bytes() == before

"""The HTML report in a real browser: a real `edgeprune run` writes report.html, a real bench on two
devices (this host and a phone played by the adbd emulator) is rendered by `edgeprune report`,
and headless Chromium opens both: the page is not blank, the table rows and every plot's SVG are
in the rendered DOM, and the browser logs no console error. The page holds no script and refers
to nothing outside itself."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from adb_emulator import AdbEmulator, AdbServer
from conftest import require_tool
from report_builders import run_cli

from edgeprune import results

RECIPE = """
name = "tiny-report"
fine_tune_batch_size = 64
[model]
path = "{model}"
[data]
kind = "fashion_mnist"
train_limit = 600
test_limit = 200
representative_count = 32
[bench]
threads = [1, 2]
runs = 10
warmup = 2
min_secs = 0.02
[[variant]]
name = "s60"
prune = "unstructured"
target_sparsity = 0.6
fine_tune_epochs = 0.25
[[variant]]
name = "ch30-int8"
prune = "channels"
channels = {{ ratio = 0.3, round_to = 4 }}
fine_tune_epochs = 0.25
quantize = "int8"
"""
PROPS = {
    "ro.product.model": "Pixel Test 7",
    "ro.product.manufacturer": "Google",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor G2",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.sdk": "33",
    "ro.build.version.release": "13",
}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(capsys, *args)


@pytest.fixture(scope="module")
def pipeline_run(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    (d / "r.toml").write_text(RECIPE.format(model=tiny_model_dir / "tiny.keras"))
    r = subprocess.run(
        [sys.executable, "-m", "edgeprune", "run", "r.toml", "--out", "run"],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run"


@pytest.fixture(scope="module")
def bench_two_devices(pipeline_run, tmp_path_factory):
    """The pipeline's baseline and ch30-int8 files benched on this host and on an emulated phone."""
    from edgeprune.bench import BenchSettings, bench_models
    from edgeprune.report.bench_folder import write_run
    from edgeprune.bench.inventory import DeviceSpec

    adb = require_tool("adb")
    out = tmp_path_factory.mktemp("bench2") / "bench"
    models = [pipeline_run / "tflite" / "baseline.tflite", pipeline_run / "tflite" / "ch30-int8.tflite"]
    with AdbEmulator(props=PROPS) as dev, AdbServer(dev, adb=adb) as srv:
        mp = pytest.MonkeyPatch()
        mp.setenv("ANDROID_ADB_SERVER_PORT", str(srv.port))
        try:
            phone = DeviceSpec(name="phone", kind="adb", address=dev.serial, python=sys.executable)
            run = bench_models(
                models, ["local", phone], BenchSettings(threads=[1, 2], runs=10, warmup=1, min_secs=0.05)
            )
        finally:
            mp.undo()
    assert not run.failures, run.failures
    write_run(run, out)
    return out


def chromium(page: Path, tmp: Path, screenshot: bool = True) -> tuple[str, Path | None, str]:
    """(rendered DOM, screenshot PNG, browser log) of a local page."""
    exe = require_tool("chromium")
    base = [exe, *FLAGS, f"--user-data-dir={tmp / 'profile'}"]
    r = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    png = None
    log = r.stderr
    if screenshot:
        png = tmp / (page.stem + ".png")
        s = subprocess.run(
            [*base, f"--screenshot={png}", "--window-size=1280,2400", "--hide-scrollbars", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert s.returncode == 0 and png.is_file(), s.stderr[-2000:]
        log += s.stderr
    return r.stdout, png, log


def assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r'\b(src|href)\s*=\s*"(?!#)', text), "a link or source outside the page"
    assert not re.search(r"url\((?!#)", text) and "@import" not in text and "<link" not in text


def assert_rendered(png: Path) -> None:
    from matplotlib.image import imread

    img = imread(png)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    ink = (img.mean(axis=2) < 0.9).mean()
    assert img.std() > 0.05 and ink > 0.02, (img.std(), ink)  # not blank: text, tables and plots


def assert_no_console_errors(log: str) -> None:
    bad = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not bad, bad


def test_a_pipeline_run_writes_a_page_the_browser_renders(pipeline_run, tmp_path):
    page = pipeline_run / "report.html"
    text = page.read_text()
    assert_self_contained(text)
    dom, png, log = chromium(page, tmp_path)
    assert_no_console_errors(log)
    assert_rendered(png)
    rows = re.findall(r"<tr[ >]", dom.split('<table class="variants">')[1].split("</table>")[0])
    assert len(rows) == 1 + 3  # header and baseline, s60, ch30-int8
    for name in ("baseline", "s60", "ch30-int8"):
        assert f"<b>{name}</b>" in dom
    figures = re.findall(r'<figure class="plot">(.*?)</figure>', dom, flags=re.S)
    assert len(figures) == 4 and all("<svg" in f and "</svg>" in f for f in figures)
    for plot in ("size", "latency", "pareto", "layers"):
        assert f'data-plot="{plot}"' in dom
    assert "Per layer: s60" in dom and 'aria-label="Sparsity per layer of s60"' in dom  # the most pruned
    assert dom.count('class="card device"') == 1 and "python runner" in dom  # measured by the harness
    assert dom.count("<small>paired ") == 4  # s60 and ch30-int8 at 1 and 2 threads, with intervals
    assert 'name = "tiny-report"' in dom and "[[variant]]" in dom  # the recipe, as run
    assert "tensorflow-model-optimization" in dom


def test_a_two_device_bench_renders_with_a_card_per_device(pipeline_run, bench_two_devices, tmp_path, cli):
    page = tmp_path / "bench.html"
    r = cli("report", bench_two_devices, "-o", page)
    assert r.returncode == 0, r.stderr
    assert max(len(x) for x in r.stdout.splitlines() if not x.startswith("wrote ")) <= 80
    text = page.read_text()
    assert_self_contained(text)
    dom, png, log = chromium(page, tmp_path)
    assert_no_console_errors(log)
    assert_rendered(png)
    assert dom.count('class="card device"') == 2
    assert "Pixel Test 7" in dom and "Google Tensor G2" in dom and "arm64-v8a" in dom
    assert re.search(r"python runner v\d+ ", dom) and "35.0 C" in dom  # runner and version; the phone's temperature
    header = dom.split('<table class="variants">')[1].split("</tr>")[0]
    assert header.count("thr<br>") == 4  # 2 devices x 2 thread counts
    figures = re.findall(r'<figure class="plot">(.*?)</figure>', dom, flags=re.S)
    assert len(figures) == 3 and all("<svg" in f for f in figures)  # size, latency, layers read from the files
    assert "No accuracy: bench runs measure files only" in dom
    assert "Per layer: ch30-int8" in dom or "Per layer: baseline" in dom
    # merged with the pipeline run, the phone gets the accuracy trade-off too
    merged = tmp_path / "merged.html"
    r = cli("report", pipeline_run, bench_two_devices, "-o", merged, "--variant", "ch30-int8")
    assert r.returncode == 0, r.stderr
    dom, _, log = chromium(merged, tmp_path, screenshot=False)
    assert_no_console_errors(log)
    figures = re.findall(r'<figure class="plot">(.*?)</figure>', dom, flags=re.S)
    assert len(figures) == 4 and all("<svg" in f for f in figures)
    assert 'aria-label="Accuracy vs latency on local, phone; Pareto front: ' in dom
    assert "Per layer: ch30-int8" in dom and "Channels per layer" in dom
    rep = results.load([pipeline_run, bench_two_devices])
    assert rep.measurement("ch30-int8", "phone", 2).stats_source == "samples"
    assert rep.variant("ch30-int8").accuracy is not None  # the bench file joined its pipeline variant


def test_bad_variant_is_refused(pipeline_run, tmp_path, cli):
    r = cli("report", pipeline_run, "-o", tmp_path / "x.html", "--variant", "nope")
    assert r.returncode == 2 and "no variant named 'nope'" in r.stderr and "ch30-int8" in r.stderr

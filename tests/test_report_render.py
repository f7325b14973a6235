"""What the renderers say, without a browser: a failed variant and a failed baseline, a hot phone's
card (throttled, temperatures before and after), the Pareto front, the markdown of merged runs,
and plots whose SVG ids do not collide on one page."""

import re

import pytest
from report_builders import PI, PIXEL, bench_run, pipeline_report, run_cli, write_bench, write_pipeline

from edgeprune import results
from edgeprune.report import html, plots, tables


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(capsys, *args)


def _failed(report: dict, name: str) -> dict:
    for v in report["variants"]:
        if v["name"] == name:
            keep = {k: v[k] for k in ("name", "spec")}
            v.clear()
            v.update(keep, status="failed", failures=["verification: accuracy 0.1 below 0.5"])
    return report


def test_failed_variants_render_and_a_failed_baseline_gives_no_ratios():
    rep = results.from_run_dict(_failed(pipeline_report(), "s60"))
    page = html.render(rep)
    assert '<tr class="failed">' in page and "FAILED: verification: accuracy 0.1 below 0.5" in page
    assert "variant s60 failed" in page  # listed under failures too
    assert rep.ratio(rep.variant("int8")) == pytest.approx(15_000 / 52_000)
    rep = results.from_run_dict(_failed(pipeline_report(), "baseline"))
    assert rep.baseline() is None and rep.ratio(rep.variant("int8")) is None
    page = html.render(rep)
    assert page.count('<figure class="plot">') == 4  # every plot still drawn from what is there
    everything_failed = pipeline_report()
    for name in ("baseline", "int8", "s60", "ch30-int8"):
        _failed(everything_failed, name)
    page = html.render_run(everything_failed)  # what pipeline.run() writes after a run where all failed
    assert page.count('<tr class="failed">') == 4 and "No sizes recorded." in page and "<svg" not in page


def test_a_hot_phone_card_shows_throttling_and_temperatures():
    rep = results.from_bench_run(bench_run((PIXEL, PI), ("int8",), (1, 4), hot=True))
    card = rep.device("pixel7")
    assert card.flags == {"throttled": 2} and (card.temp_before_c, card.temp_after_c) == (38.0, 86.0)
    assert card.notes == ["throttling: Android thermal status 2"]
    page = html.render(rep)
    assert '<span class="flag bad">throttled</span>' in page and "38.0 C -&gt; 86.0 C (hottest zone)" in page
    assert "4x1.80+2x2.35+2x2.85 GHz" in page and "Raspberry Pi 5" in page and "BCM2712" in page
    assert page.count('class="card device"') == 2


def test_pareto_front():
    # (latency, accuracy): b is beaten by a on both; d is faster than c but less accurate
    pts = [(1.0, 0.80), (1.5, 0.79), (2.0, 0.90), (0.5, 0.60)]
    assert plots.pareto_front(pts) == [3, 0, 2]
    assert plots.pareto_front([(1.0, 0.5), (1.0, 0.7)]) == [1]


def test_svg_ids_are_unique_across_the_page(tmp_path):
    run = write_pipeline(tmp_path / "run", pipeline_report())
    bench = write_bench(tmp_path / "bench", bench_run((PIXEL, PI), ("baseline", "int8", "s60", "ch30-int8")))
    page = html.render(results.load([run, bench]))
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)) and len(ids) > 20
    refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', page))
    assert refs <= set(ids) | {
        "variants",
        "size",
        "latency",
        "tradeoff",
        "layers",
        "devices",
        "notes",
        "provenance",
    }
    assert page.count("<svg") == 4 and "<?xml" not in page and "<metadata>" not in page


def test_markdown_and_json_of_merged_runs(tmp_path, cli):
    run = write_pipeline(tmp_path / "run", pipeline_report())
    bench = write_bench(tmp_path / "bench", bench_run((PIXEL,), ("int8", "s60"), (1, 4)))
    r = cli("report", run, bench, "--format", "md")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert "| variant " in md and "| int8 " in md and "pixel7 x4" in md and "## Devices" in md
    assert "```toml" in md and 'name = "synthetic"' in md
    # a single pipeline run keeps the pipeline's own report.md
    r = cli("report", run)
    assert r.returncode == 0 and "# edgeprune run: synthetic" in r.stdout
    out = tmp_path / "all.json"
    r = cli("report", run, bench, "-o", out)
    assert r.returncode == 0 and out.read_text().startswith('{\n "schema": "edgeprune.report"')
    assert tables.render_csv(results.load([run])).count("\n") == 1 + 8


def test_render_bench_takes_the_bench_run_the_harness_holds(tmp_path):
    from edgeprune.report.bench_folder import write_run

    run = bench_run((PIXEL, PI), ("baseline", "int8"), (1, 4))
    write_run(run, tmp_path / "bench")
    page = (tmp_path / "bench" / "report.html").read_text()
    assert page == html.render_bench(run)  # the page write_run writes next to bench.json
    assert page == html.render_bench(run.to_dict())  # the object or its JSON: one page
    assert page.count('class="card device"') == 2 and page.count('<figure class="plot">') == 2
    assert "<title>edgeprune bench</title>" in page


def test_zeros_per_weight_tensor_come_from_the_measurement_not_the_file(tmp_path):
    import dataclasses
    import shutil
    from pathlib import Path

    from edgeprune.bench import inspect_model
    from edgeprune.tflite_file import read

    tiny = tmp_path / "int8.tflite"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "bench_tiny.tflite", tiny)
    run = bench_run((PIXEL,), ("int8",), (1,))
    run.models = [dataclasses.replace(inspect_model(tiny), name="int8.tflite")]
    tiny.unlink()  # the report never reads the .tflite: what it shows was recorded when it was measured
    v = results.from_bench_run(run).variant("int8")
    info = read(Path(__file__).parent / "fixtures" / "bench_tiny.tflite")
    assert v.sparsity_method == "file" and v.zeros == round(info.constant_zero_fraction(), 6)
    assert v.sparsity_layers and all(lay["weights"] >= 64 and "x" in lay["kind"] for lay in v.sparsity_layers)
    page = html.render(results.from_bench_run(run))
    assert 'aria-label="Sparsity per layer of int8"' in page
    old = bench_run((PIXEL,), ("int8",), (1,))  # a version-1 bench run recorded no weight tensors
    assert results.from_bench_run(old).variant("int8").sparsity_layers == []


def test_two_devices_under_one_name_stay_apart(tmp_path):
    a = write_bench(tmp_path / "a", bench_run((PIXEL,), ("int8",), (1,)))
    pixel8 = dict(PIXEL, model="Pixel 8", soc="Google Tensor G3")
    b = write_bench(tmp_path / "b", bench_run((pixel8,), ("int8",), (1,), scale=0.8))
    rep = results.load([a, b])
    assert [d.name for d in rep.devices] == ["pixel7", "pixel7@b"]
    assert rep.columns() == [("pixel7", 1), ("pixel7@b", 1)]
    assert rep.measurement("int8", "pixel7@b", 1).median_ms < rep.measurement("int8", "pixel7", 1).median_ms
    assert any("shown apart as pixel7@b" in n for n in rep.notes)
    same = write_bench(tmp_path / "same", bench_run((PIXEL,), ("s60",), (1,)))
    assert [d.name for d in results.load([a, same]).devices] == ["pixel7"]  # one phone, two runs

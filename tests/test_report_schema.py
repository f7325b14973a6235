"""report.json and bench.json: written by the real producers, loaded, merged and rendered back;
versions other than the supported one, truncated files, empty folders and folders without results
get one clear line and exit code 2. CSV has one row per measurement; the terminal summary fits 80
columns; docs/report-schema.md names every key the producers write."""

import csv
import io
import json
import re
import tomllib
from pathlib import Path

import pytest
from report_builders import PI, PIXEL, bench_run, pipeline_report, run_cli, write_bench, write_pipeline

from edgeprune.bench import BenchRun
from edgeprune.errors import InputFileError, SchemaError
from edgeprune import results
from edgeprune.report import tables

DOCS = Path(__file__).parent.parent / "docs" / "report-schema.md"


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(capsys, *args)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("schema")
    return {
        "run": write_pipeline(d / "run", pipeline_report()),
        "bench": write_bench(d / "bench", bench_run((PIXEL, PI), ("baseline", "int8", "s60"), (1, 2, 4))),
    }


def test_bench_json_round_trip(folders):
    path = folders["bench"] / "bench.json"
    run = BenchRun.load(path)
    rep = results.load([folders["bench"]])
    assert [s.kind for s in rep.sources] == ["bench"] and rep.sources[0].version == 2
    assert len(rep.measurements) == len(run.results) == 18
    for r in run.results:
        m = rep.measurement(r.model.removesuffix(".tflite"), r.device, r.threads)
        assert m.median_ms == pytest.approx(r.stats.median_us / 1000)
        assert m.p5_ms == pytest.approx(r.stats.p5_us / 1000) and m.count == r.stats.count
        assert m.samples_ms == pytest.approx([x / 1000 for x in r.samples_us])
        assert m.runner == "python runner v1 (ai_edge_litert 2.3.0)"
    pixel = rep.device("pixel7")
    assert (pixel.model, pixel.soc, pixel.abi, pixel.cores) == ("Pixel 7", "Google Tensor G2", "arm64-v8a", 8)
    assert pixel.clusters == "4x1.80+2x2.35+2x2.85 GHz"
    assert (pixel.temp_before_c, pixel.temp_after_c) == (38.0, 41.5)
    # the merged model's own JSON holds the same numbers
    back = json.loads(tables.render_json(rep))
    assert back["schema"] == "edgeprune.report" and back["version"] == 2
    assert len(back["measurements"]) == 18 and back["devices"][0]["name"] == "pixel7"
    again = results.Report.from_dict(back)
    assert again.to_dict() == back
    assert again.measurement("int8", "pi5", 4) == rep.measurement("int8", "pi5", 4)
    with pytest.raises(SchemaError, match="merged report version 3 is not supported"):
        results.Report.from_dict({**back, "version": 3})


def test_report_json_round_trip_and_merge_with_a_bench_run(folders):
    report = json.loads((folders["run"] / "report.json").read_text())
    rep = results.load([folders["run"], folders["bench"]])
    assert [s.kind for s in rep.sources] == ["run", "bench"]
    v = rep.variant("s60")
    assert v.accuracy == report["variants"][2]["accuracy"] and v.prune == "unstructured"
    assert [lay["name"] for lay in v.sparsity_layers] == ["stem", "conv_a", "dw", "conv_b", "classifier"]
    assert rep.variant("ch30-int8").channel_layers[1] == {
        "layer": "conv_a",
        "type": "Conv2D",
        "before": 16,
        "after": 12,
    }
    assert rep.most_pruned().name == "s60"
    assert rep.ratio(rep.variant("int8")) == pytest.approx(15_000 / 52_000)
    # the pipeline's host latency and the bench run's phones, side by side
    assert ("local", 1) in rep.columns() and ("pixel7", 4) in rep.columns() and ("pi5", 2) in rep.columns()
    assert rep.measurement("int8", "local", 2).stats_source == "summary"
    assert rep.measurement("int8", "pi5", 2).stats_source == "samples"
    # the recipe shown is the resolved recipe, as valid TOML
    recipe = tomllib.loads(rep.sources[0].recipe_text)
    assert recipe["name"] == "synthetic" and recipe["bench"]["threads"] == [1, 2]
    assert [v["name"] for v in recipe["variant"]] == ["int8", "s60", "ch30-int8"]


def test_csv_has_one_row_per_measurement(folders, cli):
    r = cli("report", folders["run"], folders["bench"], "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    rep = results.load([folders["run"], folders["bench"]])
    assert len(rows) == len(rep.measurements) == 8 + 18  # 4 variants x 2 host threads + 3 x 2 devices x 3
    keyed = {(x["variant"], x["device"], x["threads"]): x for x in rows}
    row = keyed[("int8", "pixel7", "4")]
    assert float(row["median_ms"]) == pytest.approx(rep.measurement("int8", "pixel7", 4).median_ms, rel=1e-5)
    assert row["accuracy"] and row["bytes"] == "15000" and row["stats_source"] == "samples"
    assert list(rows[0]) == tables.CSV_COLUMNS


def test_terminal_summary_fits_80_columns(tmp_path, cli):
    run = write_pipeline(tmp_path / "run", pipeline_report(threads=(1, 2, 4), long_names=True))
    bench = write_bench(tmp_path / "bench", bench_run((PIXEL, PI), ("baseline", "int8"), (1, 2, 4, 8)))
    r = cli("report", run, bench, "-o", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if not x.startswith("wrote ")]  # a path is as long as it is
    assert max(len(x) for x in lines) <= 80, max(lines, key=len)
    assert sum("on the other devices" in x for x in lines) >= 2  # split to fit
    assert "pixel7 x8" in r.stdout and "wrote " in r.stdout
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    # the output is never replaced without --force, and never an input
    r = cli("report", run, "-o", tmp_path / "r.html")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = cli("report", run, "-o", run / "report.json", "--force")
    assert r.returncode == 2 and "is the input file" in r.stderr


def _bump(folder: Path, name: str, key: str, value) -> Path:
    data = json.loads((folder / name).read_text())
    data[key] = value
    (folder / name).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("name,key", [("bench.json", "schema_version"), ("report.json", "version")])
def test_a_newer_version_is_refused_naming_it(folders, tmp_path, cli, name, key):
    import shutil

    src = folders["bench"] if name == "bench.json" else folders["run"]
    newer = tmp_path / "newer"
    shutil.copytree(src, newer)
    _bump(newer, name, key, 3)
    r = cli("report", newer)
    assert r.returncode == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert "version 3" in line and str(newer) in line and "reads version" in line and "1, 2" in line
    older = tmp_path / "older"
    shutil.copytree(src, older)
    _bump(older, name, key, 0)
    r = cli("report", older)
    assert r.returncode == 2 and "version 0" in r.stderr


def test_bad_inputs_get_one_line_and_exit_2(folders, tmp_path, cli):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("hello")
    truncated = tmp_path / "truncated"
    shutil.copytree(folders["bench"], truncated)
    text = (truncated / "bench.json").read_text()
    (truncated / "bench.json").write_text(text[: len(text) // 2])
    mixed = tmp_path / "mixed"
    shutil.copytree(folders["run"], mixed)
    _bump(mixed, "report.json", "version", 3)
    failed = write_bench(
        tmp_path / "failed", BenchRun.from_dict({**bench_run().to_dict(), "results": [], "models": []})
    )
    cases = {
        (empty,): "the run folder",
        (stray,): "holds no results",
        (truncated,): "is not valid JSON",
        (folders["bench"], mixed): "report schema version 3",
        (tmp_path / "missing",): "does not exist",
        (failed,): "holds no results: no variant and no measurement",
    }
    for args, expected in cases.items():
        for cmd in (["report", *args], ["compare", folders["bench"], args[-1]]):
            r = cli(*cmd)
            assert r.returncode == 2, (cmd, r.stdout, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (
                cmd,
                r.stderr,
            )
            assert "Traceback" not in r.stderr
    # the library raises the typed errors the CLI maps to exit 2
    with pytest.raises(InputFileError, match="is empty"):
        results.load([empty])
    with pytest.raises(SchemaError, match=r"not valid JSON \(line \d+"):
        results.load([truncated])


def _keys(
    value,
    out: set,
    maps=(
        "op_counts",
        "temps_c",
        "governors",
        "cur_freq_khz",
        "details",
        "tool",
        "runner_detail",
        "versions",
        "ratios",
        "overhead_s",
        "channels_config",
    ),
):
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            if k not in maps:
                _keys(v, out)
    elif isinstance(value, list):
        for v in value:
            _keys(v, out)
    return out


def test_the_schema_document_names_every_key(folders):
    documented = set(re.findall(r"`([a-z_0-9]+)`", DOCS.read_text()))
    bench = _keys(json.loads((folders["bench"] / "bench.json").read_text()), set())
    report = _keys(json.loads((folders["run"] / "report.json").read_text()), set())
    merged = _keys(results.load([folders["run"], folders["bench"]]).to_dict(), set())
    missing = sorted((bench | report | merged) - documented)
    assert not missing, f"docs/report-schema.md does not describe {missing}"


def test_the_pipeline_terminal_summary_fits_80_columns():
    def terminal_summary(report):
        return tables.terminal_summary(results.from_run_dict(report))

    for kw in ({"threads": (1, 2, 4), "long_names": True}, {"threads": (1, 2, 4, 8)}):
        lines = terminal_summary(pipeline_report(**kw)).splitlines()
        assert max(len(x) for x in lines) <= 80, max(lines, key=len)
    text = terminal_summary(pipeline_report(threads=(1, 2, 4), long_names=True))
    assert "int8-with-a-rathe~" in text and "0.871" in text  # cut names; 3 significant digits

"""Per-device latency tables: the cache key, the cache file, interpolation and prediction, a
prediction checked against the harness's measurement on this host, and `edgeprune profile`
end to end and on bad input."""

import json

import pytest

from edgeprune._tf import keras
from edgeprune.bench.results import CpuCore, DeviceInfo
from edgeprune.channels import ChannelGraph
from edgeprune.latency_profile import HarnessProbe, build_table, pruned_to
from edgeprune.latency_table import LatencyCache, LatencyTable, context_key, interpolate, measurement_context
from test_bad_inputs import snapshot

L = keras.layers


def small_cnn(name="small"):
    """Three prunable groups (c1:out, c2:out through the depthwise, c3:out) at 48x48: a model whose
    layers take tens of microseconds, well above the timer's resolution."""
    inp = keras.Input((48, 48, 3), name="image")
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.ReLU(6.0, name="r1")(L.BatchNormalization(name="b1")(x))
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="c2")(x)
    x = L.ReLU(6.0, name="r2")(L.BatchNormalization(name="b2")(x))
    x = L.ReLU(6.0, name="r3")(L.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = L.BatchNormalization(name="b4")(L.Conv2D(16, 1, use_bias=False, name="c3")(x))
    return keras.Model(inp, L.Dense(10, name="fc")(L.GlobalAveragePooling2D(name="gap")(x)), name=name)


def device(**kw):
    base = dict(name="local", target="local", kind="local", reachable=True, authorized=True, model="x86_64",
                soc="AMD EPYC", abi="x86_64", os="Debian", kernel="6.1", cores=[CpuCore(0), CpuCore(1)])
    return DeviceInfo(**{**base, **kw})


DETAIL = {"runner_version": "1", "runner_sha256": "ab", "runtime": "ai_edge_litert",
          "runtime_version": "2.3.0", "python": "3.11.7", "machine": "x86_64"}


def test_the_cache_key_changes_with_runtime_version_threads_mode_and_device_only():
    key = context_key(measurement_context(device(), "python", DETAIL, 1, "float32"))
    assert key == context_key(measurement_context(device(), "python", dict(DETAIL), 1, "float32"))
    newer = context_key(measurement_context(device(), "python", {**DETAIL, "runtime_version": "2.4.0"}, 1,
                                            "float32"))
    two = context_key(measurement_context(device(), "python", DETAIL, 2, "float32"))
    int8 = context_key(measurement_context(device(), "python", DETAIL, 1, "int8"))
    other = context_key(measurement_context(device(kernel="6.2"), "python", DETAIL, 1, "float32"))
    assert len({key, newer, two, int8, other}) == 5
    # what does not change latency leaves it: the target's name, the runner script's digest, the temperature
    elsewhere = device(name="box", target="ssh:box")
    same = measurement_context(elsewhere, "python", {**DETAIL, "runner_sha256": "cd"}, 1, "float32")
    assert context_key(same) == key
    assert key.startswith("x86_64_AMD_EPYC-float32-t1-")


def test_the_cache_keeps_entries_per_context_and_merges_on_save(tmp_path):
    ctx = measurement_context(device(), "python", DETAIL, 1, "float32")
    a = LatencyCache(ctx, tmp_path)
    b = LatencyCache(ctx, tmp_path)  # another process with the same device
    a.put("Conv2D k1x1 8x8x8->8", 0.01, 0.0105, 0.0005)
    a.save()
    b.put("Dense 16->4", 0.002, 0.0025, 0.0005)
    b.save()
    again = LatencyCache(ctx, tmp_path)
    assert again.get("Conv2D k1x1 8x8x8->8") == 0.01 and again.get("Dense 16->4") == 0.002
    assert [p.name for p in tmp_path.iterdir()] == [a.path.name]  # no temp file left behind
    two = LatencyCache(measurement_context(device(), "python", DETAIL, 2, "float32"), tmp_path)
    assert two.get("Dense 16->4") is None and two.path != a.path
    a.path.write_text("{ not json")
    assert LatencyCache(ctx, tmp_path).entries == {}  # a damaged cache is measured again, not trusted


def test_interpolation_is_piecewise_bilinear_and_extends_below_the_grid():
    grid = [[1.0, 2.0], [3.0, 6.0]]  # widths 8, 16 both ways: a*cin*cout
    assert interpolate([8, 16], [8, 16], grid, 8, 16) == 2.0
    assert interpolate([8, 16], [8, 16], grid, 12, 12) == pytest.approx((1 + 2 + 3 + 6) / 4)
    assert interpolate([8, 16], [8, 16], grid, 4, 8) == pytest.approx(0.0)  # the first segment, extended
    assert interpolate([8], [8, 16], [[1.0, 2.0]], 8, 12) == pytest.approx(1.5)  # a fixed input width
    assert interpolate([8, 16], [0], [[1.0], [3.0]], 12, None) == pytest.approx(2.0)  # depthwise: one column


def test_a_table_predicts_any_widths_and_pruned_models_and_round_trips():
    model = small_cnn()
    graph = ChannelGraph(model)

    def probe(m):  # a target whose latency is its MACs: the table must predict it exactly
        from edgeprune.channels.count import Counter

        return 0.01 + Counter(ChannelGraph(m)).count().macs / 1e7

    table = build_table(model, probe, fractions=(0.5, 1.0), max_ratio=0.5, check_ratio=0.5)
    widths = {"c1:out": 24, "c2:out": 16, "c3:out": 8}
    variant = pruned_to(graph, widths)
    assert table.predict(widths) == pytest.approx(probe(variant), rel=1e-9)
    assert table.predict_model(variant) == pytest.approx(probe(variant), rel=1e-9)
    assert [c["error"] for c in table.checks] == [pytest.approx(0.0, abs=1e-9)] * 2
    assert table.context_key is None and table.cache_file is None  # a plain callable has no device context
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.predict(widths) == table.predict(widths)


@pytest.mark.slow
def test_the_prediction_of_a_pruned_variant_matches_the_harness(tmp_path):
    model = small_cnn()
    graph = ChannelGraph(model)
    probe = HarnessProbe("local", "float32", 1, runs=300, block_runs=10)
    table = build_table(model, probe, fractions=(0.5, 1.0), max_ratio=0.5, cache_directory=tmp_path)
    assert table.measured_shapes > 0 and table.cache_file
    assert (tmp_path / f"{table.context_key}.json").is_file()
    widths = {"c1:out": 24, "c2:out": 16, "c3:out": 8}  # uneven, and 24 lies between profiled widths
    full_ms, variant_ms = probe.measure_many([model, pruned_to(graph, widths)], names=["full", "variant"])
    predicted = table.predict(widths)
    # the ratio to the full model, measured side by side, is what the shared host's load leaves alone;
    # the absolute latency moves with the load since the table was measured
    assert predicted / table.predict({}) == pytest.approx(variant_ms / full_ms, rel=0.15)
    assert predicted == pytest.approx(variant_ms, rel=0.35)
    assert variant_ms < 0.8 * full_ms  # the variant is really faster: the comparison means something
    # a second table on the same device and settings reads every unit from the cache
    cached = build_table(model, probe, fractions=(0.5, 1.0), max_ratio=0.5, cache_directory=tmp_path,
                         check_ratio=None)
    assert (cached.measured_shapes, cached.cached_shapes) == (0, table.measured_shapes)


@pytest.mark.slow
def test_profile_cli_writes_the_table_and_fills_the_cache(cli_run, tmp_path):
    small_cnn().save(tmp_path / "small.keras")
    cache = tmp_path / "cache"
    r = cli_run("profile", "small.keras", "--target", "local", "--fractions", "0.5,1", "--max-ratio", "0.5",
                "--runs", "100", "-o", "table.json", "-q", env={"EDGEPRUNE_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    table = LatencyTable.load(tmp_path / "table.json")
    assert [u.layer for u in table.units] == ["c1", "c2", "dw", "c3", "fc"]
    assert table.units[1].inp.widths == (16, 32) and table.full_ms > 0
    assert table.untabled_ops == {"GlobalAveragePooling2D": 1}
    files = list((cache / "latency-tables").iterdir())
    assert len(files) == 1 and files[0].stem == table.context_key
    assert len(json.loads(files[0].read_text())["entries"]) == table.measured_shapes
    out = r.stdout
    assert "latency table of small (48, 48, 3) on local" in out and "fixed cost" in out
    assert "c2     Conv2D k3x3 s1x1 same + bn + relu6" in out and "wrote table.json" in out


@pytest.fixture
def error_line(cli_run, tmp_path):
    def run(*args):
        before = snapshot(tmp_path)
        r = cli_run(*args, env={"EDGEPRUNE_CACHE_DIR": str(tmp_path / "cache")})
        assert (r.returncode, r.stdout) == (2, ""), (r.returncode, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert snapshot(tmp_path) == before and not (tmp_path / "cache").exists()
        return lines[0]

    return run


def test_profile_bad_input_is_one_error_line_and_writes_nothing(error_line, tmp_path):
    assert "model file not found: nope.keras" in error_line("profile", "nope.keras", "-o", "t.json")
    (tmp_path / "notes.txt").write_text("not a model")
    line = error_line("profile", "notes.txt", "-o", "t.json")
    assert "notes.txt has an unknown model file type .txt" in line
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not really a zip")
    assert "bad.keras is not a readable .keras file" in error_line("profile", "bad.keras", "-o", "t.json")
    small_cnn().save(tmp_path / "m.keras")
    assert "unknown target 'pixel9'" in error_line("profile", "m.keras", "--target", "pixel9", "-o", "t.json")
    assert "'adb:' is not a target" in error_line("profile", "m.keras", "--target", "adb:", "-o", "t.json")
    assert "must end in .json" in error_line("profile", "m.keras", "-o", "t.txt")

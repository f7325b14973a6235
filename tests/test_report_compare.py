"""`edgeprune compare`: identical runs pass, a 20 % slower run is a regression (exit 3), noisy runs
that overlap are not, pipeline runs (summaries only) use the p5-p95 rule, and a device that is
not the same device is never compared as one population."""

import numpy as np
import pytest
from report_builders import PI, PIXEL, bench_run, pipeline_report, run_cli, write_bench, write_pipeline

from edgeprune import results
from edgeprune.report.compare import compare, ratio_text, significance


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(capsys, *args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    two = (PIXEL, PI)
    models = ("baseline", "int8", "s60")
    return {
        "a": write_bench(d / "monday", bench_run(two, models, seed=1)),
        "same": write_bench(d / "same", bench_run(two, models, seed=1)),
        "slow": write_bench(d / "slow", bench_run(two, models, seed=2, scale=1.2)),
        # few, very noisy samples: the medians differ by more than 10 % by chance alone
        "noisy_a": write_bench(d / "noisy_a", bench_run((PIXEL,), ("int8",), (1,), noise=0.6, n=12, seed=11)),
        "noisy_b": write_bench(d / "noisy_b", bench_run((PIXEL,), ("int8",), (1,), noise=0.6, n=12, seed=12)),
    }


def test_identical_runs_have_no_regression(runs, cli):
    r = cli("compare", runs["a"], runs["same"])
    assert r.returncode == 0, r.stderr
    assert "No regression above 10% (12 compared)." in r.stdout
    assert "REGRESSION" not in r.stdout and "no change" in r.stdout
    assert "pixel7 (Google Pixel 7 Google Tensor G2 arm64-v8a)" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def test_a_20_percent_slower_run_is_flagged_with_exit_3(runs, cli, cli_run):
    r = cli_run("compare", runs["a"], runs["slow"], "--threshold", "0.1")  # the console command itself
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout.count("REGRESSION") == 12
    assert "1.20x slower" in r.stdout and "Regressions (12):" in r.stdout
    assert "Geometric mean: 1.20x slower" in r.stdout
    assert r.stderr.startswith("error: 12 regression(s) above 10%; first: baseline on pixel7 x1 1.20x slower")
    assert len(r.stderr.strip().splitlines()) == 1
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    r = cli("compare", runs["a"], runs["slow"], "--format", "md")
    assert r.returncode == 3 and "| baseline | pixel7 | 1 " in r.stdout and "**REGRESSION**" in r.stdout
    assert "**12 regression(s)** above 10%." in r.stdout
    # the same runs the other way round: faster, never a regression
    r = cli("compare", runs["slow"], runs["a"])
    assert r.returncode == 0 and "1.20x faster" in r.stdout and "REGRESSION" not in r.stdout
    # a threshold above the change: significant, but within it
    r = cli("compare", runs["a"], runs["slow"], "--threshold", "0.3")
    assert r.returncode == 0 and "within threshold" in r.stdout


def test_noisy_overlapping_runs_are_not_flagged(runs, cli):
    a, b = results.load([runs["noisy_a"]]), results.load([runs["noisy_b"]])
    (ma,), (mb,) = a.measurements, b.measurements
    assert abs(mb.median_ms / ma.median_ms - 1) > 0.10  # a difference above the threshold...
    res = compare(a, b, threshold=0.1)
    (row,) = res.rows
    assert row.method == "mann-whitney" and row.p_value > 0.05  # ...that the spread explains
    assert not row.regression and row.verdict == "not significant"
    r = cli("compare", runs["noisy_a"], runs["noisy_b"])
    assert r.returncode == 0, r.stdout
    assert "not significant" in r.stdout and "No regression" in r.stdout


def test_pipeline_runs_compare_by_their_p5_p95_ranges(tmp_path, cli):
    a = write_pipeline(tmp_path / "a" / "run", pipeline_report())
    same = write_pipeline(tmp_path / "b" / "run", pipeline_report(scale=1.02))
    slow = write_pipeline(tmp_path / "c" / "run", pipeline_report(scale=1.25))
    r = cli("compare", a, same)
    assert r.returncode == 0, r.stderr
    assert "a/run" in r.stdout and "b/run" in r.stdout  # two folders named run: told apart
    assert "1.02x slower" in r.stdout and "not significant" in r.stdout
    assert "summary statistics only" in r.stdout
    r = cli("compare", a, slow)
    assert r.returncode == 3 and "1.25x slower" in r.stdout and "REGRESSION" in r.stdout
    assert "p5-p95 ranges apart" in r.stdout


def test_significance_rules_directly():
    rep = results.from_bench_run(bench_run((PIXEL,), ("int8",), (1,), n=50))
    (m,) = rep.measurements
    assert significance(m, m) == ("mann-whitney", 1.0, False)
    shifted = m.__class__(
        **{**m.__dict__, "samples_ms": [x * 1.2 for x in m.samples_ms], "median_ms": m.median_ms * 1.2}
    )
    method, p, sig = significance(m, shifted)
    assert method == "mann-whitney" and p < 1e-6 and sig
    few = m.__class__(**{**m.__dict__, "samples_ms": m.samples_ms[:3]})  # benchmark_model with 3 repeats
    assert significance(few, shifted)[0] == "p5-p95"
    assert (
        ratio_text(1.333) == "1.33x slower"
        and ratio_text(0.8) == "1.25x faster"
        and ratio_text(1.001) == "no change"
    )


def test_another_device_under_the_same_name_is_not_compared(tmp_path, cli):
    a = write_bench(tmp_path / "a", bench_run((PIXEL,), ("int8",), (1,)))
    other = dict(PIXEL, model="Pixel 8", soc="Google Tensor G3")
    b = write_bench(tmp_path / "b", bench_run((other,), ("int8",), (1,), scale=1.5))
    r = cli("compare", a, b)
    assert r.returncode == 0, r.stdout
    assert "other device" in r.stdout and "not compared as one device" in r.stdout


def test_runs_with_nothing_in_common_are_refused(runs, tmp_path, cli):
    b = write_bench(tmp_path / "b", bench_run((PIXEL,), ("ch30-int8",), (2,)))
    r = cli("compare", runs["a"], b)
    assert r.returncode == 2
    assert "no variant x device x thread count in common" in r.stderr and len(r.stderr.splitlines()) == 1


def test_geometric_mean_and_noise_are_reproducible():
    # the builders draw from a seeded generator: the fixture runs are the same on every machine
    a = bench_run((PIXEL,), ("int8",), (1,), noise=0.6, n=12, seed=11).results[0].samples_us
    assert a == bench_run((PIXEL,), ("int8",), (1,), noise=0.6, n=12, seed=11).results[0].samples_us
    assert np.std(a) > 0

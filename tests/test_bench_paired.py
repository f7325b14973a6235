"""Paired measurement: models timed side by side in randomised blocks (one process for the Python
runner, alternating whole invocations for benchmark_model), and the ratio of their medians with
a bootstrap interval that resamples the blocks jointly. Over local, the adb emulator and the
real sshd; the bootstrap is checked against a hand enumeration and an independent numpy one."""

import itertools
import math

import numpy as np
import pytest

from android_bench import litert_runner
from edgeprune.bench.stats import paired_ratio, summarize

# three blocks, two samples of each model per block: the bootstrap's 27 equally likely draws can
# be enumerated by hand
REF = {0: [10.0, 12.0], 1: [20.0, 22.0], 2: [11.0, 13.0]}
MOD = {0: [20.0, 26.0], 1: [30.0, 34.0], 2: [23.0, 25.0]}


def _flat(by_block):
    return [x for b in sorted(by_block) for x in by_block[b]], [b for b in sorted(by_block) for _ in by_block[b]]


def test_paired_ratio_against_a_hand_enumeration_of_three_blocks():
    ms, mb = _flat(MOD)
    rs, rb = _flat(REF)
    r = paired_ratio(ms, mb, rs, rb, resamples=2000, seed=0)
    # point estimate: median(20 26 30 34 23 25) = 25.5 over median(10 12 20 22 11 13) = 12.5
    assert r.ratio == pytest.approx(25.5 / 12.5) and r.blocks == 3
    # every draw has probability 1/27 > 2.5 %, so with 2000 resamples the 95 % interval runs from the
    # smallest to the largest ratio over the 27 draws. By hand: all three draws of block 1 give
    # 32 / 21; blocks {0, 0, 1}: median(20 20 26 26 30 34) = 26 over median(10 10 12 12 20 22) = 12
    # -> 13/6, the largest; {1, 1, 1} -> 32/21 ~ 1.524 is beaten by {1, 1, 2}: 30 / 20 = 1.5.
    assert r.low == pytest.approx(1.5) and r.high == pytest.approx(13 / 6)
    enumerated = []
    for draw in itertools.product(range(3), repeat=3):
        enumerated.append(
            np.median([x for b in draw for x in MOD[b]]) / np.median([x for b in draw for x in REF[b]])
        )
    assert (min(enumerated), max(enumerated)) == pytest.approx((r.low, r.high))
    # halves in block order: {0}: 23 / 11; {1, 2}: median(30 34 23 25) = 27.5 over median(20 22 11 13) = 16.5
    assert r.halves == pytest.approx((23 / 11, 5 / 3))
    assert r.drift == pytest.approx(1 - (5 / 3) / (23 / 11))


def _numpy_bootstrap(ms, mb, rs, rb, resamples, seed):
    """The documented procedure, built the slow obvious way: expand every drawn block."""
    common = sorted(set(mb) & set(rb))
    mod = {b: [x for x, y in zip(ms, mb) if y == b] for b in common}
    ref = {b: [x for x, y in zip(rs, rb) if y == b] for b in common}
    draws = np.random.default_rng(seed).integers(0, len(common), size=(resamples, len(common)))
    ratios = []
    for row in draws:
        picked = [common[i] for i in row]
        ratios.append(
            np.median(np.concatenate([mod[b] for b in picked])) / np.median(np.concatenate([ref[b] for b in picked]))
        )
    return np.percentile(ratios, [2.5, 97.5])


def test_paired_ratio_matches_an_independent_numpy_bootstrap_and_is_deterministic():
    rng = np.random.default_rng(7)
    blocks = 25
    drift = 1 + 0.5 * np.sin(np.arange(blocks) / 3)  # load that hits both models in a block
    mb = [b for b in range(blocks) for _ in range(3)]
    rb = [b for b in range(blocks) for _ in range(4)] + [99]  # a block only the reference has is left out
    ms = [1.3 * drift[b] * (1 + 0.1 * rng.standard_normal()) for b in mb]
    rs = [drift[b] * (1 + 0.1 * rng.standard_normal()) for b in rb[:-1]] + [50.0]
    r = paired_ratio(ms, mb, rs, rb, resamples=300, seed=5)
    low, high = _numpy_bootstrap(ms, mb, rs, rb, 300, 5)
    assert (r.low, r.high) == pytest.approx((low, high), rel=1e-12)
    assert r.ratio == pytest.approx(np.median(ms) / np.median(rs[:-1]))
    assert r.blocks == blocks and r.low < 1.3 < r.high
    assert paired_ratio(ms, mb, rs, rb, resamples=300, seed=5) == r
    assert paired_ratio(ms, mb, rs, rb, resamples=300, seed=6) != r


def test_paired_ratio_refuses_what_it_cannot_pair():
    with pytest.raises(ValueError, match="share no block"):
        paired_ratio([1.0], [0], [1.0], [1])
    with pytest.raises(ValueError, match="its block"):
        paired_ratio([1.0, 2.0], [0], [1.0], [0])
    one = paired_ratio([3.0, 5.0], [4, 4], [2.0], [4])
    assert (one.ratio, one.low, one.high, one.blocks) == (2.0, 2.0, 2.0, 1)


@pytest.mark.parametrize(
    "xs",
    [[5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 100.0], [4.0], [2.5, 2.5], list(np.random.default_rng(1).gamma(2, 3, 101))],
)
def test_the_device_runner_and_the_harness_summarize_alike(xs):
    """The runner keeps its own copy of the statistics (it is copied to devices alone)."""
    ours = summarize(xs).to_dict()
    theirs = litert_runner.summarize(xs)
    assert set(theirs) == set(ours) - {"source"}
    for k, v in theirs.items():
        assert math.isclose(v, ours[k], rel_tol=1e-12, abs_tol=1e-12), k


# --- the harness, end to end -------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from adb_emulator import AdbEmulator, AdbServer  # noqa: E402
from conftest import require_tool  # noqa: E402
from edgeprune.bench import BenchRun, BenchSettings, DeviceSpec, bench_models  # noqa: E402
from edgeprune.bench.harness import inspect_model  # noqa: E402
from edgeprune.bench.results import PairedRatio  # noqa: E402
from edgeprune.errors import EdgepruneError, SchemaError  # noqa: E402
from sshd_fixture import start_sshd  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
TINY = FIX / "bench_tiny.tflite"
WIDE = FIX / "bench_wide.tflite"  # the same network with 4x the channels (make_bench_wide.py)
PAIRED = BenchSettings(threads=[1], runs=20, warmup=1, min_secs=0.1, paired=True, block_secs=0)


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """The host, the adb emulator (through the real adb client and server) and a real sshd on
    loopback, as DeviceSpecs."""
    adb = require_tool("adb")
    require_tool("ssh")
    require_tool("sftp")
    work = tmp_path_factory.mktemp("paired")
    server = start_sshd(work / "sshd", require_tool("sshd"))
    old = os.environ.get("ANDROID_ADB_SERVER_PORT")
    try:
        with AdbEmulator() as dev, AdbServer(dev, adb=adb) as srv:
            os.environ["ANDROID_ADB_SERVER_PORT"] = str(srv.port)
            yield [
                DeviceSpec(name="host", kind="local", workdir=str(work / "local")),
                DeviceSpec(name="phone", kind="adb", address=dev.serial, python=sys.executable),
                DeviceSpec(
                    name="board",
                    kind="ssh",
                    address=server.address,
                    python=sys.executable,
                    identity_file=str(server.client_key),
                    ssh_options=tuple(server.client_options()),
                    workdir=str(work / "ssh"),
                ),
            ]
    finally:
        if old is None:
            os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
        else:
            os.environ["ANDROID_ADB_SERVER_PORT"] = old
        server.stop()


def test_paired_on_local_adb_and_ssh_reports_the_wider_model_slower(devices):
    """The three devices run at once on this host's 2 cores, so their absolute medians are noisy;
    the ratios, measured side by side in each process, are not."""
    run = bench_models([TINY, WIDE], devices, PAIRED)
    assert not run.failures, run.failures
    assert sorted((r.device, r.model) for r in run.results) == sorted(
        (d.name, m) for d in devices for m in ("bench_tiny.tflite", "bench_wide.tflite")
    )
    for r in run.results:
        assert r.stats.count == len(r.samples_us) == len(r.sample_blocks) >= 20
        assert r.memory.kind == "peak_rss_all_models"
        assert any("timed interleaved" in n for n in r.notes), r.notes
    for d in devices:
        tiny, wide = (next(r for r in run.results if (r.device, r.model) == (d.name, m)) for m in
                      ("bench_tiny.tflite", "bench_wide.tflite"))
        # every block ran both models, each at least block_runs times
        for b in set(tiny.sample_blocks) | set(wide.sample_blocks):
            assert tiny.sample_blocks.count(b) >= 2 and wide.sample_blocks.count(b) >= 2
        (ratio,) = [q for q in run.ratios if q.device == d.name]
        assert (ratio.model, ratio.reference, ratio.threads, ratio.method) == (
            "bench_wide.tflite", "bench_tiny.tflite", 1, "interleaved")
        assert ratio.target == d.target and ratio.blocks == len(set(tiny.sample_blocks))
        assert 1 < ratio.low <= ratio.ratio <= ratio.high, ratio
        assert ratio.speedup < 1 and ratio.speedup_interval == (1 / ratio.high, 1 / ratio.low)
    again = BenchRun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run and again.ratios == run.ratios


def test_pair_groups_each_have_their_own_reference(tmp_path):
    """As the pipeline calls it: variants at one input size with their baseline first, and the same
    variants at another size with theirs; a model in no group is measured alone."""
    paths = []
    for name, src in (("a32", TINY), ("b32", WIDE), ("a224", TINY), ("b224", WIDE), ("alone", TINY)):
        paths.append(tmp_path / f"{name}.tflite")
        shutil.copy(src, paths[-1])
    host = DeviceSpec(name="host", kind="local", workdir=str(tmp_path / "w"))
    s = BenchSettings(threads=[1, 2], runs=10, warmup=1, min_secs=0.05, paired=True, block_secs=0)
    run = bench_models(paths, [host], s, pair_groups=[[1, 0], [2, 3]])
    assert not run.failures, run.failures
    assert len(run.results) == 10
    pairs = sorted((q.model, q.reference, q.threads) for q in run.ratios)
    assert pairs == [("a32.tflite", "b32.tflite", 1), ("a32.tflite", "b32.tflite", 2),
                     ("b224.tflite", "a224.tflite", 1), ("b224.tflite", "a224.tflite", 2)]
    for q in run.ratios:
        slower = q.model.startswith("b")
        assert (q.low > 1) if slower else (q.high < 1), q
    alone = [r for r in run.results if r.model == "alone.tflite"]
    assert len(alone) == 2 and not any("paired with" in n for r in alone for n in r.notes)
    for bad, match in (([[0, 9]], "not an index"), ([[0, 1], [1, 2]], "more than one"), ([[]], "non-empty")):
        with pytest.raises(EdgepruneError, match=match):
            bench_models(paths, [host], s, pair_groups=bad)
    with pytest.raises(EdgepruneError, match="paired"):
        bench_models(paths, [host], BenchSettings(), pair_groups=[[0, 1]])


FAKE_BM = r"""#!/bin/sh
# stands in for benchmark_model: the wide model takes 2.5x as long (from round LATE on, WIDE_LATE
# tenths), and the device slows by 10 % a round (two invocations per round), so absolute medians
# drift while the ratio does not
log="$(dirname "$0")/../argv.log"  # the binary runs from the device's cache folder
echo "$@" >> "$log"
round=$(( ($(wc -l < "$log") - 1) / 2 ))
m=$(( 100000 + 10000 * round ))
case "$*" in *bench_wide*) if [ $round -ge LATE ]; then m=$(( m * WIDE_LATE / 10 )); else m=$(( m * 5 / 2 )); fi;; esac
echo "INFO: The input model file size (MB): 0.0099"
echo "INFO: Initialized session in 1.5ms."
echo "INFO: count=50 first=$m curr=$m min=$m max=$m avg=$m std=0 p5=$m median=$m p95=$m"
echo "INFO: Inference timings in us: Init: 1500, First inference: $m, Warmup (avg): $m, Inference (avg): $m"
"""


def _fake_device(tmp_path, late=99, wide_late=25):
    binary = tmp_path / "bin" / "benchmark_model"
    binary.parent.mkdir()
    binary.write_text(FAKE_BM.replace("WIDE_LATE", str(wide_late)).replace("LATE", str(late)))
    binary.chmod(0o755)
    return DeviceSpec(name="host", kind="local", workdir=str(tmp_path / "w"), runner="benchmark_model",
                      benchmark_model=(("*", str(binary)),))


def test_benchmark_model_alternates_whole_invocations_in_rounds(tmp_path):
    host = _fake_device(tmp_path)
    run = bench_models([TINY, WIDE], [host], BenchSettings(threads=[1], runs=3, paired=True))
    assert not run.failures, run.failures
    graphs = [next(f for f in c.split() if f.startswith("--graph=")).rsplit("/", 1)[1]
              for c in (tmp_path / "w" / "argv.log").read_text().splitlines()]
    assert len(graphs) == 10  # 5 rounds by default when paired: each round runs each model once
    assert all(sorted(graphs[i:i + 2]) == ["bench_tiny.tflite", "bench_wide.tflite"] for i in range(0, 10, 2))
    assert graphs[0::2] != ["bench_tiny.tflite"] * 5  # the order within a round is shuffled (seeded)
    tiny, wide = run.results
    assert tiny.repeat_medians_us[0] * 1.35 < tiny.repeat_medians_us[-1]  # the drift is there...
    (q,) = run.ratios
    assert (q.method, q.blocks, q.model, q.reference) == ("alternating rounds", 5, "bench_wide.tflite",
                                                          "bench_tiny.tflite")
    assert q.ratio == q.low == q.high == pytest.approx(2.5)  # ...and cancels in every resampled round
    assert "cannot interleave" in q.note and any("alternating rounds" in n for n in wide.notes)
    assert q.halves == [2.5, 2.5] and q.flags == []


def test_a_ratio_that_moves_during_the_run_is_flagged(tmp_path):
    """Load that slows one model more than the other (contention for the caches hits a long,
    memory-bound model hardest) does not cancel: the halves of the blocks disagree."""
    run = bench_models([TINY, WIDE], [_fake_device(tmp_path, late=2, wide_late=30)],
                       BenchSettings(threads=[1], runs=3, paired=True))
    (q,) = run.ratios
    assert q.halves == [2.5, 3.0] and q.flags == ["unstable_ratio"]
    assert "moved from 2.500 in the first half of the blocks to 3.000" in q.note


def test_a_version_1_bench_json_still_loads(tmp_path):
    """tests/fixtures/bench_v1.json was written by `edgeprune bench` before paired measurement."""
    raw = json.loads((FIX / "bench_v1.json").read_text())
    assert raw["schema_version"] == 1
    run = BenchRun.load(FIX / "bench_v1.json")
    assert [r.threads for r in run.results] == [1, 2] and run.ratios == []
    assert run.settings.paired is False and all(r.sample_blocks == [] for r in run.results)
    assert run.models[0].zero_fraction is None and run.models[0].weights == []
    now = run.to_dict()
    assert now["schema_version"] == 2 and BenchRun.from_dict(now) == run
    with pytest.raises(SchemaError, match="ratios"):
        BenchRun.from_dict({**raw, "ratios": []})
    with pytest.raises(SchemaError, match="reads versions 1, 2"):
        BenchRun.from_dict({**raw, "schema_version": 3})


def test_model_files_carry_their_weight_zeros():
    from edgeprune import tflite_file

    m = inspect_model(WIDE)
    conv = next(w for w in m.weights if w.name == "model/conv2d_1/Conv2D")
    assert conv.shape == [64, 3, 3, 32] and conv.size == 18432
    assert conv.zeros == 9216 and conv.zero_fraction == 0.5  # every other filter zeroed
    assert all(w.zeros == 0 for w in m.weights if w is not conv)
    assert m.zero_fraction == pytest.approx(tflite_file.read(WIDE).constant_zero_fraction(), abs=1e-6)
    # the weights above plus the converter's one shared all-zero 64-element bias (the 32 one is too small)
    assert m.zero_fraction == pytest.approx((9216 + 64) / (18432 + 576 + 288 + 640 + 864 + 64), abs=1e-6)
    assert inspect_model(TINY).zero_fraction == 0.0


def test_settings_refuse_bad_blocks_and_ratios_bad_methods():
    with pytest.raises(EdgepruneError, match="block-runs must be a whole number of at least 1, got 0"):
        BenchSettings(paired=True, block_runs=0)
    with pytest.raises(EdgepruneError, match="block-secs"):
        BenchSettings(paired=True, block_secs=-1)
    with pytest.raises(SchemaError, match="method"):
        PairedRatio("a", "b", "d", "local", 1, 1.0, 1.0, 1.0, "guessed", 3)


def test_cli_bench_paired_writes_the_ratios_and_prints_the_speedups(cli_run, tmp_path):
    out = tmp_path / "run"
    env = {"TMPDIR": str(tmp_path)}  # the host's work folder (and its device lock) are the test's own
    r = cli_run("bench", WIDE, TINY, "--paired", "--runs", "10", "--warmup", "1", "--min-secs", "0.1",
                "--block-runs", "3", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    run = BenchRun.load(out / "bench.json")
    assert json.loads((out / "bench.json").read_text())["schema_version"] == 2
    assert run.settings.paired and run.settings.block_runs == 3
    (q,) = run.ratios
    assert (q.model, q.reference, q.method) == ("bench_tiny.tflite", "bench_wide.tflite", "interleaved")
    assert q.high < 1  # the tiny model is faster than the reference
    lo, hi = q.speedup_interval
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("bench_tiny.tflite vs bench_wide.tflite"))
    assert f"speed-up {q.speedup:.3f}x [{lo:.3f}-{hi:.3f}]" in line and "faster" in line and "interleaved" in line
    one = cli_run("bench", TINY, "--paired", "--out", tmp_path / "one", env=env)
    assert one.returncode == 2 and one.stderr.count("\n") == 1 and "give two or more" in one.stderr
    assert not (tmp_path / "one").exists()

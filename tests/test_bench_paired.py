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

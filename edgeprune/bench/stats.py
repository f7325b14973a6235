"""All latency statistics of the harness, in one place. From raw samples: median, mean, min,
max, p5/p90/p95 (linear interpolation between order statistics, numpy's default), sample
standard deviation (n-1) and the coefficient of variation. Where a runner gives only summaries
(benchmark_model), the spread comes from repeating the invocation: the statistics of the
per-invocation medians.

Paired measurements (several models timed side by side in blocks, see `paired_ratio`) are
compared by the ratio of their medians, with a bootstrap interval that resamples whole blocks:
the same blocks for both models, so that a change of the machine's load that hits both cancels."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: a result whose CV is above this is flagged `high_cv`
DEFAULT_MAX_CV = 0.10
#: temperature (C) from which boards and phones start to throttle
HOT_C = 80.0
#: bootstrap resamples of a paired ratio, and the interval's confidence
RESAMPLES = 2000
CONFIDENCE = 0.95
#: a paired ratio whose first and second halves of blocks differ by more than this is flagged
#: `unstable_ratio`: the change during the run did not hit both models alike (for example
#: contention for the CPU or its caches slows a long, memory-bound invoke more than a short one)
RATIO_DRIFT = 0.03


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of one set of latencies, in microseconds. `source` says what they were computed
    from: "samples" (every invoke), "repeats" (one median per benchmark_model invocation)."""

    source: str
    count: int
    median_us: float
    mean_us: float
    min_us: float
    max_us: float
    p5_us: float
    p90_us: float
    p95_us: float
    std_us: float
    cv: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyStats":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def percentile(sorted_xs: list[float], p: float) -> float:
    n = len(sorted_xs)
    if n == 1:
        return sorted_xs[0]
    k = (n - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, n - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def summarize(samples_us: list[float], source: str = "samples") -> LatencyStats:
    if not samples_us:
        raise ValueError("summarize needs at least one sample")
    xs = sorted(float(x) for x in samples_us)
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return LatencyStats(
        source=source,
        count=n,
        median_us=percentile(xs, 50),
        mean_us=mean,
        min_us=xs[0],
        max_us=xs[-1],
        p5_us=percentile(xs, 5),
        p90_us=percentile(xs, 90),
        p95_us=percentile(xs, 95),
        std_us=std,
        cv=std / mean if mean > 0 else 0.0,
    )


@dataclass(frozen=True)
class RatioInterval:
    """median(model) / median(reference) (> 1: the model is slower) and its percentile-bootstrap
    interval over `blocks` blocks (the blocks both models have samples in). `halves` are the
    same ratio over the first and the second half of the blocks (in block order), None with a
    single block: far apart, they say the ratio itself moved during the run."""

    ratio: float
    low: float
    high: float
    blocks: int
    resamples: int
    confidence: float
    halves: tuple[float, float] | None = None

    @property
    def drift(self) -> float:
        """|second half / first half - 1|, 0.0 without halves."""
        return abs(self.halves[1] / self.halves[0] - 1) if self.halves else 0.0


def _by_block(samples: list[float], blocks: list[int], keep: set[int]) -> tuple[list[float], list[int]]:
    pairs = sorted((float(x), b) for x, b in zip(samples, blocks, strict=True) if b in keep)
    return [x for x, _ in pairs], [b for _, b in pairs]


def _weighted_medians(sorted_xs, block_pos, counts):
    """The median of `sorted_xs` with every sample repeated counts[r, its block] times, for each
    row r of `counts`: the exact median of the resampled set (the mean of the two middle
    order statistics when its size is even), without building it."""
    import numpy as np

    cum = np.cumsum(counts[:, block_pos], axis=1, dtype=np.int32)  # (resamples, samples)
    total = cum[:, -1]
    lo_rank = (total + 1) // 2  # 1-based ranks of the middle order statistics
    hi_rank = total // 2 + 1
    # the first position whose cumulative count reaches the rank
    lo = np.array([np.searchsorted(c, r) for c, r in zip(cum, lo_rank)], dtype=np.int64)
    hi = np.array([np.searchsorted(c, r) for c, r in zip(cum, hi_rank)], dtype=np.int64)
    xs = np.asarray(sorted_xs)
    return (xs[lo] + xs[hi]) / 2.0


def paired_ratio(
    samples_us: list[float],
    blocks: list[int],
    ref_samples_us: list[float],
    ref_blocks: list[int],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> RatioInterval:
    """Ratio of the median latency of a model to the median of a reference measured with it in
    the same blocks (`blocks[i]` is the block of `samples_us[i]`), with a percentile-bootstrap
    interval. Only blocks where both have samples count. Each resample draws k of the k common
    blocks with replacement, the same draw for both models, and takes the ratio of the medians
    of the samples in the drawn blocks (a block drawn twice counts twice); the interval is the
    (1 - confidence)/2 and (1 + confidence)/2 percentiles (linear interpolation) of the resampled
    ratios. The draws are `numpy.random.default_rng(seed).integers(0, k, size=(resamples, k))`,
    indexing the common block ids in increasing order, so the result is deterministic."""
    import numpy as np

    if len(samples_us) != len(blocks) or len(ref_samples_us) != len(ref_blocks):
        raise ValueError("every sample needs its block")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("resamples must be positive and confidence in (0, 1)")
    common = sorted(set(blocks) & set(ref_blocks))
    if not common:
        raise ValueError("the model and the reference share no block")
    keep = set(common)
    xs, xb = _by_block(samples_us, blocks, keep)
    rs, rb = _by_block(ref_samples_us, ref_blocks, keep)
    ref_median = percentile(rs, 50)
    if ref_median <= 0:
        raise ValueError("the reference's median latency is not positive")
    ratio = percentile(xs, 50) / ref_median
    k = len(common)
    if k == 1:
        return RatioInterval(ratio, ratio, ratio, 1, 0, confidence)
    halves = []
    for part in (set(common[: k // 2]), set(common[k // 2 :])):
        a = [x for x, b in zip(xs, xb) if b in part]
        r = [x for x, b in zip(rs, rb) if b in part]
        halves.append(percentile(sorted(a), 50) / percentile(sorted(r), 50))
    pos = {b: i for i, b in enumerate(common)}
    x_pos = np.array([pos[b] for b in xb])
    r_pos = np.array([pos[b] for b in rb])
    rng = np.random.default_rng(seed)
    rows = max(1, min(256, 4_000_000 // max(len(xs), len(rs), k)))  # bounded memory per chunk
    ratios = []
    for start in range(0, resamples, rows):
        n = min(rows, resamples - start)
        draws = rng.integers(0, k, size=(n, k))  # consecutive chunks of one (resamples, k) draw
        counts = np.bincount((np.arange(n)[:, None] * k + draws).ravel(), minlength=n * k).reshape(n, k).astype(np.int32)
        ratios.append(_weighted_medians(xs, x_pos, counts) / _weighted_medians(rs, r_pos, counts))
    boot = sorted(float(r) for r in np.concatenate(ratios))
    tail = (1 - confidence) / 2 * 100
    return RatioInterval(
        ratio, percentile(boot, tail), percentile(boot, 100 - tail), k, resamples, confidence, tuple(halves)
    )

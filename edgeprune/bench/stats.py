"""All latency statistics of the harness, in one place. From raw samples: median, mean, min,
max, p5/p90/p95 (linear interpolation between order statistics, numpy's default), sample
standard deviation (n-1) and the coefficient of variation. Where a runner gives only summaries
(benchmark_model), the spread comes from repeating the invocation: the statistics of the
per-invocation medians."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: a result whose CV is above this is flagged `high_cv`
DEFAULT_MAX_CV = 0.10
#: temperature (C) from which boards and phones start to throttle
HOT_C = 80.0


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


def ratio_text(a_us: float, b_us: float) -> str:
    """'1.33x slower' / '1.20x faster' / 'same' for a against b."""
    if a_us <= 0 or b_us <= 0:
        return "n/a"
    r = a_us / b_us
    if abs(r - 1) < 0.005:
        return "same"
    return f"{r:.2f}x slower" if r > 1 else f"{1 / r:.2f}x faster"

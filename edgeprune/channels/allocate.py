"""How many channels each group keeps, and which: uniform ratio or global ranking, the max ratio per
group, rounding to a multiple, and searching the ratio that meets a MACs or parameter target."""

from __future__ import annotations

import math

import numpy as np

from edgeprune.channels.config import ChannelConfig
from edgeprune.channels.count import Counter
from edgeprune.channels.graph import ChannelGraph
from edgeprune.channels.importance import normalized
from edgeprune.errors import PruningError


def min_kept(size: int, max_ratio: float) -> int:
    return max(1, math.ceil(size * (1.0 - max_ratio) - 1e-9))


def allowed_counts(size: int, round_to: int, max_ratio: float, floor: int | None = None) -> list[int]:
    """Kept counts a group may have: multiples of round_to (or the whole group), at least one channel,
    losing no more than max_ratio (or keeping at least `floor`, the limit carried over from the
    original width in iterative pruning); ascending."""
    floor = min_kept(size, max_ratio) if floor is None else max(1, floor)
    options = {k for k in range(round_to, size + 1, round_to) if k >= floor}
    options.add(size)
    return sorted(options)


def round_kept(size: int, target: float, round_to: int, max_ratio: float, floor: int | None = None) -> int:
    """The allowed kept count nearest to `target` (ties keep more)."""
    options = allowed_counts(size, round_to, max_ratio, floor)
    return min(options, key=lambda k: (abs(k - target), -k))


def uniform_counts(graph: ChannelGraph, cfg: ChannelConfig, ratio: float,
                   floors: dict[int, int] | None = None) -> dict[int, int]:
    floors = floors or {}
    return {g.root: round_kept(g.size, g.size * (1.0 - ratio), cfg.round_to, cfg.max_ratio, floors.get(g.root))
            for g in graph.groups}


def global_counts(graph: ChannelGraph, scores: dict[str, np.ndarray], cfg: ChannelConfig,
                  ratio: float, floors: dict[int, int] | None = None) -> dict[int, int]:
    """Remove the lowest-scoring channels across all groups (scores normalized per group)."""
    floors = floors or {}
    candidates = []
    for g in graph.groups:
        s = np.sort(normalized(scores[g.key]))
        floor = floors.get(g.root)
        removable = g.size - (min_kept(g.size, cfg.max_ratio) if floor is None else max(1, min(floor, g.size)))
        candidates += [(float(v), g.root) for v in s[:removable]]
    candidates.sort()
    n = int(round(ratio * sum(g.size for g in graph.groups)))
    removed: dict[int, int] = {}
    for _, root in candidates[:n]:
        removed[root] = removed.get(root, 0) + 1
    return {g.root: round_kept(g.size, g.size - removed.get(g.root, 0), cfg.round_to, cfg.max_ratio,
                               floors.get(g.root)) for g in graph.groups}


def counts_for(graph, scores, cfg, ratio, floors: dict[int, int] | None = None, table=None) -> dict[int, int]:
    """Kept counts for removing `ratio`; allocation "sensitivity" needs `table` (a SensitivityTable)."""
    if cfg.allocation == "sensitivity":
        if table is None:
            raise PruningError("allocation 'sensitivity' needs a measured sensitivity table",
                               "prune through prune_channels with data=(x, y)")
        return table.counts(ratio, floors)
    if cfg.allocation == "global":
        return global_counts(graph, scores, cfg, ratio, floors)
    return uniform_counts(graph, cfg, ratio, floors)


def kept_indices(graph: ChannelGraph, scores: dict[str, np.ndarray], counts: dict[int, int]) -> dict[int, np.ndarray]:
    """The `counts[root]` highest-scoring channels of each group, in ascending index order."""
    kept = {}
    for g in graph.groups:
        k = counts.get(g.root, g.size)
        order = np.argsort(-scores[g.key], kind="stable")[:k]
        kept[g.root] = np.sort(order)
    return kept


def counts_for_budget(graph: ChannelGraph, scores, cfg: ChannelConfig, counter: Counter,
                      keep_fraction: float, measure: str,
                      floors: dict[int, int] | None = None, table=None) -> tuple[dict[int, int], float]:
    """The smallest ratio whose `measure` ("macs" or "params") is at most keep_fraction of the graph's
    model; returns (counts, ratio). Bisection: rounding makes the measure a step function of ratio."""
    full = counter.count()
    base = full.macs if measure == "macs" else full.params
    if base is None:
        raise PruningError("MACs of this model are unknown (a spatial size is not fixed)",
                           "give the model a fully defined input shape, or use ratio or params_target")
    goal = keep_fraction * base

    def value(ratio: float) -> float:
        c = counter.count(counts_for(graph, scores, cfg, ratio, floors, table))
        return float(c.macs if measure == "macs" else c.params)

    lo, hi = 0.0, 0.999  # the max ratio (or floors) cap every group anyway
    best_hi = value(hi)
    if best_hi > goal:
        raise PruningError(
            f"the {measure} target {keep_fraction:.3g} cannot be met: the most this graph can prune keeps "
            f"{best_hi / base:.3g} of the {measure} (max_ratio={cfg.max_ratio}, round_to={cfg.round_to}, "
            f"{len(graph.groups)} prunable groups)",
            f"raise the {measure} target, max_ratio, or protect fewer layers")
    if value(lo) <= goal:
        return counts_for(graph, scores, cfg, lo, floors, table), lo
    for _ in range(30):
        mid = (lo + hi) / 2
        if value(mid) <= goal:
            hi = mid
        else:
            lo = mid
    return counts_for(graph, scores, cfg, hi, floors, table), hi

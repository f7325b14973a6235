"""Latency-aware pruning, NetAdapt-style: measure what one pruning step of each group buys on the
target (the host through LiteRT by default), prune where the latency saved per unit of importance
lost is largest, and re-measure the whole model after every step, because MACs are not latency.

A probe is any callable model -> milliseconds. `HostProbe` converts with edgeprune.export.convert and
times the flatbuffer with android_bench.litert_runner.measure (median of the samples)."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np

from edgeprune.channels.allocate import allowed_counts
from edgeprune.channels.config import ChannelConfig
from edgeprune.channels.count import Counter
from edgeprune.channels.graph import ChannelGraph
from edgeprune.channels.importance import make_criterion, normalized, score_groups
from edgeprune.channels.surgery import rebuild
from edgeprune.errors import PruningError
from edgeprune.progress import log, task


@dataclasses.dataclass
class HostProbe:
    """Median host latency (ms) of a model exported as `mode`, through LiteRT with `threads`."""

    mode: str = "int8"
    threads: int = 1
    representative: np.ndarray | None = None
    runs: int = 30
    warmup: int = 5
    min_secs: float = 0.5
    conversions: int = 0

    def __call__(self, model) -> float:
        from android_bench.litert_runner import measure  # noqa: PLC0415
        from edgeprune.export import convert  # noqa: PLC0415

        content = convert(model, mode=self.mode, representative=self.representative if self.mode == "int8" else None)
        self.conversions += 1
        fd, path = tempfile.mkstemp(suffix=".tflite", prefix="edgeprune-latency-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            result = measure(path, threads=self.threads, runs=self.runs, warmup=self.warmup, min_secs=self.min_secs)
        finally:
            os.unlink(path)
        return float(result["summary"]["median_us"]) / 1000.0


def representative_for(model, data, n: int = 16, seed: int = 0) -> np.ndarray:
    """Up to n samples of the data's inputs, or (without data) standard normal inputs of the model's shape."""
    if data is not None:
        return np.asarray(data[0])[:n].astype(np.float32)
    shape = [d if d is not None else 1 for d in model.inputs[0].shape[1:]]
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def prune_for_latency(model, graph: ChannelGraph, cfg: ChannelConfig, data=None, probe=None, patience: int = 3,
                      candidates: int | None = 12):
    """Kept indices (by group root) that bring the probe's latency to cfg.latency_ms or below.
    Returns (kept, latency_before_ms, latency_after_ms, steps). Gives up with a PruningError when no
    table entry promises a gain, or when `patience` steps in a row measured no new best latency (the
    model is down to what its fixed costs and measurement noise allow).

    Every table entry costs an export and a measurement, so only the `candidates` groups whose next
    step saves the most MACs are measured (None: all groups); latency, not MACs, then decides among them."""
    if probe is None:
        probe = HostProbe(cfg.latency_mode, cfg.latency_threads, representative_for(model, data))
    target = float(cfg.latency_ms)
    scores = score_groups(model, graph, make_criterion(cfg.criterion, data))
    order = {g.root: np.argsort(-scores[g.key], kind="stable") for g in graph.groups}
    cost_of = {g.root: normalized(scores[g.key])[order[g.root]] for g in graph.groups}  # by rank
    counts = {g.root: g.size for g in graph.groups}

    def kept_for(c):
        return {root: np.sort(order[root][:k]) for root, k in c.items()}

    def next_count(root, size):
        below = [k for k in allowed_counts(size, cfg.round_to, cfg.max_ratio) if k < counts[root]]
        return max(below) if below else None

    current = before = probe(model)
    steps: list[dict] = []
    if current <= target:
        log(f"latency {current:.3f} ms already meets {target} ms: nothing pruned")
        return kept_for(counts), before, current, steps
    table: dict[int, tuple[int, float, float]] = {}  # root -> (next count, latency then, latency when measured)

    def evaluate(g) -> None:
        n = next_count(g.root, g.size)
        if n is None:
            table.pop(g.root, None)
            return
        trial = dict(counts)
        trial[g.root] = n
        table[g.root] = (n, probe(rebuild(graph, kept_for(trial))), current)

    pool = list(graph.groups)
    if candidates is not None and len(pool) > candidates:
        counter = Counter(graph)
        full = counter.count().macs or 0

        def saved(g):
            n = next_count(g.root, g.size)
            return -1 if n is None else full - (counter.count({g.root: n}).macs or 0)

        pool = sorted(pool, key=saved, reverse=True)[:candidates]
    with task("latency table", total=len(pool)) as progress:
        for g in pool:
            evaluate(g)
            progress.advance(1)
    by_root = {g.root: g for g in graph.groups}
    best, stalled = current, 0

    def give_up(why: str):
        return PruningError(
            f"latency target {target} ms not reached: {current:.3f} ms after {len(steps)} steps "
            f"(from {before:.3f} ms, best {best:.3f} ms); {why}",
            "raise latency_ms or max_ratio, protect fewer layers, or measure with more runs")

    with task("latency-aware pruning", total=None) as progress:
        while current > target:
            ranked = []
            for root, (n, lat, ref) in table.items():
                gain = ref - lat
                lost = float(cost_of[root][n:counts[root]].sum())
                ranked.append((gain / max(lost, 1e-9), gain, root, n))
            ranked = [r for r in ranked if r[1] > 0]
            if not ranked:
                raise give_up("no further step measured faster")
            ranked.sort(reverse=True)
            chosen, predicted = [], 0.0
            for _, gain, root, n in ranked:  # far from the target, take several steps before re-measuring
                if chosen and predicted + gain > 0.5 * (current - target):
                    break
                chosen.append((root, n))
                predicted += gain
            for root, n in chosen:
                counts[root] = n
            current = probe(rebuild(graph, kept_for(counts)))
            steps.append({"step": len(steps) + 1, "groups": [by_root[r].key for r, _ in chosen],
                          "counts": [int(n) for _, n in chosen], "predicted_gain_ms": predicted,
                          "latency_ms": current})
            log(f"latency step {len(steps)}: {', '.join(by_root[r].key for r, _ in chosen)} -> {current:.3f} ms")
            progress.advance(1)
            if current < best:
                best, stalled = current, 0
            else:
                stalled += 1
                if stalled >= patience and current > target:
                    raise give_up(f"{patience} steps in a row brought no new best")
            for root, _ in chosen:
                evaluate(by_root[root])
    return kept_for(counts), before, current, steps

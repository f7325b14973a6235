"""Per-group sensitivity (the greedy ratio selection of NNCF and AIMET): prune each group alone at a
few ratios, measure what that costs on a held-out slice, then give each group its own ratio so that
the total budget is met with the least summed cost.

Pruning one group alone is done in place and undone: the removed channels' consumer rows are zeroed
(numerically what the rebuilt model computes, as the surgery tests prove) and restored afterwards,
so the table costs one forward pass per group and ratio, and no rebuild."""

from __future__ import annotations

import numpy as np

from edgeprune._tf import tf
from edgeprune.channels.allocate import allowed_counts, round_kept
from edgeprune.channels.graph import ChannelGraph
from edgeprune.errors import DataError
from edgeprune.progress import task

RATIOS = (0.25, 0.5, 0.75)


def _cost(reference: np.ndarray, out: np.ndarray, y: np.ndarray | None) -> float:
    """Accuracy lost against the labels (when there are class labels), plus a small KL term that
    orders groups whose accuracy does not move."""
    from edgeprune.channels.blocks import output_change

    kl = output_change(reference, out, "output_kl")
    if y is None:
        return kl
    return float(np.mean(reference.argmax(-1) == y) - np.mean(out.argmax(-1) == y)) + 1e-3 * kl


class SensitivityTable:
    """cost[group root][kept count] for each group pruned alone; `counts(ratio)` allocates."""

    def __init__(self, model, graph: ChannelGraph, scores: dict[str, np.ndarray], cfg, data,
                 ratios=RATIOS, max_samples: int = 1024):
        if data is None:
            raise DataError("allocation 'sensitivity' needs data to measure each group on",
                            "pass data=(x, y) (the pipeline and `prune` pass a held-out training slice)")
        x = np.asarray(data[0])[:max_samples]
        y = np.asarray(data[1])[:max_samples] if len(data) > 1 and data[1] is not None else None
        if y is not None and not np.issubdtype(y.dtype, np.integer):
            y = None
        self.graph, self.cfg = graph, cfg
        run = tf.function(lambda b: model(b, training=False), reduce_retracing=True)

        def predict():
            return np.concatenate([np.asarray(run(tf.constant(x[i:i + 256]))) for i in range(0, len(x), 256)])

        reference = predict()
        self.cost: dict[int, dict[int, float]] = {}
        layers = {op.name: op.layer for op in graph.trace.ops}
        with task("channel sensitivity", total=len(graph.groups)) as progress:
            for g in graph.groups:
                table = {g.size: 0.0}
                order = np.argsort(-scores[g.key], kind="stable")
                members = [m for m in graph.members(g) if m.weight.role == "consume"]
                saved = [(m, getattr(layers[m.layer], m.weight.attr), getattr(layers[m.layer], m.weight.attr).numpy())
                         for m in members]
                for r in ratios:
                    k = round_kept(g.size, g.size * (1.0 - r), cfg.round_to, cfg.max_ratio)
                    if k in table:
                        continue
                    removed = order[k:]
                    try:
                        for m, var, value in saved:
                            arr = np.moveaxis(value.copy(), m.weight.axis, 0)
                            arr[m.positions[removed].ravel()] = 0
                            var.assign(np.moveaxis(arr, 0, m.weight.axis))
                        table[k] = _cost(reference, predict(), y)
                    finally:
                        for m, var, value in saved:
                            var.assign(value)
                self.cost[g.root] = table
                progress.advance(1, g.key)

    def _cost_at(self, root: int, kept: int) -> float:
        """Cost of keeping `kept` channels, interpolated between measured counts."""
        table = self.cost[root]
        ks = sorted(table)
        return float(np.interp(kept, ks, [table[k] for k in ks]))

    def counts(self, ratio: float, floors: dict[int, int] | None = None) -> dict[int, int]:
        """Remove `ratio` of all prunable channels: repeatedly take the step (one group down to its
        next allowed count) with the least cost per channel removed."""
        floors = floors or {}
        groups = self.graph.groups
        options = {g.root: allowed_counts(g.size, self.cfg.round_to, self.cfg.max_ratio, floors.get(g.root))
                   for g in groups}
        level = {g.root: len(options[g.root]) - 1 for g in groups}  # index into options: start at full size
        total = sum(g.size for g in groups)
        goal = ratio * total
        removed = 0.0
        while removed < goal - 1e-9:
            best = None
            for g in groups:
                i = level[g.root]
                if i == 0:
                    continue
                now, nxt = options[g.root][i], options[g.root][i - 1]
                extra = max(0.0, self._cost_at(g.root, nxt) - self._cost_at(g.root, now))
                per = (extra + 1e-6) / (now - nxt)
                if best is None or per < best[0]:
                    best = (per, g.root, now - nxt)
            if best is None:
                break
            level[best[1]] -= 1
            removed += best[2]
        return {root: options[root][i] for root, i in level.items()}

    def to_dict(self) -> dict:
        return {g.key: {str(k): round(v, 6) for k, v in sorted(self.cost[g.root].items())} for g in self.graph.groups}

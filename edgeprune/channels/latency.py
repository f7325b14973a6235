"""Latency-aware channel pruning with a per-device latency table (NetAdapt, AMC): every layer unit's
latency is measured once per device at a few widths (edgeprune.latency_profile.build_table, cached
per device), every candidate step is priced from the table, and the real model is exported and
measured only to confirm the result. When a confirmation misses the target, the table's fixed cost
is corrected by the measured error and pruning goes on.

A probe measures models: `HarnessProbe` (edgeprune.latency_profile) exports them and times them on
a target through edgeprune.bench.bench_models; any callable model -> ms also works (one model at a
time). The table's units are measured with the same probe.

What the result's steps hold (ChannelResult.steps, and the plan's notes["steps"]):

    {"kind": "latency_table", "table": LatencyTable.to_dict()}                      first, once
    {"kind": "prune", "step", "groups", "counts", "predicted_gain_ms", "predicted_ms"}  each step
    {"kind": "confirm", "step", "predicted_ms", "measured_ms", "prediction_error",
     "target_ms", "met", "fixed_ms"}                             after each measured confirmation

`step` counts prune steps; a confirm's `step` is the number of prune steps it measured after;
prediction_error is predicted / measured - 1; fixed_ms is the table's fixed cost from then on
(corrected after a miss). The last step is always a confirm whose measured_ms is the result's
latency_ms_after."""

from __future__ import annotations

import numpy as np

from edgeprune.channels.allocate import allowed_counts
from edgeprune.channels.config import ChannelConfig
from edgeprune.channels.graph import ChannelGraph
from edgeprune.channels.importance import make_criterion, normalized, score_groups
from edgeprune.channels.surgery import rebuild
from edgeprune.errors import PruningError
from edgeprune.progress import log, task


def representative_for(model, data, n: int = 16, seed: int = 0) -> np.ndarray:
    """Up to n samples of the data's inputs, or (without data) standard normal inputs of the model's shape."""
    if data is not None:
        return np.asarray(data[0])[:n].astype(np.float32)
    shape = [d if d is not None else 1 for d in model.inputs[0].shape[1:]]
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def default_probe(model, cfg: ChannelConfig, data=None, target="local"):
    """The harness on `target` (this host by default), in the config's latency mode and threads."""
    from edgeprune.latency_profile import HarnessProbe  # noqa: PLC0415 (imports the exporter)

    return HarnessProbe(target, cfg.latency_mode, cfg.latency_threads, representative_for(model, data))


def _check_table(table, graph: ChannelGraph) -> None:
    keys = {g.key for g in graph.groups}
    unknown = sorted({k for u in table.units for k in u.groups()} - keys)
    if unknown:
        raise PruningError(f"the latency table names channel group {unknown[0]!r}, which this model lacks",
                           "profile this model (with the same protect patterns) to get its table")


def prune_for_latency(model, graph: ChannelGraph, cfg: ChannelConfig, data=None, probe=None, table=None,
                      max_confirmations: int = 4):
    """Kept indices (by group root) that bring the measured latency to cfg.latency_ms or below.
    Returns (kept, latency_before_ms, latency_after_ms, steps); see the module docstring for steps.

    The table is built with `probe` unless given (a LatencyTable of this model on the same target).
    Each step removes, from the group where it saves the most predicted time per unit of
    importance lost, its channels down to the next allowed count that saves time. When the
    prediction meets the target the model is measured; after a miss the fixed cost takes the
    measured error and pruning continues. Gives up with a PruningError when no step is predicted
    to save time, or after `max_confirmations` measurements that missed."""
    from edgeprune.latency_profile import build_table  # noqa: PLC0415 (imports the exporter)

    if probe is None:
        probe = default_probe(model, cfg, data)
    target = float(cfg.latency_ms)
    if table is None:
        table = build_table(model, probe, round_to=cfg.round_to, max_ratio=cfg.max_ratio, protect=cfg.protect,
                            graph=graph, check_ratio=None)
    _check_table(table, graph)
    steps: list[dict] = [{"kind": "latency_table", "table": table.to_dict()}]
    before = float(table.full_ms)
    by_key = {g.key: g for g in graph.groups}
    scores = score_groups(model, graph, make_criterion(cfg.criterion, data))
    order = {g.key: np.argsort(-scores[g.key], kind="stable") for g in graph.groups}
    cost_of = {g.key: normalized(scores[g.key])[order[g.key]] for g in graph.groups}  # by rank
    widths = {g.key: g.size for g in graph.groups}
    touching = {g.key: [u for u in table.units if g.key in u.groups()] for g in graph.groups}
    allowed = {g.key: allowed_counts(g.size, cfg.round_to, cfg.max_ratio) for g in graph.groups}
    scale, fixed = table.scale, table.fixed_ms

    def predicted() -> float:
        return scale * sum(u.at_widths(widths) for u in table.units) + fixed

    def gain(key: str, n: int) -> float:
        now = sum(u.at_widths(widths) for u in touching[key])
        trial = {**widths, key: n}
        return scale * (now - sum(u.at_widths(trial) for u in touching[key]))

    def kept() -> dict[int, np.ndarray]:
        return {by_key[k].root: np.sort(order[k][:n]) for k, n in widths.items()}

    n_steps, confirms = 0, 0

    def confirm(current: float, measured: float) -> dict:
        step = {"kind": "confirm", "step": n_steps, "predicted_ms": current, "measured_ms": measured,
                "prediction_error": current / measured - 1.0, "target_ms": target, "met": measured <= target,
                "fixed_ms": fixed}
        steps.append(step)
        return step

    if before <= target:
        log(f"latency {before:.3f} ms already meets {target} ms: nothing pruned")
        confirm(predicted(), before)
        return kept(), before, before, steps

    def give_up(why: str, measured: float | None, current: float) -> PruningError:
        got = f"measured {measured:.3f} ms" if measured is not None else f"predicted {current:.3f} ms"
        return PruningError(
            f"latency target {target} ms not reached: {got} after {n_steps} steps and {confirms} "
            f"measurement(s) (from {before:.3f} ms); {why}",
            "raise latency_ms or max_ratio, protect fewer layers, or profile with more runs")

    current, measured = predicted(), None
    with task("latency-aware pruning", None) as progress:
        while True:
            while current > target:
                best = None
                for key in widths:
                    for n in reversed([c for c in allowed[key] if c < widths[key]]):  # nearest first
                        g = gain(key, n)
                        if g > 1e-9:
                            lost = float(cost_of[key][n:widths[key]].sum())
                            cand = (g / max(lost, 1e-9), g, key, n)
                            best = cand if best is None or cand[:2] > best[:2] else best
                            break
                if best is None:
                    why = ("no further step is predicted to save time (every group is at its smallest "
                           f"allowed width, max_ratio {cfg.max_ratio}, or saves nothing)")
                    raise give_up(why, measured, current)
                _, g, key, n = best
                widths[key] = n
                current -= g
                n_steps += 1
                steps.append({"kind": "prune", "step": n_steps, "groups": [key], "counts": [int(n)],
                              "predicted_gain_ms": g, "predicted_ms": current})
                progress.advance(1, f"{key} -> {n}: predicted {current:.3f} ms")
            measured = float(probe(rebuild(graph, kept())))
            confirms += 1
            step = confirm(current, measured)
            log(f"latency after {n_steps} steps: predicted {current:.3f} ms, measured {measured:.3f} ms "
                f"({step['prediction_error']:+.1%})")
            if step["met"]:
                return kept(), before, measured, steps
            if confirms >= max_confirmations:
                raise give_up(f"{confirms} measurements missed it", measured, current)
            fixed += measured - current  # the table's error at this model goes into its fixed cost
            step["fixed_ms"] = fixed
            current = measured

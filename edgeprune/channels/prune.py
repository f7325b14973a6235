"""prune_channels: graph -> importance -> allocation -> plan -> surgery (-> recovery), in one call;
apply_plan: the same surgery from a saved plan."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from edgeprune._tf import keras
from edgeprune.channels.allocate import counts_for, counts_for_budget, kept_indices, min_kept
from edgeprune.channels.config import ChannelConfig
from edgeprune.channels.count import Counter
from edgeprune.channels.graph import ChannelGraph
from edgeprune.channels.handlers import (ConvHandler, DenseHandler, DepthwiseHandler, FrozenHandler,
                                         SeparableHandler)
from edgeprune.channels.importance import make_criterion, score_groups
from edgeprune.channels.plan import PruningPlan
from edgeprune.channels.recovery import reestimate_bn
from edgeprune.channels.surgery import rebuild
from edgeprune.errors import InternalError, ModelError, PruningError, RecipeError
from edgeprune.progress import log, task


@dataclasses.dataclass
class ChannelResult:
    model: "keras.Model"
    plan: PruningPlan
    layers: list[dict]  # {"layer", "type", "before", "after"} for every conv, dense and depthwise layer
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    latency_ms_before: float | None = None  # only in latency mode (host LiteRT, median)
    latency_ms_after: float | None = None
    steps: list[dict] = dataclasses.field(default_factory=list)


FineTune = Callable[["keras.Model", int], "keras.Model"]


def layer_report(graph: ChannelGraph, kept: dict[int, np.ndarray]) -> list[dict]:
    rows = []
    for name, op in graph.layer_ops.items():
        handler = graph.handlers[name]
        base = handler.base if isinstance(handler, FrozenHandler) else handler
        if isinstance(base, (ConvHandler, DenseHandler, SeparableHandler)):
            port = "out"
        elif isinstance(base, DepthwiseHandler):
            port = "io"
        else:
            continue
        root = graph.port_root(name, port)
        rows.append({"layer": name, "type": op.kind, "before": graph.root_size(root),
                     "after": int(len(graph.kept_of_root(root, kept)))})
    return rows


def _check_fine_tuned(model, new):
    if not isinstance(new, keras.Model):
        raise RecipeError(f"fine_tune returned {type(new).__name__}, not a tf_keras model",
                          "fine_tune(model, epochs) must return the fine-tuned model")
    return new


def _x_of(data):
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise RecipeError(f"data must be a pair (x, y), got {type(data).__name__}", "pass data=(x_batch, y_batch)")
    return np.asarray(data[0])


def prune_channels(model, config: ChannelConfig | None = None, data=None, fine_tune: FineTune | None = None, *,
                   fine_tune_epochs: int = 1, recalibrate_bn: bool | None = None,
                   latency_probe: Callable[["keras.Model"], float] | None = None) -> ChannelResult:
    """Remove channels from `model` as `config` says and return the smaller model with its plan.

    data: (x, y) arrays, needed by criterion="taylor"; also used to re-estimate BatchNormalization
    statistics after surgery (recalibrate_bn, on by default when data is given) and as the
    representative set in latency mode. fine_tune(model, epochs) -> model runs after every pruning step
    (`iterative_steps`) with `fine_tune_epochs`. latency_probe(model) -> ms replaces the host LiteRT
    measurement in latency mode (for another target)."""
    cfg = config if config is not None else ChannelConfig()
    if not isinstance(cfg, ChannelConfig):
        raise RecipeError(f"config must be a ChannelConfig, got {type(cfg).__name__}",
                          "build one with ChannelConfig(ratio=0.4, ...)")
    x = _x_of(data)
    if recalibrate_bn is None:
        recalibrate_bn = x is not None
    graph0 = ChannelGraph(model, cfg.protect)
    counter0 = Counter(graph0)
    before = counter0.count()
    if not graph0.groups and (cfg.budget != "ratio" or cfg.ratio > 0):
        reasons = "; ".join(sorted(set(graph0.fixed.values()))[:3])
        raise PruningError(f"model {model.name!r} has no channel group that can be pruned ({reasons})",
                           "protect fewer layers; inputs, outputs and channel-mixing layers keep their channels")
    steps: list[dict] = []
    latency_before = latency_after = None
    if cfg.budget == "latency":
        from edgeprune.channels.latency import prune_for_latency  # noqa: PLC0415 (imports the exporter)

        kept0, latency_before, latency_after, steps = prune_for_latency(model, graph0, cfg, data, latency_probe)
        current = rebuild(graph0, kept0)
        if recalibrate_bn:
            reestimate_bn(current, x)
        if fine_tune is not None:
            current = _check_fine_tuned(current, fine_tune(current, fine_tune_epochs))
    else:
        current, kept0, steps = _prune_steps(model, graph0, counter0, before, cfg, data, x, fine_tune,
                                             fine_tune_epochs, recalibrate_bn)
    plan = PruningPlan.from_kept(graph0, kept0, cfg.to_dict(), {"budget": cfg.budget, "steps": steps})
    after = counter0.count({root: len(k) for root, k in kept0.items()})
    return ChannelResult(model=current, plan=plan, layers=layer_report(graph0, kept0),
                         params_before=before.params, params_after=after.params,
                         macs_before=before.macs, macs_after=after.macs,
                         latency_ms_before=latency_before, latency_ms_after=latency_after, steps=steps)


def _prune_steps(model, graph0, counter0, before, cfg, data, x, fine_tune, fine_tune_epochs, recalibrate_bn):
    n = cfg.iterative_steps
    composed = {g.key: np.arange(g.size) for g in graph0.groups}
    floor_of = {g.key: min_kept(g.size, cfg.max_ratio) for g in graph0.groups}  # max_ratio of the original
    current, graph, counter = model, graph0, counter0
    steps = []
    with task("channel pruning", total=n) as progress:
        for step in range(1, n + 1):
            if step > 1:
                graph = ChannelGraph(current, cfg.protect)
                counter = Counter(graph)
            scores = score_groups(current, graph, make_criterion(cfg.criterion, data))
            floors = {g.root: floor_of[g.key] for g in graph.groups if g.key in floor_of}
            table = None
            if cfg.allocation == "sensitivity":
                from edgeprune.channels.sensitivity import SensitivityTable  # noqa: PLC0415

                table = SensitivityTable(current, graph, scores, cfg, data)
            if cfg.budget == "ratio":
                done, goal = cfg.ratio * (step - 1) / n, cfg.ratio * step / n
                counts = counts_for(graph, scores, cfg, 1.0 - (1.0 - goal) / (1.0 - done), floors, table)
            else:
                measure = cfg.budget
                target = cfg.macs_target if measure == "macs" else cfg.params_target
                base = before.macs if measure == "macs" else before.params
                now = counter.count()
                now_value = now.macs if measure == "macs" else now.params
                goal_value = base * (1.0 - (1.0 - target) * step / n)
                if base is None or now_value is None:
                    raise PruningError("MACs of this model are unknown (a spatial size is not fixed)",
                                       "give the model a fully defined input shape, or use ratio")
                if goal_value >= now_value:
                    counts = {}
                else:
                    counts, _ = counts_for_budget(graph, scores, cfg, counter, goal_value / now_value, measure,
                                                  floors, table)
            kept = kept_indices(graph, scores, counts)
            for g in graph.groups:
                if g.key not in composed:
                    raise InternalError(f"channel group {g.key!r} appeared after pruning step {step - 1}",
                                        "report this model to edgeprune")
                composed[g.key] = composed[g.key][kept[g.root]]
            new = rebuild(graph, kept)
            if recalibrate_bn:
                reestimate_bn(new, x)
            if fine_tune is not None:
                new = _check_fine_tuned(new, fine_tune(new, fine_tune_epochs))
            c = counter0.count({graph0.group(k).root: len(v) for k, v in composed.items()})
            steps.append({"step": step, "params": c.params, "macs": c.macs,
                          "channels": int(sum(len(v) for v in composed.values())),
                          **({"sensitivity": table.to_dict()} if table is not None else {})})
            log(f"channel pruning step {step}/{n}: {c.params} params, {c.macs} MACs")
            progress.advance(1)
            current = new
    return current, {graph0.group(k).root: v for k, v in composed.items()}, steps


def apply_plan(model, plan: PruningPlan) -> "keras.Model":
    """Rebuild `model` with the channels `plan` keeps (the architecture must be the one the plan was made
    for); weights are the model's own, sliced."""
    if not isinstance(plan, PruningPlan):
        raise ModelError(f"apply_plan needs a PruningPlan, got {type(plan).__name__}",
                         "load one with PruningPlan.load(path)")
    graph = ChannelGraph(model, plan.protect)
    return rebuild(graph, plan.kept_for(graph))

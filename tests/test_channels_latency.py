"""Latency-aware pruning: the greedy loop with a deterministic probe, and the host LiteRT probe."""

import numpy as np
import pytest

from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, ChannelGraph, apply_plan, prune_channels
from edgeprune.channels.count import Counter
from edgeprune.channels.latency import HostProbe
from edgeprune.errors import PruningError
from channel_models import batch, zoo

L = keras.layers


class MacsProbe:
    """A stand-in target whose latency is its MACs (in millions) plus a fixed cost."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        return 0.05 + Counter(ChannelGraph(model)).count().macs / 1e6


def test_greedy_reaches_the_latency_target_and_rechecks_every_step():
    model = zoo()
    probe = MacsProbe()
    base = probe(model)
    cfg = ChannelConfig(latency_ms=0.6 * base, round_to=4)
    result = prune_channels(model, cfg, latency_probe=probe)
    assert result.latency_ms_before == pytest.approx(base)
    assert result.latency_ms_after <= 0.6 * base
    assert result.latency_ms_after == pytest.approx(probe(result.model))
    steps = result.plan.notes["steps"]
    n_groups = len(ChannelGraph(model).groups)
    # one measure of the start, at most one per group for the table, then per step a whole-model recheck
    # and at most one fresh table entry per pruned group (none once a group cannot shrink further)
    assert 1 + n_groups + len(steps) <= probe.calls - 2 <= 1 + n_groups + sum(1 + len(s["groups"]) for s in steps)
    assert steps[-1]["latency_ms"] == result.latency_ms_after
    assert all(a["latency_ms"] > b["latency_ms"] for a, b in zip(steps, steps[1:]))
    x = batch((16, 16, 3))
    np.testing.assert_allclose(apply_plan(model, result.plan)(x).numpy(), result.model(x).numpy(), atol=1e-6)
    # the expensive stem group goes first: its channels buy the most MACs
    assert "stem:out" in steps[0]["groups"]


def test_an_unreachable_latency_target_is_refused_with_what_was_reached():
    probe = MacsProbe()
    with pytest.raises(PruningError, match="latency target .* not reached"):
        prune_channels(zoo(), ChannelConfig(latency_ms=0.01, round_to=8, max_ratio=0.5), latency_probe=probe)


@pytest.mark.slow
def test_host_probe_measures_an_exported_model():
    inp = keras.Input((32, 32, 3))
    x = L.Conv2D(32, 3, padding="same", activation="relu")(inp)
    out = L.Dense(4)(L.GlobalAveragePooling2D()(x))
    probe = HostProbe(mode="float32", threads=1, runs=10, warmup=2, min_secs=0.1)
    ms = probe(keras.Model(inp, out))
    assert 0 < ms < 1000 and probe.conversions == 1


def test_a_latency_that_stops_improving_gives_up_after_patience():
    class Flat:
        """Every pruned model measures 1.0 ms: a fixed cost no channel can buy down."""

        calls = 0

        def __call__(self, model):
            self.calls += 1
            return 2.0 if self.calls == 1 else 1.0 + 0.1 * (self.calls % 2)

    with pytest.raises(PruningError, match="3 steps in a row brought no new best"):
        prune_channels(zoo(), ChannelConfig(latency_ms=0.5, round_to=8), latency_probe=Flat())


def test_only_the_groups_that_save_most_macs_are_measured():
    from edgeprune.channels.latency import prune_for_latency

    model = zoo()
    graph = ChannelGraph(model)
    probe = MacsProbe()
    base = probe(model)
    kept, before, after, steps = prune_for_latency(model, graph, ChannelConfig(latency_ms=0.8 * base, round_to=4),
                                                   probe=probe, candidates=2)
    assert after <= 0.8 * base
    touched = {key for s in steps for key in s["groups"]}
    assert touched <= {"stem:out", "conv2:out", "branch_a:out", "branch_b:out"} and len(touched) <= 2

"""Latency-aware pruning: the greedy loop over a latency table with deterministic probes, the
confirmation and its fixed-cost correction, and the harness probe."""

import numpy as np
import pytest

from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, ChannelGraph, apply_plan, prune_channels
from edgeprune.channels.count import Counter
from edgeprune.channels.latency import prune_for_latency
from edgeprune.errors import PruningError
from edgeprune.latency_profile import HarnessProbe, build_table
from channel_models import batch, zoo

L = keras.layers


class MacsProbe:
    """A stand-in target whose latency is its MACs (in millions) plus a fixed cost. `whole` counts
    the measurements of whole models (named like the model pruned), not of layer units."""

    def __init__(self, name="zoo", drift=0.0, drift_after=3, growing=False):
        self.calls = 0
        self.whole = 0
        self.name, self.drift, self.drift_after, self.growing = name, drift, drift_after, growing

    def __call__(self, model):
        self.calls += 1
        ms = 0.05 + Counter(ChannelGraph(model)).count().macs / 1e6
        if model.name == self.name:
            self.whole += 1
            late = self.whole - self.drift_after
            if late > 0:  # the device got slower after the table was measured (and keeps slowing down)
                ms += self.drift * (late if self.growing else 1)
        return ms


def test_greedy_reaches_the_latency_target_from_the_table_and_measures_once():
    model = zoo()
    probe = MacsProbe()
    base = probe(model)
    probe.whole = 0
    cfg = ChannelConfig(latency_ms=0.6 * base, round_to=4)
    result = prune_channels(model, cfg, latency_probe=probe)
    # whole models measured: the full model twice and the calibration variant (table), one confirmation
    assert probe.whole == 3 + 1
    assert result.latency_ms_before == pytest.approx(base)
    assert result.latency_ms_after <= 0.6 * base
    assert result.latency_ms_after == pytest.approx(probe(result.model))
    steps = result.plan.notes["steps"]
    table = steps[0]
    assert table["kind"] == "latency_table" and table["table"]["full_ms"] == pytest.approx(base)
    assert table["table"]["scale"] == pytest.approx(1.0) and table["table"]["units"]
    prunes = [s for s in steps if s["kind"] == "prune"]
    confirms = [s for s in steps if s["kind"] == "confirm"]
    # the table is exact for a latency that is MACs: one confirmation, no correction
    assert len(confirms) == 1 and steps[-1] is confirms[0] and confirms[0]["met"]
    assert confirms[0]["measured_ms"] == result.latency_ms_after
    assert confirms[0]["predicted_ms"] == pytest.approx(result.latency_ms_after, rel=1e-6)
    assert abs(confirms[0]["prediction_error"]) < 1e-6
    assert all(a["predicted_ms"] > b["predicted_ms"] for a, b in zip(prunes, prunes[1:]))
    assert prunes[-1]["predicted_ms"] <= 0.6 * base < prunes[-2]["predicted_ms"]
    x = batch((16, 16, 3))
    np.testing.assert_allclose(apply_plan(model, result.plan)(x).numpy(), result.model(x).numpy(), atol=1e-6)
    # the expensive stem group goes first: its channels buy the most MACs
    assert "stem:out" in prunes[0]["groups"]


def test_a_missed_confirmation_corrects_the_fixed_cost_and_pruning_goes_on():
    model = zoo()
    base = MacsProbe()(model)
    probe = MacsProbe(drift=0.1 * base, drift_after=3)
    result = prune_channels(model, ChannelConfig(latency_ms=0.7 * base, round_to=4), latency_probe=probe)
    confirms = [s for s in result.steps if s["kind"] == "confirm"]
    table = result.steps[0]["table"]
    assert len(confirms) == 2 and not confirms[0]["met"] and confirms[1]["met"]
    assert confirms[0]["measured_ms"] == pytest.approx(confirms[0]["predicted_ms"] + 0.1 * base)
    assert confirms[0]["fixed_ms"] == pytest.approx(table["fixed_ms"] + 0.1 * base)
    assert confirms[0]["prediction_error"] < 0
    assert result.latency_ms_after <= 0.7 * base
    prunes_after = [s for s in result.steps if s["kind"] == "prune" and s["step"] > confirms[0]["step"]]
    assert prunes_after and confirms[1]["step"] == prunes_after[-1]["step"]


def test_an_unreachable_latency_target_is_refused_with_what_was_reached():
    probe = MacsProbe()
    with pytest.raises(PruningError, match="latency target .* not reached: predicted .* no further step"):
        prune_channels(zoo(), ChannelConfig(latency_ms=0.01, round_to=8, max_ratio=0.5), latency_probe=probe)
    # the table promised what the device does not give: every confirmation misses
    base = MacsProbe()(zoo())
    drifting = MacsProbe(drift=0.15 * base, growing=True)
    missed = "latency target .* not reached: measured .* 2 measurements missed it"
    with pytest.raises(PruningError, match=missed):
        prune_for_latency(zoo(), ChannelGraph(zoo()), ChannelConfig(latency_ms=0.9 * base, round_to=4),
                          probe=drifting, max_confirmations=2)


def test_a_given_table_is_used_without_measuring_it_again():
    model = zoo()
    graph = ChannelGraph(model)
    probe = MacsProbe()
    table = build_table(model, probe, round_to=4, graph=graph, check_ratio=None)
    probe.calls = probe.whole = 0
    base = table.full_ms
    cfg = ChannelConfig(latency_ms=0.8 * base, round_to=4)
    kept, before, after, steps = prune_for_latency(model, graph, cfg, probe=probe, table=table)
    assert (probe.calls, probe.whole) == (1, 1)  # the confirmation only
    assert before == base and after <= 0.8 * base
    with pytest.raises(PruningError, match="names channel group"):
        other = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 3, name="c"), L.Conv2D(4, 1, name="d")])
        prune_for_latency(other, ChannelGraph(other), ChannelConfig(latency_ms=0.1), probe=probe, table=table)


@pytest.mark.slow
def test_harness_probe_measures_an_exported_model_and_knows_its_context():
    inp = keras.Input((32, 32, 3))
    x = L.Conv2D(32, 3, padding="same", activation="relu")(inp)
    out = L.Dense(4)(L.GlobalAveragePooling2D()(x))
    probe = HarnessProbe(mode="float32", threads=1, runs=20, block_runs=5)
    ms = probe(keras.Model(inp, out))
    assert 0 < ms < 1000 and probe.conversions == 1 and probe.benches == 1
    ctx = probe.context
    assert ctx["threads"] == 1 and ctx["mode"] == "float32" and ctx["runner"] == "python"
    assert ctx["runner_detail"]["runtime_version"] and ctx["device"]["abi"]

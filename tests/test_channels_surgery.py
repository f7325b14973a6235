"""Surgery is right: mask equivalence, nothing removed is exact, dead filters, group consistency,
plans that replay, criteria and budgets."""

import json

import numpy as np
import pytest

from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, ChannelGraph, PruningPlan, apply_plan, prune_channels
from channel_models import masked_copy
from edgeprune.channels.surgery import rebuild
from edgeprune.errors import PruningError, SchemaError
from channel_models import batch, chain, nested, zoo


def _layer(model, name):
    return {layer.name: layer for layer in model.layers}[name]


@pytest.fixture(scope="module")
def zoo_model():
    return zoo()


def test_zoo_groups_follow_the_coupling_rules(zoo_model):
    g = ChannelGraph(zoo_model)
    keys = {grp.key: grp for grp in g.groups}
    # stem, residual conv, BN, depthwise, SE expand and the multiplies are one group
    stem = keys["stem:out"]
    for port in ("res_conv:out", "dw:io", "se_expand:out", "se_reduce:in", "branch_a:in", "branch_b:in",
                 "stem_bn:io", "res_bn:io", "dw_bn:io"):
        assert port in stem.ports
    assert {"se_reduce:out", "branch_a:out", "branch_b:out", "conv2:out", "se2_reduce:out", "fc:out"} \
        <= set(keys)
    assert "se2_expand:out" in keys["conv2:out"].ports  # SE with Reshape joins the tensor it scales
    assert "logits:out" not in keys  # model outputs are never pruned
    assert "stem:in" not in stem.ports  # nor model inputs
    concat = g.port_root("concat_bn", "io")
    assert concat in g.definition  # concat channels are laid out from both branches


def test_mask_equivalence_on_every_rule(zoo_model):
    cfg = ChannelConfig(ratio=0.5, round_to=1, criterion="l1")
    result = prune_channels(zoo_model, cfg)
    g = ChannelGraph(zoo_model)
    masked = masked_copy(g, result.plan.kept_for(g))
    x = batch((16, 16, 3))
    np.testing.assert_allclose(result.model(x).numpy(), masked(x).numpy(), atol=1e-5, rtol=1e-5)
    assert result.model.count_params() < zoo_model.count_params()
    # the Reshape target and the Flatten -> Dense rows follow the new channel counts
    conv2 = _layer(result.model, "conv2").filters
    assert _layer(result.model, "se2_reshape").target_shape[-1] == conv2
    assert _layer(result.model, "fc").kernel.shape[0] == 5 * 5 * conv2


def test_removing_nothing_reproduces_outputs_exactly(zoo_model):
    result = prune_channels(zoo_model, ChannelConfig(ratio=0.0))
    x = batch((16, 16, 3))
    np.testing.assert_array_equal(result.model(x).numpy(), zoo_model(x).numpy())
    assert result.params_after == result.params_before == zoo_model.count_params()
    assert all(row["before"] == row["after"] for row in result.layers)


def test_planted_dead_filters_are_removed_and_change_nothing():
    model = chain()
    dead = np.array([1, 4, 6, 9, 10, 12, 13, 15])
    c1, bn1 = _layer(model, "c1"), _layer(model, "bn1")
    k, b = c1.get_weights()
    k[..., dead] = 0
    b[dead] = 0
    c1.set_weights([k, b])
    gamma, beta, mean, var = bn1.get_weights()
    gamma[dead], beta[dead], mean[dead] = 0, 0, 0
    bn1.set_weights([gamma, beta, mean, var])
    x = batch((8, 8, 3))
    for criterion in ("bn_gamma", "l1"):
        result = prune_channels(model, ChannelConfig(ratio=0.5, criterion=criterion, round_to=8, protect=["^c2$"]))
        kept = {grp.key: grp.kept for grp in result.plan.groups}["c1:out"]
        assert set(kept).isdisjoint(dead)
        np.testing.assert_allclose(result.model(x).numpy(), model(x).numpy(), atol=1e-6)


def test_every_member_of_a_group_loses_the_same_indices(zoo_model):
    result = prune_channels(zoo_model, ChannelConfig(ratio=0.5, round_to=1))
    kept = {grp.key: np.array(grp.kept) for grp in result.plan.groups}["stem:out"]
    old, new = {l.name: l for l in zoo_model.layers}, {l.name: l for l in result.model.layers}
    np.testing.assert_array_equal(new["stem"].kernel.numpy(), old["stem"].kernel.numpy()[..., kept])
    np.testing.assert_array_equal(new["res_conv"].kernel.numpy()[..., :, :].shape[-1], len(kept))
    np.testing.assert_array_equal(new["dw"].depthwise_kernel.numpy(), old["dw"].depthwise_kernel.numpy()[:, :, kept])
    for bn in ("stem_bn", "res_bn", "dw_bn"):
        for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
            np.testing.assert_array_equal(getattr(new[bn], attr).numpy(), getattr(old[bn], attr).numpy()[kept])
    np.testing.assert_array_equal(new["se_expand"].bias.numpy(), old["se_expand"].bias.numpy()[kept])
    # consumers lose the same input rows
    np.testing.assert_array_equal(new["branch_a"].kernel.numpy(),
                                  old["branch_a"].kernel.numpy()[:, :, kept][..., _kept(result, "branch_a:out")])
    np.testing.assert_array_equal(new["branch_b"].depthwise_kernel.numpy(),
                                  old["branch_b"].depthwise_kernel.numpy()[:, :, kept])


def _kept(result, key):
    return np.array({grp.key: grp.kept for grp in result.plan.groups}[key])


def test_counts_match_the_formula():
    model = chain()
    result = prune_channels(model, ChannelConfig(ratio=0.5, round_to=8))
    c1, c2 = 8, 16  # 16 -> 8 and 32 -> 16

    def params(a, b):
        return (3 * 3 * 3 * a + a) + 4 * a + (3 * 3 * a * b + b) + 4 * b + (b * 4 + 4)

    def macs(a, b):
        return 8 * 8 * 9 * 3 * a + 4 * 4 * 9 * a * b + b * 4

    assert result.params_before == params(16, 32) == model.count_params()
    assert result.params_after == params(c1, c2) == result.model.count_params()
    assert result.macs_before == macs(16, 32)
    assert result.macs_after == macs(c1, c2)
    assert [(r["layer"], r["before"], r["after"]) for r in result.layers] == \
        [("c1", 16, c1), ("c2", 32, c2), ("fc", 4, 4)]


def test_nested_and_sequential_models_are_inlined():
    model = nested()
    result = prune_channels(model, ChannelConfig(ratio=0.5, round_to=8))
    names = [layer.name for layer in result.model.layers]
    assert "head_conv" in names and "conv" in names  # the clashing name of the nested Sequential is prefixed
    g = ChannelGraph(model)
    x = batch((16, 16, 3))
    np.testing.assert_allclose(result.model(x).numpy(), masked_copy(g, result.plan.kept_for(g))(x).numpy(),
                               atol=1e-5)
    assert _layer(result.model, "conv_b").filters == 16
    assert _layer(result.model, "head_conv").filters == 8


def test_plan_json_round_trip_and_apply_plan(zoo_model, tmp_path):
    result = prune_channels(zoo_model, ChannelConfig(ratio=0.4, round_to=1, allocation="global"))
    path = tmp_path / "plan.json"
    result.plan.save(path)
    data = json.loads(path.read_text())
    assert data["schema"] == "edgeprune.channel_plan" and data["version"] == 1
    loaded = PruningPlan.load(path)
    assert loaded == result.plan
    again = apply_plan(zoo_model, loaded)
    x = batch((16, 16, 3))
    np.testing.assert_array_equal(again(x).numpy(), result.model(x).numpy())
    with pytest.raises(Exception, match="exists"):
        result.plan.save(path)
    data["version"] = 99
    with pytest.raises(SchemaError, match="version 99"):
        PruningPlan.from_dict(data)
    with pytest.raises(PruningError, match="does not fit"):
        apply_plan(chain(), loaded)


def test_protect_keeps_a_layer_whole(zoo_model):
    result = prune_channels(zoo_model, ChannelConfig(ratio=0.5, round_to=1, protect=["^conv2$", "branch_"]))
    assert _layer(result.model, "conv2").filters == 24
    assert _layer(result.model, "branch_a").filters == 16
    assert _layer(result.model, "branch_a").kernel.shape[2] < 16  # its input channels may still go
    assert _layer(result.model, "concat_bn").gamma.shape[0] == 32
    assert _layer(result.model, "se2_reduce").filters < 8


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_gamma", "taylor"])
def test_criteria_prefer_the_stronger_channels(criterion):
    """Half of c1's channels are made weak by every measure (their filters, BN scale and shift, and
    the rows of c2 that read them shrunk 100x): every criterion keeps exactly the other half."""
    model = chain()
    strong = np.array([0, 2, 3, 7, 8, 11, 12, 14])
    weak = np.setdiff1d(np.arange(16), strong)
    c1, bn1, c2 = _layer(model, "c1"), _layer(model, "bn1"), _layer(model, "c2")
    k, b = c1.get_weights()
    k[..., weak] *= 0.01
    b[weak] *= 0.01
    c1.set_weights([k, b])
    gamma, beta, mean, var = bn1.get_weights()
    gamma[weak] *= 0.01
    beta[weak] *= 0.01
    mean[weak] *= 0.01
    bn1.set_weights([gamma, beta, mean, var])
    k2, b2 = c2.get_weights()
    k2[:, :, weak, :] *= 0.01
    c2.set_weights([k2, b2])
    rng = np.random.default_rng(3)
    x = batch((8, 8, 3), n=32)
    y = rng.integers(0, 4, size=32)
    result = prune_channels(model, ChannelConfig(ratio=0.5, round_to=1, criterion=criterion),
                            data=(x, y) if criterion == "taylor" else None, recalibrate_bn=False)
    assert _layer(result.model, "c1").filters == 8
    assert sorted(_kept(result, "c1:out")) == strong.tolist()
    g = ChannelGraph(model)
    np.testing.assert_allclose(result.model(x).numpy(), masked_copy(g, result.plan.kept_for(g))(x).numpy(),
                               atol=1e-5)


def test_taylor_without_data_is_refused():
    with pytest.raises(Exception, match="taylor criterion needs data"):
        prune_channels(chain(), ChannelConfig(criterion="taylor"))


def test_rounding_max_ratio_and_global_allocation(zoo_model):
    result = prune_channels(zoo_model, ChannelConfig(ratio=0.6, round_to=8, allocation="global", max_ratio=0.5))
    for grp in result.plan.groups:
        k = len(grp.kept)
        assert k == grp.size or k % 8 == 0
        assert k >= 1 and k >= grp.size * 0.5


def test_macs_and_params_targets_are_met(zoo_model):
    for key in ("macs_target", "params_target"):
        result = prune_channels(zoo_model, ChannelConfig(round_to=1, **{key: 0.5}))
        before, after = (result.macs_before, result.macs_after) if key == "macs_target" else \
            (result.params_before, result.params_after)
        assert after <= 0.5 * before
        assert after > 0.3 * before  # the search stops near the target, not at the maximum
    with pytest.raises(PruningError, match="cannot be met"):
        prune_channels(zoo_model, ChannelConfig(macs_target=0.01, max_ratio=0.5))


def test_iterative_steps_compose_into_one_plan(zoo_model):
    tuned = []

    def fine_tune(model, epochs):
        tuned.append(model.count_params())
        return model

    result = prune_channels(zoo_model, ChannelConfig(ratio=0.5, round_to=1, iterative_steps=3), fine_tune=fine_tune)
    assert len(tuned) == 3 and tuned[0] > tuned[1] > tuned[2] == result.model.count_params()
    x = batch((16, 16, 3))
    np.testing.assert_allclose(apply_plan(zoo_model, result.plan)(x).numpy(), result.model(x).numpy(), atol=1e-5)
    assert [s["step"] for s in result.steps] == [1, 2, 3]


def test_rebuild_keeps_names_and_structure(zoo_model):
    g = ChannelGraph(zoo_model)
    copy = rebuild(g, {})
    assert [l.name for l in copy.layers] == [l.name for l in zoo_model.layers]
    assert isinstance(copy, keras.Model)


def test_iterative_steps_respect_max_ratio_of_the_original_width():
    result = prune_channels(chain(), ChannelConfig(ratio=0.8, round_to=1, max_ratio=0.5, allocation="global",
                                                   iterative_steps=3))
    for grp in result.plan.groups:
        assert len(grp.kept) >= grp.size * 0.5

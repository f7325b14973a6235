"""Pruned models export to TFLite with the new channel counts and compute what Keras computes; a
sweep over keras.applications architectures prunes 30 %, then exports every one through the product
path (edgeprune.export.convert, then verify)."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edgeprune._tf import keras
from edgeprune.channels import ChannelConfig, ChannelGraph, prune_channels
from edgeprune.channels.recovery import reestimate_bn
from channel_models import masked_copy
from edgeprune.errors import PruningError
from channel_models import batch, zoo

pytestmark = pytest.mark.slow


def _run_tflite(content: bytes, x: np.ndarray):
    it = Interpreter(model_content=content)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        outs.append(it.get_tensor(out["index"]).copy())
    shapes: dict[str, set] = {}  # every ';'-separated name part of a tensor -> its shapes
    for d in it.get_tensor_details():
        for part in d["name"].split(";"):
            shapes.setdefault(part, set()).add(tuple(int(s) for s in d["shape"]))
    return np.concatenate(outs), shapes


def _weight_shapes(shapes, model_name, layer, op=None):
    """Shapes of the tensors the converter named after `layer` (weights fused with BN keep the name)."""
    prefix = f"{model_name}/{layer}/"
    found = set().union(*[v for k, v in shapes.items() if k.startswith(prefix)] or [set()])
    assert found, f"no TFLite tensor named {prefix}*"
    return found


def _check_tflite_shapes(model, shapes):
    """Every Conv2D / Dense weight in the flatbuffer has the pruned model's channel counts."""
    checked = 0
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            assert (cout, kh, kw, cin) in _weight_shapes(shapes, model.name, layer.name, "Conv2D"), layer.name
            checked += 1
        elif type(layer).__name__ == "Dense":
            cin, cout = layer.kernel.shape
            assert (cout, cin) in _weight_shapes(shapes, model.name, layer.name, "MatMul"), layer.name
            checked += 1
    return checked


def test_pruned_zoo_exports_with_new_channel_counts_and_matches_keras():
    from edgeprune.export import convert

    model = zoo()
    result = prune_channels(model, ChannelConfig(ratio=0.5, round_to=1))
    content = convert(result.model, mode="float32")
    x = batch((16, 16, 3), n=3)
    got, shapes = _run_tflite(content, x)
    np.testing.assert_allclose(got, result.model(x).numpy(), atol=1e-4, rtol=1e-4)
    assert _check_tflite_shapes(result.model, shapes) >= 8
    assert (8, 3, 3, 3) in _weight_shapes(shapes, "zoo", "stem", "Conv2D")  # 16 -> 8 filters


A = keras.applications
ARCHITECTURES = {
    "MobileNet": lambda: A.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=4,
                                     classifier_activation=None),
    "MobileNetV2": lambda: A.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4,
                                         classifier_activation=None),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=4,
                                                   classifier_activation=None),
    "MobileNetV3Large": lambda: A.MobileNetV3Large(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=4,
                                                   classifier_activation=None),
    "ResNet50": lambda: A.ResNet50(input_shape=(32, 32, 3), weights=None, classes=4, classifier_activation=None),
    "EfficientNetB0": lambda: A.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=4,
                                               classifier_activation=None),
}
# Architectures the graph cannot prune yet, with the layer that blocks them (none today).
BLOCKED: dict[str, str] = {}


_pruned: dict = {}


def _pruned_architecture(arch):
    if arch not in _pruned:
        model = ARCHITECTURES[arch]()
        x = np.random.default_rng(0).uniform(0, 255, size=(16, 32, 32, 3)).astype("float32")
        reestimate_bn(model, x, batch_size=8)  # realistic BN statistics so no channel is trivially zero
        if arch in BLOCKED:
            with pytest.raises(PruningError, match=BLOCKED[arch]):
                prune_channels(model, ChannelConfig(ratio=0.3))
            pytest.skip(f"{arch} is blocked by {BLOCKED[arch]}")
        _pruned[arch] = (model, prune_channels(model, ChannelConfig(ratio=0.3, round_to=8)), x[:2])
    return _pruned[arch]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_applications_sweep_prunes_30_percent_and_verifies(arch):
    model, result, xs = _pruned_architecture(arch)
    assert result.params_after < 0.85 * result.params_before
    assert result.macs_after < 0.85 * result.macs_before
    assert result.model.count_params() == result.params_after
    g = ChannelGraph(model)
    want = masked_copy(g, result.plan.kept_for(g))(xs).numpy()
    have = result.model(xs).numpy()
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(have, want, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_applications_sweep_exports_and_verifies(arch):
    from edgeprune.export import FLOAT32_ATOL, convert, verify

    model, result, xs = _pruned_architecture(arch)
    content = convert(result.model, "float32")
    v = verify(content, xs, np.zeros(len(xs), np.int64), keras_model=result.model, float32=True)
    assert v.ok and v.runs_in_default_interpreter, v.failures
    bound = FLOAT32_ATOL * max(1.0, float(np.abs(result.model(xs).numpy()).max()))
    assert v.samples == len(xs) and v.max_abs_diff_vs_keras <= v.tolerance == pytest.approx(bound)
    _, shapes = _run_tflite(content, xs)
    assert _check_tflite_shapes(result.model, shapes) > 10

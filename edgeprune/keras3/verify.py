"""Proof: a translation's outputs equal the original's on random inputs, or the first layer where
they diverge is named."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.errors import ModelError
from edgeprune.keras3 import libs
from edgeprune.keras3.build import Built
from edgeprune.keras3.plan import Entry, ModelPlan, Ref, map_refs, refs_in
from edgeprune.keras3.reference import k3_op_class
from edgeprune.keras3.rules import short


DEFAULT_ATOL = 1e-4
DEFAULT_CHECK_BATCH = 8
_SEED = 20240611


def random_inputs(shapes_dtypes: list[tuple[tuple, str]], batch: int, fill: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(_SEED)
    arrays = []
    for shape, dtype in shapes_dtypes:
        first = batch if shape[0] is None else int(shape[0])  # a fixed batch size is kept
        dims = [first] + [fill if d is None else int(d) for d in shape[1:]]
        if "int" in dtype:
            arrays.append(rng.integers(0, 2, size=dims).astype(dtype))
        elif dtype == "bool":
            arrays.append(rng.integers(0, 2, size=dims).astype(bool))
        else:
            arrays.append(rng.standard_normal(dims).astype(dtype))
    return arrays


def _flat_numpy(value) -> list[np.ndarray]:
    tf = libs.tf()
    return [np.asarray(v) for v in tf.nest.flatten(value)]


def _peak(value) -> float:
    return max((float(np.max(np.abs(v))) for v in _flat_numpy(value) if v.size), default=0.0)


def tolerance_for(atol: float, reference) -> float:
    """fp32 rounding grows with the size of the numbers: the allowed difference is atol for
    values up to 1 and atol relative to the largest reference value above that."""
    return float(atol) * max(1.0, _peak(reference))


def max_abs_diff(a, b) -> float:
    fa, fb = _flat_numpy(a), _flat_numpy(b)
    if len(fa) != len(fb):
        return float("inf")
    worst = 0.0
    for x, y in zip(fa, fb):
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst


def _input_spread(plan: ModelPlan, input_name: str) -> float:
    """An input that goes straight into a Rescaling layer or preprocess_input's `x / 127.5`
    (image models: 0..255 -> -1..1) gets random values spread by 1/scale, so the check exercises
    the range the model expects."""
    for e in plan.entries:
        if not e.nodes or not any(r.layer == input_name for r in refs_in(e.nodes[0])):
            continue
        scale = None
        if e.class_name == "Rescaling":
            scale = (e.tfk_config or {}).get("scale")
        elif e.class_name in ("TrueDivide", "Divide") and len(e.nodes[0][0]) == 2:
            divisor = e.nodes[0][0][1]
            scale = 1.0 / divisor if isinstance(divisor, (int, float)) and divisor != 0 else None
        elif e.class_name == "Multiply" and e.kind == "op" and len(e.nodes[0][0]) == 2:
            scale = next((a for a in e.nodes[0][0] if isinstance(a, (int, float))), None)
        if isinstance(scale, (int, float)) and 0 < abs(scale) < 1:
            return 1.0 / abs(float(scale))
    return 1.0


def inputs_for(plan: ModelPlan, batch: int) -> tuple[Any, dict]:
    """Random arrays for a plan's inputs, as the structure the model is called with, and by name."""
    by_entry = {e.name: e for e in plan.entries if e.kind == "input"}
    refs = refs_in(plan.inputs)
    arrays = random_inputs([(by_entry[r.layer].batch_shape, by_entry[r.layer].dtype) for r in refs], batch)
    arrays = [a * _input_spread(plan, r.layer) if a.dtype.kind == "f" else a for r, a in zip(refs, arrays)]
    by_name = {r.layer: a for r, a in zip(refs, arrays)}
    structure = map_refs(plan.inputs, lambda r: by_name[r.layer])
    return structure, by_name


def call_k3(model, x):
    return model(x, training=False)


def _k3_replay(plan: ModelPlan, k3_model, inputs_by_name: dict) -> dict:
    """Run the Keras 3 model call by call, eagerly: (layer name, node) -> output values."""
    keras = libs.keras3()
    values = {(name, 0): keras.ops.convert_to_tensor(v) for name, v in inputs_by_name.items()}
    ops = {}

    def lookup(ref: Ref):
        out = values[(ref.layer, ref.node)]
        return out[ref.tensor] if isinstance(out, (list, tuple)) else out

    pending = [(e, i) for e in plan.entries if e.kind != "input" for i in range(len(e.nodes))]
    while pending:
        remaining = []
        for e, i in pending:
            args, kwargs = e.nodes[i]
            if any((r.layer, r.node) not in values for r in refs_in((args, kwargs))):
                remaining.append((e, i))
                continue
            args = map_refs(args, lookup)
            kwargs = {k: v for k, v in map_refs(kwargs, lookup).items() if v is not None}
            if e.kind == "op":
                if e.name not in ops:
                    ops[e.name] = k3_op_class(e.class_name, e.op_module)(**e.op_config)
                values[(e.name, i)] = ops[e.name](*args, **kwargs)
            else:
                values[(e.name, i)] = k3_model.get_layer(e.name)(*args, **kwargs)
        if len(remaining) == len(pending):
            break
        pending = remaining
    return values


def _tfk_values(built: Built, x) -> dict:
    keras = libs.tfk()
    keys = [k for k in built.tensors if k[0] in {e.name for e in built.plan.entries if e.kind != "input"}]
    probe = keras.Model(built.model.inputs, [built.tensors[k] for k in keys])
    outs = probe(x, training=False)
    if len(keys) == 1:
        outs = [outs]
    return dict(zip(keys, outs))


def _first_divergence(built: Built, k3_model, inputs_by_name: dict, x, atol: float, prefix="") -> str | None:
    """Name (path) of the first call, in graph order, whose outputs differ by more than atol."""
    plan = built.plan
    k3_vals = _k3_replay(plan, k3_model, inputs_by_name)
    tfk_vals = _tfk_values(built, x)
    for e in plan.entries:
        if e.kind == "input":
            continue
        for i in range(len(e.nodes)):
            key = (e.name, i)
            if key not in k3_vals or key not in tfk_vals:
                continue
            if max_abs_diff(k3_vals[key], tfk_vals[key]) > tolerance_for(atol, k3_vals[key]):
                label = f"{prefix}{e.name} ({e.class_name})"
                if e.kind == "model" and i == 0:
                    sub_inputs = _node_inputs(e, k3_vals)
                    if sub_inputs is not None:
                        child = built.children[e.name]
                        sub_by_name = dict(zip([r.layer for r in refs_in(e.sub.inputs)], sub_inputs))
                        sub_x = map_refs(e.sub.inputs, lambda r: np.asarray(sub_by_name[r.layer]))
                        inner = _first_divergence(child, k3_model.get_layer(e.name), sub_by_name, sub_x, atol,
                                                  prefix + e.name + "/")
                        if inner is not None:
                            return inner
                return label
    return None


def _node_inputs(e: Entry, values: dict):
    args, _ = e.nodes[0]
    flat = []
    for r in refs_in(args):
        out = values.get((r.layer, r.node))
        if out is None:
            return None
        flat.append(out[r.tensor] if isinstance(out, (list, tuple)) else out)
    return [np.asarray(v) for v in flat]


def verify_translation(built: Built, k3_model, batch: int, atol: float, label: str) -> tuple[float, float, float]:
    """(max abs difference, bound applied, output scale), or ModelError naming the first
    diverging layer."""
    x, by_name = inputs_for(built.plan, batch)
    expected = call_k3(k3_model, x)
    got = built.model(x, training=False)
    diff = max_abs_diff(expected, got)
    bound = tolerance_for(atol, expected)
    if not diff <= bound:
        try:
            where = _first_divergence(built, k3_model, by_name, x, atol)
            place = f"outputs first diverge at layer {where}" if where else "no single layer diverges (wiring differs)"
        except (ValueError, TypeError, KeyError) as e:
            place = f"the diverging layer could not be located: {short(e, 160)}"
        raise ModelError(
            f"the tf_keras translation of {label} differs from the Keras 3 model by {diff:.3g} on random inputs "
            f"(tolerance {bound:.3g}); {place}",
            hint="this layer's translation is wrong; report it, or rebuild the model in tf_keras",
        )
    return diff, bound, _peak(expected)


def check_args(check_batch, atol):
    if not isinstance(check_batch, int) or isinstance(check_batch, bool) or check_batch < 1:
        raise ModelError(f"check_batch must be a positive integer, got {check_batch!r}", hint="use e.g. 8")
    if not isinstance(atol, (int, float)) or not atol > 0:
        raise ModelError(f"atol must be a positive number, got {atol!r}", hint=f"use e.g. {DEFAULT_ATOL:g}")

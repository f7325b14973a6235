"""Block removal: the coarse level of structured pruning. A residual block y = x + F(x) whose skip is
an identity (same shape in and out, no projection) can be dropped, y = x, which removes every op of
F (expand conv, depthwise, project conv, BN, activations) and the Add. At small inputs, where the
cost of an op is mostly overhead, removing ops is what buys large speed-ups.

    blocks = find_blocks(model)                     # removable blocks, in graph order
    scores = score_blocks(model, blocks, x)         # how much removing each alone changes the outputs
    smaller = remove_blocks(model, ["block_2", "block_5"])
    at_224 = with_input_shape(smaller, (224, 224, 3))

The same trace replay also re-instantiates a (pruned) model at another input size: convolutions do
not depend on it, so the network and its weights stay the same and only the spatial sizes change."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from edgeprune._tf import keras, tf
from edgeprune.channels.trace import Op, Slot, Trace, trace_model
from edgeprune.errors import InputFileError, InternalError, ModelError, PruningError, RecipeError, SchemaError

BLOCK_PLAN_SCHEMA = "edgeprune.block_plan"
BLOCK_PLAN_VERSION = 1
SCORES = ("output_kl", "output_l2")
_ADD_KINDS = ("Add",)


@dataclasses.dataclass(frozen=True)
class Block:
    name: str  # the Add's name without "_add" (block_2, conv2_block2, block2b)
    add: str  # the Add layer
    skip: str  # tensor key of the block input (the identity branch)
    out: str  # tensor key of the Add's output
    ops: tuple[str, ...]  # layers of the residual branch F, in graph order
    params: int

    def to_dict(self) -> dict:
        return {"name": self.name, "add": self.add, "layers": list(self.ops), "params": self.params}


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Which blocks to remove.

    count      remove this many blocks, the ones whose removal changes the outputs least
    names      remove exactly these blocks (instead of `count`)
    score      "output_kl" (KL divergence of the predictions) | "output_l2" (relative change of the outputs)
    protect    regexes (re.search) of block names never removed
    iterative_steps  remove the blocks over this many steps, re-scoring (and fine-tuning) after each
    """

    count: int | None = None
    names: tuple[str, ...] = ()
    score: str = "output_kl"
    protect: tuple[str, ...] = ()
    iterative_steps: int = 1

    def __post_init__(self):
        import re

        for attr in ("names", "protect"):
            value = getattr(self, attr)
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise RecipeError(f"blocks {attr} = {value!r} must be a list of strings", f'e.g. {attr} = ["block_2"]')
            object.__setattr__(self, attr, tuple(value))
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)
                                       or self.count < 1):
            raise RecipeError(f"blocks count {self.count!r} is not a positive integer", "e.g. count = 4")
        if (self.count is None) == (not self.names):
            raise RecipeError("blocks needs exactly one of count or names",
                              'e.g. blocks = { count = 4 } or blocks = { names = ["block_2"] }')
        if self.score not in SCORES:
            raise RecipeError(f"unknown block score {self.score!r}", f"use one of: {', '.join(SCORES)}")
        for pattern in self.protect:
            try:
                re.compile(pattern)
            except re.error as e:
                raise RecipeError(f"blocks protect pattern {pattern!r} is not a valid regex ({e})",
                                  "escape special characters") from None
        if isinstance(self.iterative_steps, bool) or not isinstance(self.iterative_steps, int) \
                or self.iterative_steps < 1:
            raise RecipeError(f"blocks iterative_steps {self.iterative_steps!r} is not a positive integer", "e.g. 2")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["names"], d["protect"] = list(self.names), list(self.protect)
        return d


# ---------------------------------------------------------------- finding blocks

def _block_name(add: str) -> str:
    return add[:-4] if add.endswith("_add") else add


def _analyse(trace: Trace) -> tuple[list[Block], dict[str, str]]:
    """Removable blocks, and for every other Add the reason it is not one."""
    producer = {k: i for i, op in enumerate(trace.ops) for k in op.outputs}
    consumers: dict[str, set[int]] = {}
    for i, op in enumerate(trace.ops):
        for k in op.inputs:
            consumers.setdefault(k, set()).add(i)
    ancestors: dict[str, frozenset[str]] = {k: frozenset() for k in trace.inputs}
    for op in trace.ops:  # ops are in graph order
        above = frozenset().union(*(ancestors.get(k, frozenset()) | {k} for k in op.inputs)) if op.inputs \
            else frozenset()
        for k in op.outputs:
            ancestors[k] = above
    blocks, refused = [], {}
    for op in trace.ops:
        if op.kind not in _ADD_KINDS:
            continue
        name = _block_name(op.name)
        if len(op.inputs) != 2:
            refused[name] = f"its Add {op.name!r} joins {len(op.inputs)} tensors, not a skip and a branch"
            continue
        a, b = op.inputs
        if a in ancestors[b]:
            skip, branch = a, b
        elif b in ancestors[a]:
            skip, branch = b, a
        else:
            refused[name] = f"its Add {op.name!r} has no identity skip (both inputs are computed: a projection)"
            continue
        shapes = {trace.shapes[skip], trace.shapes[branch], trace.shapes[op.outputs[0]]}
        if len(shapes) != 1:
            refused[name] = f"its Add {op.name!r} changes the shape ({', '.join(map(str, sorted(shapes, key=str)))})"
            continue
        inside = [i for i, o in enumerate(trace.ops)
                  if any(k == branch or k in ancestors[branch] for k in o.outputs)
                  and all(skip in ancestors[k] for k in o.outputs)]
        in_keys = {k for i in inside for k in trace.ops[i].outputs}
        own = set(inside) | {producer[op.outputs[0]]}
        leak = next((trace.ops[i].name for i in inside for k in trace.ops[i].outputs
                     if consumers.get(k, set()) - own or k in trace.outputs), None)
        if leak is not None:
            refused[name] = f"layer {leak!r} of its branch is also used outside the block"
            continue
        if not in_keys:
            refused[name] = f"its Add {op.name!r} has an empty branch"
            continue
        params = sum(int(w.shape.num_elements()) for i in inside for w in trace.ops[i].layer.weights)
        blocks.append(Block(name, op.name, skip, op.outputs[0], tuple(trace.ops[i].name for i in inside), params))
    return blocks, refused


def find_blocks(model) -> list[Block]:
    """Every residual block of `model` whose input joins its output through an identity Add."""
    return _analyse(trace_model(model))[0]


def _select(model, names, protect=()) -> tuple[Trace, list[Block]]:
    import re

    trace = trace_model(model)
    blocks, refused = _analyse(trace)
    by_name = {b.name: b for b in blocks}
    bad = []
    for n in names:
        if n in by_name:
            if any(re.search(p, n) for p in protect):
                bad.append(f"{n} is protected")
            continue
        if n in refused:
            bad.append(f"{n}: {refused[n]}")
        else:
            bad.append(f"{n}: no residual Add of that name joins the block's input to its output")
    if bad:
        removable = ", ".join(b.name for b in blocks) or "none"
        raise PruningError(f"cannot remove {len(bad)} block(s) of {model.name!r}: {'; '.join(bad)}",
                           f"removable blocks: {removable}")
    return trace, [by_name[n] for n in names]


# ---------------------------------------------------------------- surgery

def replay(trace: Trace, drop: set[str] = frozenset(), alias: dict[str, str] | None = None,
           input_shape: tuple | None = None, name: str | None = None) -> "keras.Model":
    """Rebuild a traced model from its layers' configs and weights, leaving out the ops in `drop`,
    reading tensor `alias[k]` wherever tensor k was read, at `input_shape` (H, W, C) if given."""
    alias = dict(alias or {})

    def resolve(key: str) -> str:
        seen = set()
        while key in alias:
            if key in seen:
                raise InternalError(f"tensor alias loop at {key}", "report this model to edgeprune")
            seen.add(key)
            key = alias[key]
        return key

    tensors, inputs = {}, []
    for key, in_name in zip(trace.inputs, trace.input_names):
        shape = trace.shapes[key]
        if input_shape is not None:
            if len(trace.inputs) != 1:
                raise ModelError("only a single-input model can be re-instantiated at another input shape",
                                 "give a model with one input")
            if len(input_shape) != len(shape) - 1:
                raise ModelError(f"input shape {tuple(input_shape)} has {len(input_shape)} dimensions; the model's "
                                 f"input {tuple(shape[1:])} has {len(shape) - 1}", "give H,W,C for an image model")
            shape = (shape[0], *[int(v) for v in input_shape])
        t = keras.Input(shape=shape[1:], batch_size=shape[0], dtype=trace.dtypes[key], name=in_name)
        tensors[key] = t
        inputs.append(t)
    layers: dict[str, tuple[Op, object]] = {}
    for op in trace.ops:
        if op.name in drop:
            continue
        if op.name not in layers:
            config = op.layer.get_config()
            config["name"] = op.name
            config.pop("batch_input_shape", None)
            layers[op.name] = (op, type(op.layer).from_config(config))
        layer = layers[op.name][1]

        def fill(x):
            return tensors[resolve(x.key)] if isinstance(x, Slot) else x

        try:
            out = layer(*tf.nest.map_structure(fill, op.call_args), **tf.nest.map_structure(fill, op.call_kwargs))
        except (ValueError, TypeError) as e:
            raise ModelError(f"layer {op.name!r} cannot be rebuilt here: {' '.join(str(e).split())[:200]}",
                             "its configuration depends on the input shape or on a removed layer") from None
        for key, t in zip(op.outputs, tf.nest.flatten(out)):
            tensors[key] = t
    outputs = [tensors[resolve(k)] for k in trace.outputs]
    model = keras.Model(inputs[0] if trace.single_input else inputs,
                        outputs[0] if trace.single_output else outputs, name=name or trace.name)
    for op, layer in layers.values():
        try:
            layer.set_weights(op.layer.get_weights())
        except ValueError as e:
            raise ModelError(f"the weights of layer {op.name!r} depend on the input size ({' '.join(str(e).split())[:160]})",
                             "only models whose weights do not depend on the input size (global pooling, not "
                             "Flatten then Dense) can run at another input shape") from None
    return model


def remove_blocks(model, names, protect=()) -> "keras.Model":
    """A new model without the named blocks: each Add's output is replaced by the block's input."""
    names = list(dict.fromkeys(names))
    trace, blocks = _select(model, names, protect)
    drop = {n for b in blocks for n in b.ops} | {b.add for b in blocks}
    return replay(trace, drop, {b.out: b.skip for b in blocks})


def with_input_shape(model, input_shape) -> "keras.Model":
    """The same network and weights at another input size (H, W, C)."""
    return replay(trace_model(model), input_shape=tuple(int(v) for v in input_shape))


# ---------------------------------------------------------------- scoring

def _predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    f = tf.function(lambda b: model(b, training=False), reduce_retracing=True)
    return np.concatenate([np.asarray(f(tf.constant(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)])


def _probabilities(out: np.ndarray) -> np.ndarray:
    if np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        return out
    z = out - out.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def output_change(reference: np.ndarray, other: np.ndarray, score: str = "output_kl") -> float:
    if score == "output_l2":
        return float(np.sum((reference - other) ** 2) / max(float(np.sum(reference ** 2)), 1e-12))
    p, q = _probabilities(reference), _probabilities(other)
    return float(np.mean(np.sum(p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12))), axis=-1)))


def score_blocks(model, blocks: list[Block], x, score: str = "output_kl") -> dict[str, float]:
    """How much removing each block alone changes the model's outputs on `x` (lower: safer to remove)."""
    from edgeprune.progress import task

    x = np.asarray(x)
    reference = _predict(model, x)
    trace = trace_model(model)
    scores = {}
    with task("scoring blocks", total=len(blocks)) as progress:
        for b in blocks:
            smaller = replay(trace, set(b.ops) | {b.add}, {b.out: b.skip})
            scores[b.name] = output_change(reference, _predict(smaller, x), score)
            progress.advance(1, b.name)
    return scores


# ---------------------------------------------------------------- the step

@dataclasses.dataclass
class BlockResult:
    model: "keras.Model"
    removed: list[str]
    scores: dict[str, float]  # every removable block's score at the step it was considered
    blocks: list[dict]  # the removed blocks' layers and parameters
    params_before: int
    params_after: int
    layers_before: int
    layers_after: int

    def plan(self) -> dict:
        return {"schema": BLOCK_PLAN_SCHEMA, "version": BLOCK_PLAN_VERSION, "removed": list(self.removed),
                "scores": self.scores}


def prune_blocks(model, config: BlockConfig, data=None, fine_tune=None, fine_tune_epochs: float = 1.0,
                 recalibrate_bn: bool = True) -> BlockResult:
    """Remove blocks as `config` says; with `count`, the lowest-scoring on data (x, y) are removed,
    over `iterative_steps` steps, fine-tuned after each step when `fine_tune` is given."""
    import re

    from edgeprune.channels.recovery import reestimate_bn
    from edgeprune.progress import log

    if not isinstance(config, BlockConfig):
        raise RecipeError(f"config must be a BlockConfig, got {type(config).__name__}", "e.g. BlockConfig(count=4)")
    x = None if data is None else np.asarray(data[0])
    removable = [b for b in find_blocks(model) if not any(re.search(p, b.name) for p in config.protect)]
    params_before, layers_before = model.count_params(), len(trace_model(model).ops)
    removed, scores, info = [], {}, {b.name: b.to_dict() for b in removable}
    current = model
    if config.names:
        current = remove_blocks(model, config.names, config.protect)
        removed = list(config.names)
        if fine_tune is not None:
            current = fine_tune(current, fine_tune_epochs)
    else:
        if config.count > len(removable):
            raise PruningError(f"cannot remove {config.count} blocks of {model.name!r}: it has {len(removable)} "
                               f"removable ({', '.join(b.name for b in removable) or 'none'})",
                               f"use count <= {len(removable)}")
        if x is None:
            raise RecipeError("choosing blocks by score needs data", "pass data=(x, y), or name the blocks")
        n = config.iterative_steps
        targets = [round(config.count * s / n) for s in range(1, n + 1)]
        for step, goal in enumerate(targets, start=1):
            missing = goal - len(removed)
            if missing <= 0:
                continue
            left = [b for b in find_blocks(current) if b.name not in removed and b.name in info]
            step_scores = score_blocks(current, left, x[:512], config.score)
            scores.update(step_scores)
            chosen = sorted(left, key=lambda b: step_scores[b.name])[:missing]
            current = remove_blocks(current, [b.name for b in chosen])
            removed += [b.name for b in chosen]
            if recalibrate_bn:
                reestimate_bn(current, x)
            log(f"block removal step {step}/{n}: removed {', '.join(b.name for b in chosen)}")
            if fine_tune is not None:
                current = fine_tune(current, fine_tune_epochs)
    return BlockResult(model=current, removed=removed, scores=scores, blocks=[info[n] for n in removed if n in info],
                       params_before=params_before, params_after=current.count_params(),
                       layers_before=layers_before, layers_after=len(trace_model(current).ops))


def save_block_plan(plan: dict, path: Path | str) -> None:
    from edgeprune.runfolder import write_json_atomic

    write_json_atomic(Path(path), plan)


def load_block_plan(path: Path | str) -> list[str]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"cannot read block plan {p}: {e}", "give a .blocks.json written by edgeprune") from None
    if not isinstance(data, dict) or data.get("schema") != BLOCK_PLAN_SCHEMA or data.get("version") != BLOCK_PLAN_VERSION:
        raise SchemaError(f"{p} is not an edgeprune block plan (version {BLOCK_PLAN_VERSION})",
                          "give a .blocks.json written by edgeprune")
    removed = data.get("removed")
    if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
        raise SchemaError(f"{p}: 'removed' must be a list of block names", "re-create the plan")
    return removed

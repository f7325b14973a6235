"""A variant as ordered steps, in the spirit of llm-compressor's modifiers:

    steps = [
      { blocks = { count = 6 } },
      { channels = { ratio = 0.5, allocation = "sensitivity" } },
      { sparsity = { method = "unstructured", target_sparsity = 0.5 } },
      { pqat = { epochs = 0.5 } },
      { convert = "int8" },
    ]

Each step is checked on its own (its keys, types, ranges) and against its neighbours, and the
neighbour rules are exactly what edgeprune.pipeline.run_variant runs, in this order:

    blocks and channels   structural, each at most once, in either order
    sparsity              TF-MOT (unstructured or 2:4), at most once, after the structural steps
    qat or pqat           at most one, after every pruning step; pqat needs a sparsity step before
                          it, qat must not follow one (it would re-learn the zeros away)
    convert               last and once; float32 when absent; "int8" after qat/pqat, where it
                          converts the quantization-aware model (its learned ranges replace the
                          calibration on representative images)

The flat keys of a [[variant]] (prune, channels, blocks, order, quantize, ...) say the same thing:
steps_of() reads a VariantSpec's flat attributes as steps, flat_of() writes steps back as them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edgeprune.errors import RecipeError
from edgeprune.recipe.spec import (CONVERT_MODES, DEFAULT_SKIP, SCHEDULES, SPARSE_ENCODING,
                                   SPARSITY_KEYS, SPARSITY_METHODS, STRUCTURE_STEPS, VariantSpec, check_keys,
                                   check_ranges, choice, suggest, types_of)
from edgeprune.sparsity import FROZEN_MODES


def _freeze(value):
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _thaw(value):
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Step:
    """One step of a variant: `kind` names it, `settings` are its keys as a recipe writes them."""

    kind = ""

    @property
    def settings(self) -> dict[str, Any]:
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}

    def to_toml(self) -> dict[str, Any]:
        """The step as one entry of `steps = [...]`, with the settings that differ from defaults."""
        default = type(self)().settings
        table = {k: v for k, v in self.settings.items() if v != default[k] or k in ("method", "mode")}
        return {self.kind: table["mode"] if list(table) == ["mode"] else table}


@dataclass(frozen=True)
class _Structural(Step):
    config: tuple[tuple[str, Any], ...] = ()  # the step's keys as written, sorted, lists made tuples

    @classmethod
    def of(cls, table: dict) -> "_Structural":
        return cls(tuple(sorted((k, _freeze(v)) for k, v in table.items())))

    @property
    def settings(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.config}

    def to_toml(self) -> dict[str, Any]:
        return {self.kind: self.settings}


@dataclass(frozen=True)
class BlocksStep(_Structural):
    """Removes whole residual blocks: edgeprune.channels.blocks.BlockConfig's keys."""

    kind = "blocks"


@dataclass(frozen=True)
class ChannelsStep(_Structural):
    """Removes channels and rebuilds a narrower network: edgeprune.channels.ChannelConfig's keys."""

    kind = "channels"


@dataclass(frozen=True)
class SparsityStep(Step):
    """TF-MOT pruning during the variant's fine-tune; the keys are the flat form's."""

    kind = "sparsity"
    method: str = "unstructured"
    schedule: str = "constant"
    target_sparsity: float = 0.5
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = -1
    frequency: int | None = None
    skip: tuple[str, ...] = (DEFAULT_SKIP,)
    frozen: str = "unfreeze"
    pruning_summaries: bool = False


@dataclass(frozen=True)
class QatStep(Step):
    """Quantization-aware fine-tuning (the flat form's quantize = "qat", epochs its qat_epochs)."""

    kind = "qat"
    epochs: float = 0.5


@dataclass(frozen=True)
class PqatStep(QatStep):
    """Pruning-preserving QAT (Default8BitPrunePreserveQuantizeScheme): keeps the sparsity's zeros."""

    kind = "pqat"


@dataclass(frozen=True)
class ConvertStep(Step):
    """The TFLite conversion that writes the variant's file (the flat form's quantize)."""

    kind = "convert"
    mode: str = "float32"
    sparse_encoding: str = "auto"


KINDS = {c.kind: c for c in (BlocksStep, ChannelsStep, SparsityStep, QatStep, PqatStep, ConvertStep)}
EXAMPLES = {"blocks": "{ blocks = { count = 4 } }", "channels": "{ channels = { ratio = 0.3 } }",
            "sparsity": '{ sparsity = { method = "unstructured", target_sparsity = 0.5 } }',
            "qat": "{ qat = { epochs = 0.5 } }", "pqat": "{ pqat = { epochs = 0.5 } }",
            "convert": '{ convert = "int8" } or { convert = { mode = "float32", sparse_encoding = "on" } }'}
_FLAT_TYPES = types_of(VariantSpec)
_TYPES = {"sparsity": {"method": "str", **{k: _FLAT_TYPES[k] for k in SPARSITY_KEYS}},
          "qat": {"epochs": "float"}, "pqat": {"epochs": "float"},
          "convert": {"mode": "str", "sparse_encoding": "str"}}
_RANK = {"blocks": 0, "channels": 0, "sparsity": 1, "qat": 2, "pqat": 2, "convert": 3}


# ---------------------------------------------------------------- flat <-> steps

def steps_of(v: VariantSpec) -> tuple[Step, ...]:
    """The steps that a VariantSpec's flat attributes describe, as the pipeline runs them."""
    out: list[Step] = [KINDS[k].of(getattr(v, k)) for k in dict.fromkeys(v.order)
                       if k in STRUCTURE_STEPS and getattr(v, k)]
    if v.prune in SPARSITY_METHODS:
        out.append(SparsityStep(v.prune, v.schedule, float(v.target_sparsity), float(v.initial_sparsity), v.begin_step,
                                v.end_step, v.frequency, _freeze(list(v.skip)), v.frozen, v.pruning_summaries))
    if v.quantize in ("qat", "pqat"):
        out += [KINDS[v.quantize](float(v.qat_epochs)), ConvertStep("int8", v.sparse_encoding)]
    else:
        out.append(ConvertStep(v.quantize, v.sparse_encoding))
    return tuple(out)


def flat_of(steps) -> dict[str, Any]:
    """The flat attributes (edgeprune.recipe.spec.STEP_KEYS) of a VariantSpec running `steps`."""
    by = {s.kind: s for s in steps}
    structural = [s.kind for s in steps if s.kind in STRUCTURE_STEPS]
    sparsity = by.get("sparsity")
    qat = by.get("qat") or by.get("pqat")
    convert = by.get("convert") or ConvertStep()
    s = sparsity or SparsityStep()
    prune = sparsity.method if sparsity else next((k for k in ("channels", "blocks") if k in by), "none")
    return {"prune": prune, "schedule": s.schedule, "target_sparsity": s.target_sparsity,
            "initial_sparsity": s.initial_sparsity, "begin_step": s.begin_step, "end_step": s.end_step,
            "frequency": s.frequency, "skip": list(s.skip), "frozen": s.frozen,
            "pruning_summaries": s.pruning_summaries, "quantize": qat.kind if qat else convert.mode,
            "qat_epochs": qat.epochs if qat else QatStep().epochs, "sparse_encoding": convert.sparse_encoding,
            "channels": by["channels"].settings if "channels" in by else {},
            "blocks": by["blocks"].settings if "blocks" in by else {},
            "order": structural if len(structural) == 2 else list(STRUCTURE_STEPS)}


# ---------------------------------------------------------------- one step

def check_structural(kind: str, table: dict, label: str) -> None:
    """A blocks or channels table against the config it makes (label: "[variant a] channels")."""
    if kind == "blocks":
        from edgeprune.channels.blocks import BlockConfig as config
    else:
        from edgeprune.channels.config import ChannelConfig as config
    check_keys(table, types_of(config), label)
    try:
        config(**table)
    except RecipeError as e:
        raise RecipeError(f"{label}: {e.message}", e.hint) from None


def check_sparsity_values(at: str, values) -> None:
    """The choices and ranges of TF-MOT's settings, from a flat VariantSpec or a step's table."""
    get = values.get if isinstance(values, dict) else lambda k, d=None: getattr(values, k, d)
    choice(at, "schedule", get("schedule", "constant"), SCHEDULES)
    choice(at, "frozen", get("frozen", "unfreeze"), FROZEN_MODES)
    check_ranges(at, "sparsity", values)
    initial, target = get("initial_sparsity", 0.0), get("target_sparsity", 0.5)
    if get("schedule", "constant") == "polynomial" and initial > target:
        raise RecipeError(f"{at} initial_sparsity {initial} is above target_sparsity {target}",
                          "a polynomial schedule rises from initial to target")


def _parse_step(kind: str, value, label: str) -> Step:
    if kind == "convert" and isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise RecipeError(f"{label} = {value!r} is not a table", f"write e.g. {EXAMPLES[kind]}")
    if kind in STRUCTURE_STEPS:
        if not value:
            raise RecipeError(f"{label} is empty", f"say what to remove, e.g. {EXAMPLES[kind]}")
        check_structural(kind, value, label)
        return KINDS[kind].of(value)
    table = check_keys(value, _TYPES[kind], label)
    at = label + ":"
    if kind == "sparsity":
        if "method" not in table:
            raise RecipeError(f"{label} needs a method", 'add method = "unstructured" or method = "2:4"')
        choice(at, "method", table["method"], SPARSITY_METHODS)
        check_sparsity_values(at, table)
    elif kind == "convert":
        if "mode" not in table:
            raise RecipeError(f"{label} needs a mode", f"write e.g. {EXAMPLES['convert']}")
        choice(at, "mode", table["mode"], CONVERT_MODES)
        choice(at, "sparse_encoding", table.get("sparse_encoding", "auto"), SPARSE_ENCODING)
    else:
        check_ranges(at, "qat", table)
    return KINDS[kind](**{k: _freeze(v) for k, v in table.items()})


def parse_steps(raw, where: str) -> tuple[Step, ...]:
    """`steps = [...]` of [where] as Step values, each checked on its own."""
    at = f"[{where}]"
    if not isinstance(raw, list):
        raise RecipeError(f"{at} steps = {raw!r} is not a list of steps",
                          'write e.g. steps = [{ channels = { ratio = 0.5 } }, { convert = "int8" }]')
    out = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise RecipeError(f"{at} step {i} is {item!r}, not a table",
                              'write each step as a table of one kind, e.g. { convert = "int8" }')
        if len(item) != 1:
            raise RecipeError(f"{at} step {i} " + (f"names {len(item)} kinds ({', '.join(item)})" if item
                                                   else "names no kind"),
                              "give each step a table of its own, e.g. [{ blocks = { count = 4 } }, "
                              '{ convert = "int8" }]')
        (kind, value), = item.items()
        if kind not in KINDS:
            hint = suggest(kind, KINDS)
            raise RecipeError(f"{at} step {i}: unknown step kind {kind!r}",
                              hint if hint.startswith("did") else f"use one of: {', '.join(KINDS)}")
        out.append(_parse_step(kind, value, f"{at} step {i} ({kind})"))
    return tuple(out)


# ---------------------------------------------------------------- neighbours

def _duplicate(at: str, first: Step, j: int, second: Step, i: int) -> RecipeError:
    if first.kind != second.kind:
        return RecipeError(f"{at} {first.kind} (step {j}) and {second.kind} (step {i}) both train quantization-aware",
                           "keep one: pqat after a sparsity step, qat without one")
    fix = {"convert": "keep one convert step, the last: it writes the .tflite file",
           "sparsity": "keep one sparsity step: the pipeline prunes with TF-MOT once",
           "qat": "keep one", "pqat": "keep one"}.get(first.kind, f"keep one {first.kind} step (iterative_steps = 2 "
                                                                  "in it prunes in two stages)")
    return RecipeError(f"{at} {first.kind} appears twice (steps {j} and {i})", fix)


def _misplaced(at: str, early: Step, j: int, late: Step, i: int) -> RecipeError:
    if early.kind == "convert":
        return RecipeError(f"{at} convert (step {j}) must be the last step, but {late.kind} (step {i}) follows it",
                           "move convert to the end: it writes the .tflite file")
    if early.kind == "sparsity":
        return RecipeError(f"{at} {late.kind} (step {i}) comes after sparsity (step {j})",
                           f"move {late.kind} before sparsity: structural steps run first, then TF-MOT sparsity")
    return RecipeError(f"{at} {late.kind} (step {i}) comes after {early.kind} (step {j})",
                       f"move {early.kind} after every pruning step, just before convert")


def check_steps(steps, where: str) -> None:
    """The neighbour rules: what edgeprune.pipeline.run_variant can run, in the order it runs it."""
    at = f"[{where}] steps:"
    seen: dict[str, tuple[int, Step]] = {}
    for i, s in enumerate(steps, 1):
        group = "qat" if s.kind in ("qat", "pqat") else s.kind
        if group in seen:
            raise _duplicate(at, seen[group][1], seen[group][0], s, i)
        seen[group] = (i, s)
    for i, late in enumerate(steps, 1):
        for j, early in enumerate(steps[:i - 1], 1):
            if _RANK[early.kind] > _RANK[late.kind]:
                raise _misplaced(at, early, j, late, i)
    kinds = [s.kind for s in steps]
    if "pqat" in kinds and "sparsity" not in kinds:
        raise RecipeError(f"{at} pqat preserves TF-MOT sparsity, but no sparsity step comes before it",
                          'add a { sparsity = { method = "unstructured" } } step before it, or use { qat = {} }')
    if "qat" in kinds and "sparsity" in kinds:
        raise RecipeError(f"{at} qat after sparsity would erase the sparsity",
                          "use { pqat = {} } (pruning-preserving QAT)")
    qat = next((s.kind for s in steps if s.kind in ("qat", "pqat")), None)
    if qat and kinds[-1] != "convert":
        raise RecipeError(f'{at} {qat} must be followed by {{ convert = "int8" }}',
                          "add it as the last step: it converts the quantization-aware model")
    if qat and steps[-1].mode != "int8":
        raise RecipeError(f"{at} {qat} trains for an int8 file, but convert is {steps[-1].mode!r}",
                          f'end with {{ convert = "int8" }}, or drop {qat} for a {steps[-1].mode} file')

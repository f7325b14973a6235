"""The recipe's tables as dataclasses, and the checks every value gets on its own: its type, its
choices, its range. Every number of every table has its range in one table, RANGES, checked by one
function, so a table and a step that share a key share its range and its words."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgeprune.errors import RecipeError
from edgeprune.train import OPTIMIZERS  # the names edgeprune.train.make_optimizer knows

PRUNE_METHODS = ("none", "unstructured", "2:4", "channels", "blocks")
SPARSITY_METHODS = ("unstructured", "2:4")  # TF-MOT's, in the sparsity step
STRUCTURE_STEPS = ("blocks", "channels")  # the structural steps, in the order a variant runs them by default
SCHEDULES = ("constant", "polynomial")
QUANT_MODES = ("float32", "float16", "dynamic", "int8", "pqat", "qat")
CONVERT_MODES = ("float32", "float16", "dynamic", "int8")
FLOAT_MODES = ("float32", "float16")  # the exports a sparse encoding can shrink
STRATEGIES = ("default", "mirrored", "multi_worker")
SPARSE_ENCODING = ("auto", "on", "off")
DEFAULT_SKIP = "@first_conv,@classifier"  # symbolic: resolved against the model
DATA_KINDS = ("fashion_mnist", "npz", "image_folder")
ARCHITECTURE_KEYS = ("alpha", "input_shape", "classes", "bn_momentum", "dropout")  # read only to build one


@dataclass
class ModelSpec:
    architecture: str | None = None
    path: str | None = None
    alpha: float = 1.0
    input_shape: list[int] = field(default_factory=lambda: [224, 224, 3])
    classes: int = 1000
    bn_momentum: float = 0.9
    dropout: float = 0.0


@dataclass
class DataSpec:
    kind: str = "fashion_mnist"
    path: str | None = None
    normalization: str = "0_1"
    mean: list[float] | None = None
    std: list[float] | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    representative_count: int = 200


@dataclass
class TrainSpec:
    epochs: float | None = None  # None: 3 for a built-in architecture, 0 for a model file
    batch_size: int = 256
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    strategy: str = "default"  # not a [baseline] key: the run's strategy, which trains the baseline, recorded
    cache: bool = True
    lr_schedule: str = "constant"  # or "cosine": decay to zero over the training, after warmup_epochs
    warmup_epochs: float = 0.0
    augment: bool = False  # random shifts of up to 2 pixels and left-right flips
    label_smoothing: float = 0.0
    reference_accuracy: float | None = None  # what this model reaches trained to convergence (measured elsewhere)
    reference: str | None = None  # where reference_accuracy was measured


@dataclass
class BenchSpec:
    threads: list[int] = field(default_factory=lambda: [1, 2])
    runs: int = 50
    warmup: int = 5
    min_secs: float = 0.5
    targets: list[str] = field(default_factory=lambda: ["local"])
    inventory: str | None = None
    input_shapes: list[list[int]] = field(default_factory=list)  # also time every export at these (H, W, C)


@dataclass
class VariantSpec:
    """A variant as the pipeline reads it: flat attributes. `steps` gives the same variant as the
    ordered, typed steps it runs (edgeprune.recipe.steps); a recipe may write either form."""

    name: str
    prune: str = "none"
    schedule: str = "constant"
    target_sparsity: float = 0.5
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = -1
    frequency: int | None = None
    skip: list[str] = field(default_factory=lambda: [DEFAULT_SKIP])
    frozen: str = "unfreeze"  # layers the model freezes: "unfreeze" for the fine-tune, "keep" frozen, or "skip"
    fine_tune_epochs: float = 1.0
    learning_rate: float = 5e-4
    quantize: str = "float32"
    qat_epochs: float = 0.5
    sparse_encoding: str = "auto"
    pruning_summaries: bool = False
    channels: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=lambda: list(STRUCTURE_STEPS))
    distill: bool = True  # recovery fine-tunes learn from the unpruned model too
    distill_temperature: float = 4.0
    distill_alpha: float = 0.3  # weight of the label loss; the rest goes to the teacher's soft targets
    lr_schedule: str = "constant"  # or "cosine"; constant measured better for short recoveries
    augment: bool | None = None  # None: as the baseline was trained
    label_smoothing: float | None = None  # None: as the baseline was trained

    @property
    def steps(self) -> tuple:
        """The variant's steps, in the order the pipeline runs them: a tuple of frozen Step values
        (BlocksStep, ChannelsStep, SparsityStep, QatStep/PqatStep, ConvertStep), always ending with
        its ConvertStep. Computed from the attributes, so it is never out of step with them, and
        report.json's `spec` (the attributes) stays as it was."""
        from edgeprune.recipe.steps import steps_of

        return steps_of(self)


# The variant's keys that steps own (written inside a step in the steps form) and the keys shared
# by all of its steps (the fine-tunes' settings), which both forms write at the variant's level.
SPARSITY_KEYS = ("schedule", "target_sparsity", "initial_sparsity", "begin_step", "end_step", "frequency", "skip",
                 "frozen", "pruning_summaries")
STEP_KEYS = ("prune", *SPARSITY_KEYS, "quantize", "qat_epochs", "sparse_encoding", "channels", "blocks", "order")
RECOVERY_KEYS = ("distill", "distill_temperature", "distill_alpha", "lr_schedule", "augment", "label_smoothing")
SHARED_KEYS = ("fine_tune_epochs", "learning_rate", *RECOVERY_KEYS)


@dataclass
class Recipe:
    name: str
    model: ModelSpec
    data: DataSpec
    baseline: TrainSpec
    bench: BenchSpec
    variants: list[VariantSpec]
    seed: int = 0
    fine_tune_batch_size: int = 256
    strategy: str = "default"
    source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        raise RecipeError(f"the recipe has no variant {name!r}",
                          f"choose one of: {', '.join(v.name for v in self.variants)}")


# ---------------------------------------------------------------- one value's checks

def suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"


def type_ok(value, annotation: str) -> bool:
    a = annotation.replace(" ", "")
    if value is None:
        return "None" in a
    if "|" in a:
        return any(type_ok(value, part) for part in a.split("|") if part != "None")
    if a.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if a.startswith("float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if a.startswith("str"):
        return isinstance(value, str)
    if a.startswith("bool"):
        return isinstance(value, bool)
    if a.startswith("list[list[int]]"):
        return isinstance(value, list) and all(
            isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v) for v in value)
    if a.startswith("list[int]"):
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if a.startswith("list[float]"):
        return isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
    if a.startswith("list[str]"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if a.startswith("dict"):
        return isinstance(value, dict)
    return True


def check_keys(table: dict, types: dict[str, str], label: str, extra_valid=()) -> dict:
    """Refuses an unknown key (naming the closest) or a value of the wrong type; returns the table
    with integers given for floats made floats. `label` is e.g. "[variant a] channels"."""
    out = {}
    for key, value in table.items():
        if key not in types:
            raise RecipeError(f"unknown key {key!r} in {label}", suggest(key, [*types, *extra_valid]))
        if not type_ok(value, types[key]):
            at = label if label.endswith("]") else label + ":"
            raise RecipeError(f"{at} {key} = {value!r} has the wrong type; expected {types[key]}",
                              "fix the value in the recipe")
        out[key] = float(value) if types[key].startswith("float") and isinstance(value, int) else value
    return out


def types_of(cls) -> dict[str, str]:
    return {f.name: str(f.type).replace("tuple[str, ...]", "str | list[str]") for f in fields(cls)}


def build(cls, table: Any, where: str, extra_valid=(), **extra):
    """A dataclass from a recipe table: unknown keys and wrong types refused ([where] names it)."""
    if not isinstance(table, dict):
        raise RecipeError(f"[{where}] must be a table, got {type(table).__name__}", "see models/*.toml for examples")
    kwargs = {**extra, **check_keys(table, types_of(cls), f"[{where}]", extra_valid)}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise RecipeError(f"[{where}] is incomplete: {e}", "see models/*.toml for examples") from None


def choice(at: str, key: str, value, options) -> None:
    """`at` is where the value is, as the error shows it: "[model]", "[variant a] step 2 (sparsity):"."""
    if value not in options:
        raise RecipeError(f"{at} {key} = {value!r} is not supported", f"use one of: {', '.join(options)}")


# table -> key -> (low, high or None, low excluded, high excluded, the fix)
RANGES: dict[str, dict[str, tuple]] = {
    "recipe": {"seed": (0, 2**32 - 1, False, False, "use e.g. seed = 0"),
               "fine_tune_batch_size": (1, None, False, False, "use e.g. 256")},
    "model": {"classes": (2, None, False, False, "a classifier needs two classes or more"),
              "alpha": (0, None, True, False, "use e.g. 0.35 or 1.0"),
              "dropout": (0, 1, False, True, "use e.g. 0.2"),
              "bn_momentum": (0, 1, True, True, "use e.g. 0.9")},
    "data": {"train_limit": (1, None, False, False, "leave it out to use every image"),
             "test_limit": (1, None, False, False, "leave it out to use every image"),
             "representative_count": (1, None, False, False, "use e.g. 200")},
    "baseline": {"epochs": (0, None, False, False, "use 0 or more"),
                 "batch_size": (1, None, False, False, "use e.g. 256"),
                 "learning_rate": (0, None, True, False, "use e.g. 0.001"),
                 "warmup_epochs": (0, None, False, False, "use 0 or more"),
                 "label_smoothing": (0, 1, False, True, "e.g. 0.1"),
                 "reference_accuracy": (0, 1, True, False, "give it as a fraction, e.g. 0.92")},
    "bench": {"runs": (1, None, False, False, "use e.g. 50"),
              "warmup": (0, None, False, False, "use e.g. 5"),
              "min_secs": (0, None, False, False, "use e.g. 0.5")},
    "variant": {"learning_rate": (0, None, True, False, "use e.g. 0.0005"),
                "fine_tune_epochs": (0, None, False, False, "use 0 or more"),
                "qat_epochs": (0, None, False, False, "use 0 or more"),
                "distill_temperature": (0, None, True, False, "use 2 to 4"),
                "distill_alpha": (0, 1, False, False, "it weighs the label loss against the teacher's, e.g. 0.3"),
                "label_smoothing": (0, 1, False, True, "e.g. 0.1")},
    "sparsity": {"target_sparsity": (0, 1, False, True, "sparsity is the fraction of weights set to zero: use e.g. "
                                                         "0.5 for half"),
                 "initial_sparsity": (0, 1, False, True, "sparsity is the fraction of weights set to zero: use e.g. "
                                                          "0.5 for half"),
                 "begin_step": (0, None, False, False, "use 0 or more"),
                 "end_step": (-1, None, False, False, "use -1 (the fine-tune's end) or a step number"),
                 "frequency": (1, None, False, False, "masks update every N steps")},
    "qat": {"epochs": (0, None, False, False, "use 0 or more")},
}


def check_ranges(at: str, table: str, values) -> None:
    """Every number of `values` (a dict or a dataclass) that RANGES lists for `table` within its
    range and finite; None is unset."""
    for key, (low, high, low_open, high_open, hint) in RANGES[table].items():
        value = values.get(key) if isinstance(values, dict) else getattr(values, key, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if math.isfinite(value) and above and below:
            continue
        if not math.isfinite(value):
            rule = "is not a finite number"
        elif high is not None:
            rule = f"is outside {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low == 0:
            rule = "must be positive" if low_open else "must not be negative"
        else:
            rule = f"must be at least {low}"
        raise RecipeError(f"{at} {key} = {value!r} {rule}", hint)

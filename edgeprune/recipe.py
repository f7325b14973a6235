"""Recipes: one TOML file declares the model, the data, the baseline training and the variants.
Every table is checked strictly: an unknown key is refused with the closest valid name, a value
of the wrong type or out of range is refused with what was expected."""

from __future__ import annotations

import copy
import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeprune.errors import InputFileError, RecipeError, toml_problem

PRUNE_METHODS = ("none", "unstructured", "2:4", "channels", "blocks")
STRUCTURE_STEPS = ("blocks", "channels")  # the structural steps, in the order a variant may give them
LR_SCHEDULES = ("constant", "cosine")
SCHEDULES = ("constant", "polynomial")
QUANT_MODES = ("float32", "float16", "dynamic", "int8", "pqat", "qat")
STRATEGIES = ("default", "mirrored", "multi_worker")
SPARSE_ENCODING = ("auto", "on", "off")
DEFAULT_SKIP = "@first_conv,@classifier"  # symbolic: resolved against the model
DATA_KINDS = ("fashion_mnist", "npz", "image_folder")
OPTIMIZERS = ("adam", "sgd")
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


_TOP_KEYS = {"name", "seed", "model", "data", "baseline", "bench", "variant", "fine_tune_batch_size", "strategy"}


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"


def _type_ok(value, annotation: str) -> bool:
    a = annotation.replace(" ", "")
    if value is None:
        return "None" in a
    if "|" in a:
        return any(_type_ok(value, part) for part in a.split("|") if part != "None")
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


def _build(cls, table: Any, where: str, **extra):
    if not isinstance(table, dict):
        raise RecipeError(f"[{where}] must be a table, got {type(table).__name__}", "see models/*.toml for examples")
    known = {f.name: f for f in fields(cls)}
    kwargs = dict(extra)
    for key, value in table.items():
        if key not in known:
            raise RecipeError(f"unknown key {key!r} in [{where}]", _suggest(key, known))
        annotation = str(known[key].type)
        if not _type_ok(value, annotation):
            raise RecipeError(f"[{where}] {key} = {value!r} has the wrong type; expected {annotation}",
                              "fix the value in the recipe")
        kwargs[key] = float(value) if annotation.startswith("float") and isinstance(value, int) else value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise RecipeError(f"[{where}] is incomplete: {e}", "see models/*.toml for examples") from None


def _choice(value, options, what: str, where: str):
    if value not in options:
        raise RecipeError(f"[{where}] {what} = {value!r} is not supported", f"use one of: {', '.join(options)}")


def _in_range(where: str, key: str, value, low, high=None, low_open=False, high_open=False, hint=""):
    """Refuses a number outside [low, high] (an open end excluded), or not finite; None is unset."""
    if value is None:
        return
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    if math.isfinite(value) and above and below:
        return
    if not math.isfinite(value):
        rule = "is not a finite number"
    elif high is not None:
        rule = f"is outside {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low == 0:
        rule = "must be positive" if low_open else "must not be negative"
    else:
        rule = f"must be at least {low}"
    raise RecipeError(f"[{where}] {key} = {value!r} {rule}", hint)


def _check_types(table: dict, cls, where: str, name: str) -> None:
    """The keys and value types of an inline table (channels = {...}) against the dataclass it makes."""
    known = {f.name: str(f.type).replace("tuple[str, ...]", "str | list[str]") for f in fields(cls)}
    for key, value in table.items():
        if key not in known:
            raise RecipeError(f"unknown key {key!r} in [{where}] {name}", _suggest(key, known))
        if not _type_ok(value, known[key]):
            raise RecipeError(f"[{where}] {name}: {key} = {value!r} has the wrong type; "
                              f"expected {known[key]}", "fix the value in the recipe")


def _name_ok(name: str) -> bool:
    """Fit for one file or folder name: letters, digits, '-', '_', '.', and not only dots."""
    return bool(name.strip(".")) and all(c.isalnum() or c in "-_." for c in name)


def _check_numbers(r: "Recipe") -> None:
    """Every number of the recipe's tables within its range (variants check their own)."""
    m, d, b, n = r.model, r.data, r.baseline, r.bench
    _in_range("recipe", "seed", r.seed, 0, 2**32 - 1, hint="use e.g. seed = 0")
    _in_range("recipe", "fine_tune_batch_size", r.fine_tune_batch_size, 1, hint="use e.g. 256")
    if len(m.input_shape) != 3 or min(m.input_shape) < 1:
        raise RecipeError(f"[model] input_shape = {m.input_shape!r} is not (height, width, channels) of "
                          "positive integers", "use e.g. input_shape = [32, 32, 1]")
    _in_range("model", "classes", m.classes, 2, hint="a classifier needs two classes or more")
    _in_range("model", "alpha", m.alpha, 0, low_open=True, hint="use e.g. 0.35 or 1.0")
    _in_range("model", "dropout", m.dropout, 0, 1, high_open=True, hint="use e.g. 0.2")
    _in_range("model", "bn_momentum", m.bn_momentum, 0, 1, low_open=True, high_open=True, hint="use e.g. 0.9")
    for key in ("train_limit", "test_limit"):
        _in_range("data", key, getattr(d, key), 1, hint="leave it out to use every image")
    _in_range("data", "representative_count", d.representative_count, 1, hint="use e.g. 200")
    if d.mean is not None and not d.mean:
        raise RecipeError("[data] mean = [] is empty", "give one number per channel, e.g. mean = [0.5]")
    if d.std is not None and (not d.std or not all(math.isfinite(s) and s > 0 for s in d.std)):
        raise RecipeError(f"[data] std = {d.std!r} must hold positive numbers",
                          "use the per-channel standard deviation, e.g. std = [0.5]")
    _in_range("baseline", "epochs", b.epochs, 0, hint="use 0 or more")
    _in_range("baseline", "batch_size", b.batch_size, 1, hint="use e.g. 256")
    _in_range("baseline", "learning_rate", b.learning_rate, 0, low_open=True, hint="use e.g. 0.001")
    if not n.threads or min(n.threads) < 1:
        raise RecipeError(f"[bench] threads = {n.threads!r} must list thread counts of 1 or more",
                          "use e.g. threads = [1, 2]")
    _in_range("bench", "runs", n.runs, 1, hint="use e.g. 50")
    _in_range("bench", "warmup", n.warmup, 0, hint="use e.g. 5")
    _in_range("bench", "min_secs", n.min_secs, 0, hint="use e.g. 0.5")


def validate_variant(v: VariantSpec, where: str) -> None:
    _choice(v.prune, PRUNE_METHODS, "prune", where)
    _choice(v.schedule, SCHEDULES, "schedule", where)
    _choice(v.quantize, QUANT_MODES, "quantize", where)
    _choice(v.sparse_encoding, SPARSE_ENCODING, "sparse_encoding", where)
    _in_range(where, "learning_rate", v.learning_rate, 0, low_open=True, hint="use e.g. 0.0005")
    for key in ("fine_tune_epochs", "qat_epochs"):
        _in_range(where, key, getattr(v, key), 0, hint="use 0 or more")
    for key in ("target_sparsity", "initial_sparsity"):
        value = getattr(v, key)
        if not 0.0 <= value < 1.0:
            raise RecipeError(f"[{where}] {key} = {value} is outside [0, 1)",
                              "sparsity is the fraction of weights set to zero: use e.g. 0.5 for half")
    if v.schedule == "polynomial" and v.initial_sparsity > v.target_sparsity:
        raise RecipeError(f"[{where}] initial_sparsity {v.initial_sparsity} is above target_sparsity "
                          f"{v.target_sparsity}", "a polynomial schedule rises from initial to target")
    if v.frequency is not None and v.frequency < 1:
        raise RecipeError(f"[{where}] frequency = {v.frequency} must be at least 1", "masks update every N steps")
    if v.begin_step < 0:
        raise RecipeError(f"[{where}] begin_step = {v.begin_step} is negative", "use 0 or more")
    if v.prune in ("unstructured", "2:4") and v.fine_tune_epochs <= 0:
        raise RecipeError(f"[{where}] prune = {v.prune!r} needs fine_tune_epochs > 0",
                          "TF-MOT applies its masks during fine-tuning steps")
    if v.quantize == "qat" and v.prune in ("unstructured", "2:4"):
        raise RecipeError(f"[{where}] quantize = 'qat' after {v.prune} pruning would erase the sparsity",
                          "use quantize = 'pqat' (pruning-preserving QAT)")
    _choice(v.lr_schedule, LR_SCHEDULES, "lr_schedule", where)
    _choice(v.frozen, ("unfreeze", "keep", "skip"), "frozen", where)
    if v.prune == "blocks" and not v.blocks:
        raise RecipeError(f"[{where}] prune = 'blocks' needs a blocks table",
                          "add e.g. blocks = { count = 4 }")
    bad_steps = [s for s in v.order if s not in STRUCTURE_STEPS]
    if bad_steps or len(set(v.order)) != len(v.order):
        raise RecipeError(f"[{where}] order = {v.order!r} is not an order of the structural steps",
                          f"list each of {', '.join(STRUCTURE_STEPS)} at most once, e.g. order = [\"blocks\", \"channels\"]")
    for step in STRUCTURE_STEPS:
        if getattr(v, step) and step not in v.order:
            raise RecipeError(f"[{where}] has a {step} table but order = {v.order!r} leaves {step} out",
                              f"add {step!r} to order, or remove the {step} table")
    if not v.distill_temperature > 0:
        raise RecipeError(f"[{where}] distill_temperature = {v.distill_temperature} must be positive", "use 2 to 4")
    if not 0.0 <= v.distill_alpha <= 1.0:
        raise RecipeError(f"[{where}] distill_alpha = {v.distill_alpha} is outside [0, 1]",
                          "it weighs the label loss against the teacher's, e.g. 0.3")
    if v.label_smoothing is not None and not 0.0 <= v.label_smoothing < 1.0:
        raise RecipeError(f"[{where}] label_smoothing = {v.label_smoothing} is outside [0, 1)", "e.g. 0.1")
    if v.blocks:
        from edgeprune.channels.blocks import BlockConfig

        _check_types(v.blocks, BlockConfig, where, "blocks")
        try:
            BlockConfig(**v.blocks)
        except RecipeError as e:
            raise RecipeError(f"[{where}] blocks: {e.message}", e.hint) from None
    if v.prune == "channels" and not v.channels:
        raise RecipeError(f"[{where}] prune = 'channels' needs a [variant.channels] table",
                          "add e.g. channels = { ratio = 0.3 }")
    if v.channels:
        from edgeprune.channels.config import ChannelConfig

        _check_types(v.channels, ChannelConfig, where, "channels")
        try:
            ChannelConfig(**v.channels)
        except RecipeError as e:
            raise RecipeError(f"[{where}] channels: {e.message}", e.hint) from None


def from_dict(data: dict, source: str | None = None) -> Recipe:
    for key in data:
        if key not in _TOP_KEYS:
            raise RecipeError(f"unknown key {key!r} at the top of the recipe", _suggest(key, _TOP_KEYS))
    if "name" not in data:
        raise RecipeError("the recipe has no name", 'add name = "my-recipe" at the top')
    top = {f.name: str(f.type) for f in fields(Recipe)}
    for key in ("name", "seed", "fine_tune_batch_size", "strategy"):
        if key in data and not _type_ok(data[key], top[key]):
            raise RecipeError(f"[recipe] {key} = {data[key]!r} has the wrong type; expected {top[key]}",
                              "fix the value in the recipe")
    if not _name_ok(data["name"]):
        raise RecipeError(f"the recipe name {data['name']!r} is unfit for a folder name",
                          "use letters, digits, '-', '_' and '.', not only dots: it names the default run "
                          "folder runs/NAME")
    model = _build(ModelSpec, data.get("model", {}), "model")
    if bool(model.architecture) == bool(model.path):
        raise RecipeError("[model] needs exactly one of architecture or path",
                          'set architecture = "mobilenet_v2" or path = "model.keras"')
    if model.architecture:
        from edgeprune.models import BUILTIN_ARCHITECTURES

        _choice(model.architecture, BUILTIN_ARCHITECTURES, "architecture", "model")
    for key in ARCHITECTURE_KEYS:
        if model.path and key in data["model"]:
            raise RecipeError(f"[model] {key} applies only to a built-in architecture, not to a model file",
                              "remove it: the file fixes the model's width, input shape and classes")
    dataspec = _build(DataSpec, data.get("data", {}), "data")
    _choice(dataspec.kind, DATA_KINDS, "kind", "data")
    if dataspec.kind != "fashion_mnist" and not dataspec.path:
        raise RecipeError(f"[data] kind = {dataspec.kind!r} needs a path",
                          f'set path = "{"file.npz" if dataspec.kind == "npz" else "images"}" in [data]')
    if isinstance(data.get("baseline"), dict) and "strategy" in data["baseline"]:
        raise RecipeError("[baseline] strategy does not apply: the strategy is the whole run's",
                          f"move it to the top of the recipe: strategy = {data['baseline']['strategy']!r}")
    baseline = _build(TrainSpec, data.get("baseline", {}), "baseline")
    _choice(baseline.optimizer, OPTIMIZERS, "optimizer", "baseline")
    bench = _build(BenchSpec, data.get("bench", {}), "bench")
    raw_variants = data.get("variant", [])
    if not isinstance(raw_variants, list) or not raw_variants:
        raise RecipeError("the recipe declares no variants", "add at least one [[variant]] table with a name")
    variants, names = [], set()
    for i, raw in enumerate(raw_variants):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise RecipeError(f"variant #{i + 1} has no name", 'give every [[variant]] a name = "..."')
        name = raw["name"]
        if name in names:
            raise RecipeError(f"two variants are named {name!r}", "give each variant its own name")
        if not _name_ok(name):
            raise RecipeError(f"variant name {name!r} is unfit for a file name",
                              "use letters, digits, '-', '_' and '.', not only dots")
        names.add(name)
        v = _build(VariantSpec, {k: val for k, val in raw.items() if k != "name"}, f"variant {name}", name=name)
        validate_variant(v, f"variant {name}")
        variants.append(v)
    recipe = Recipe(name=data["name"], model=model, data=dataspec, baseline=baseline, bench=bench,
                    variants=variants, source=source,
                    **{k: data[k] for k in ("seed", "fine_tune_batch_size", "strategy") if k in data})
    _choice(recipe.strategy, STRATEGIES, "strategy", "recipe")
    baseline.strategy = recipe.strategy
    _check_numbers(recipe)
    _choice(dataspec.normalization, ("0_1", "-1_1", "none"), "normalization", "data")
    _choice(baseline.lr_schedule, LR_SCHEDULES, "lr_schedule", "baseline")
    if not 0.0 <= baseline.label_smoothing < 1.0:
        raise RecipeError(f"[baseline] label_smoothing = {baseline.label_smoothing} is outside [0, 1)", "e.g. 0.1")
    if baseline.warmup_epochs < 0:
        raise RecipeError(f"[baseline] warmup_epochs = {baseline.warmup_epochs} is negative", "use 0 or more")
    for shape in bench.input_shapes:
        if len(shape) != 3 or min(shape) < 1:
            raise RecipeError(f"[bench] input_shapes entry {shape!r} is not a positive H, W, C",
                              "e.g. input_shapes = [[224, 224, 3]]")
    return recipe


def load(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Reads a recipe file; `overrides` are "key.path=value" strings (value in TOML syntax)
    applied before validation, so CLI flags win over the file."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"recipe not found: {p}", "give the path of a .toml recipe, e.g. models/mobilenet_v2_fashion.toml")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{p} is not a text file (byte {e.object[e.start]:#04x} at offset {e.start} is not "
                          "UTF-8)", "give a TOML recipe, e.g. models/mobilenet_v2_fashion.toml") from None
    except OSError as e:
        raise InputFileError(f"cannot read the recipe {p}: {e.strerror or e}",
                             "check its permissions") from None
    except tomllib.TOMLDecodeError as e:
        what, where = toml_problem(e)
        raise RecipeError(f"{p} is not valid TOML: {what}" + (f" at {where}" if where else ""),
                          f"fix the syntax at {where}" if where else "fix the TOML syntax") from None
    data = apply_overrides(data, overrides or [])
    recipe = from_dict(data, source=str(p))
    if recipe.model.path and not Path(recipe.model.path).is_absolute():
        recipe.model.path = str((p.parent / recipe.model.path).resolve()) if not Path(recipe.model.path).exists() \
            else recipe.model.path
    return recipe


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} has no '='", "write --set key.path=value, e.g. --set baseline.epochs=1")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        parts = key.strip().split(".")
        if parts[0] == "variant":
            targets = data.get("variant", [])
            if len(parts) == 3:
                targets = [v for v in targets if v.get("name") == parts[1]]
                if not targets:
                    names = [str(v["name"]) for v in data.get("variant", [])
                             if isinstance(v, dict) and "name" in v]
                    raise RecipeError(f"override {item!r} names no variant of the recipe",
                                      f"choose one of: {', '.join(names)}" if names else "check the name")
                parts = [parts[2]]
            else:
                parts = parts[1:]
            for t in targets:
                t[parts[0]] = value
            continue
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: {part} is not a table", "check the key path")
        node[parts[-1]] = value
    return data

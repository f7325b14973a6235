"""Reading a recipe: the TOML file, the command line's overrides, every table built and checked,
every variant read as steps (from `steps = [...]` or from its flat keys), and the keys that do not
apply refused."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

from edgeprune.data import NORMALIZATIONS
from edgeprune.errors import InputFileError, RecipeError, toml_problem
from edgeprune.recipe.applies import recipe_findings, settle, variant_findings
from edgeprune.recipe.spec import (ARCHITECTURE_KEYS, DATA_KINDS, OPTIMIZERS, PRUNE_METHODS, QUANT_MODES,
                                   SHARED_KEYS, SPARSE_ENCODING, SPARSITY_METHODS, STEP_KEYS, STRATEGIES,
                                   STRUCTURE_STEPS, BenchSpec, DataSpec, ModelSpec, Recipe, TrainSpec, VariantSpec,
                                   build, check_keys, check_ranges, choice, suggest, types_of)
from edgeprune.recipe.steps import (EXAMPLES, check_sparsity_values, check_steps, check_structural, flat_of,
                                    parse_steps)
from edgeprune.train import LR_SCHEDULES

_TOP_KEYS = {"name", "seed", "model", "data", "baseline", "bench", "variant", "fine_tune_batch_size", "strategy"}


def _name_ok(name: str) -> bool:
    """Fit for one file or folder name: letters, digits, '-', '_', '.', and not only dots."""
    return bool(name.strip(".")) and all(c.isalnum() or c in "-_." for c in name)


def validate_variant(v: VariantSpec, where: str) -> None:
    """A VariantSpec's flat attributes: each value, and the flat form's rules for how they combine."""
    at = f"[{where}]"
    choice(at, "prune", v.prune, PRUNE_METHODS)
    choice(at, "quantize", v.quantize, QUANT_MODES)
    choice(at, "sparse_encoding", v.sparse_encoding, SPARSE_ENCODING)
    choice(at, "lr_schedule", v.lr_schedule, LR_SCHEDULES)
    check_ranges(at, "variant", v)
    check_sparsity_values(at, v)
    sparse = v.prune in SPARSITY_METHODS
    if sparse and v.fine_tune_epochs <= 0:
        raise RecipeError(f"{at} prune = {v.prune!r} needs fine_tune_epochs > 0",
                          "TF-MOT applies its masks during fine-tuning steps")
    if v.quantize == "qat" and sparse:
        raise RecipeError(f"{at} quantize = 'qat' after {v.prune} pruning would erase the sparsity",
                          "use quantize = 'pqat' (pruning-preserving QAT)")
    if v.quantize == "pqat" and not sparse:
        raise RecipeError(f"{at} quantize = 'pqat' preserves TF-MOT sparsity, but prune = {v.prune!r} makes none",
                          "use quantize = 'qat', or prune = 'unstructured' or '2:4'")
    if v.prune == "blocks" and not v.blocks:
        raise RecipeError(f"{at} prune = 'blocks' needs a blocks table", "add e.g. blocks = { count = 4 }")
    if v.prune == "channels" and not v.channels:
        raise RecipeError(f"{at} prune = 'channels' needs a [variant.channels] table",
                          "add e.g. channels = { ratio = 0.3 }")
    if v.channels and v.prune in ("none", "blocks"):
        raise RecipeError(f"{at} has a channels table but prune = {v.prune!r}",
                          "set prune = 'channels' (a blocks table still runs, in order), or remove the channels table")
    if v.blocks and v.prune == "none":
        raise RecipeError(f"{at} has a blocks table but prune = 'none'",
                          "set prune = 'blocks', or remove the blocks table")
    bad = [s for s in v.order if s not in STRUCTURE_STEPS]
    if bad or len(set(v.order)) != len(v.order):
        raise RecipeError(f"{at} order = {v.order!r} is not an order of the structural steps",
                          f"list each of {', '.join(STRUCTURE_STEPS)} at most once, "
                          'e.g. order = ["blocks", "channels"]')
    for kind in STRUCTURE_STEPS:
        if getattr(v, kind) and kind not in v.order:
            raise RecipeError(f"{at} has a {kind} table but order = {v.order!r} leaves {kind} out",
                              f"add {kind!r} to order, or remove the {kind} table")
    for kind in STRUCTURE_STEPS:
        if getattr(v, kind):
            check_structural(kind, getattr(v, kind), f"{at} {kind}")


def parse_variant(raw: dict, name: str) -> VariantSpec:
    """One [[variant]] table, in either form, as a VariantSpec whose flat attributes come from its
    steps: the flat form and the steps form of a variant give equal VariantSpecs."""
    where, body = f"variant {name}", {k: v for k, v in raw.items() if k != "name"}
    if "steps" in body:
        steps = parse_steps(body["steps"], where)
        check_steps(steps, where)
        shared = {k: v for k, v in body.items() if k not in STEP_KEYS and k != "steps"}
        v = build(VariantSpec, shared, where, extra_valid=("steps",), name=name, **flat_of(steps))
        if any(s.kind == "sparsity" for s in steps) and v.fine_tune_epochs <= 0:
            raise RecipeError(f"[{where}] the sparsity step needs fine_tune_epochs > 0",
                              "TF-MOT applies its masks during fine-tuning steps")
        validate_variant(v, where)
        return v
    for kind in STRUCTURE_STEPS:
        if body.get(kind) == {}:
            raise RecipeError(f"[{where}] {kind} = {{}} is empty",
                              f"say what to remove, e.g. {EXAMPLES[kind][2:-2]}, or leave {kind} out")
    flat = build(VariantSpec, body, where, extra_valid=("steps",), name=name)
    validate_variant(flat, where)
    steps = flat.steps
    check_steps(steps, where)
    return VariantSpec(name=name, **{k: getattr(flat, k) for k in SHARED_KEYS}, **flat_of(steps))


def _check_numbers(r: Recipe) -> None:
    """Every number of the recipe's tables within its range (variants check their own)."""
    m, d, n = r.model, r.data, r.bench
    check_ranges("[recipe]", "recipe", r)
    if len(m.input_shape) != 3 or min(m.input_shape) < 1:
        raise RecipeError(f"[model] input_shape = {m.input_shape!r} is not (height, width, channels) of "
                          "positive integers", "use e.g. input_shape = [32, 32, 1]")
    for table, values in (("model", m), ("data", d), ("baseline", r.baseline), ("bench", n)):
        check_ranges(f"[{table}]", table, values)
    if d.mean is not None and not d.mean:
        raise RecipeError("[data] mean = [] is empty", "give one number per channel, e.g. mean = [0.5]")
    if d.std is not None and (not d.std or not all(math.isfinite(s) and s > 0 for s in d.std)):
        raise RecipeError(f"[data] std = {d.std!r} must hold positive numbers",
                          "use the per-channel standard deviation, e.g. std = [0.5]")
    if not n.threads or min(n.threads) < 1:
        raise RecipeError(f"[bench] threads = {n.threads!r} must list thread counts of 1 or more",
                          "use e.g. threads = [1, 2]")
    for shape in n.input_shapes:
        if len(shape) != 3 or min(shape) < 1:
            raise RecipeError(f"[bench] input_shapes entry {shape!r} is not a positive H, W, C",
                              "e.g. input_shapes = [[224, 224, 1]]")


def from_dict(data: dict, source: str | None = None, overrides: list[str] | tuple = ()) -> Recipe:
    """A Recipe from a parsed TOML document. `overrides` are the --set strings already applied to
    `data`: keys they leave without effect are not refused (see edgeprune.recipe.applies)."""
    for key in data:
        if key not in _TOP_KEYS:
            raise RecipeError(f"unknown key {key!r} at the top of the recipe", suggest(key, _TOP_KEYS))
    if "name" not in data:
        raise RecipeError("the recipe has no name", 'add name = "my-recipe" at the top')
    top_types = types_of(Recipe)
    top = check_keys({k: data[k] for k in ("name", "seed", "fine_tune_batch_size", "strategy") if k in data},
                     top_types, "[recipe]")
    if not _name_ok(data["name"]):
        raise RecipeError(f"the recipe name {data['name']!r} is unfit for a folder name",
                          "use letters, digits, '-', '_' and '.', not only dots: it names the default run "
                          "folder runs/NAME")
    model = build(ModelSpec, data.get("model", {}), "model")
    if bool(model.architecture) == bool(model.path):
        raise RecipeError("[model] needs exactly one of architecture or path",
                          'set architecture = "mobilenet_v2" or path = "model.keras"')
    if model.architecture:
        from edgeprune.models import BUILTIN_ARCHITECTURES

        choice("[model]", "architecture", model.architecture, BUILTIN_ARCHITECTURES)
    for key in ARCHITECTURE_KEYS:
        if model.path and key in data["model"]:
            raise RecipeError(f"[model] {key} applies only to a built-in architecture, not to a model file",
                              "remove it: the file fixes the model's width, input shape and classes")
    dataspec = build(DataSpec, data.get("data", {}), "data")
    choice("[data]", "kind", dataspec.kind, DATA_KINDS)
    if dataspec.kind != "fashion_mnist" and not dataspec.path:
        raise RecipeError(f"[data] kind = {dataspec.kind!r} needs a path",
                          f'set path = "{"file.npz" if dataspec.kind == "npz" else "images"}" in [data]')
    if isinstance(data.get("baseline"), dict) and "strategy" in data["baseline"]:
        raise RecipeError("[baseline] strategy does not apply: the strategy is the whole run's",
                          f"move it to the top of the recipe: strategy = {data['baseline']['strategy']!r}")
    baseline = build(TrainSpec, data.get("baseline", {}), "baseline")
    choice("[baseline]", "optimizer", baseline.optimizer, OPTIMIZERS)
    bench = build(BenchSpec, data.get("bench", {}), "bench")
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
        variants.append(parse_variant(raw, name))
    recipe = Recipe(name=data["name"], model=model, data=dataspec, baseline=baseline, bench=bench,
                    variants=variants, source=source, **{k: v for k, v in top.items() if k != "name"})
    choice("[recipe]", "strategy", recipe.strategy, STRATEGIES)
    baseline.strategy = recipe.strategy
    _check_numbers(recipe)
    choice("[data]", "normalization", dataspec.normalization, NORMALIZATIONS)
    choice("[baseline]", "lr_schedule", baseline.lr_schedule, LR_SCHEDULES)
    _refuse_what_does_not_apply(data, recipe, raw_variants, overrides)
    return recipe


def _override_paths(overrides) -> list[tuple[tuple[str, ...], str]]:
    """(key path, the override) for every --set string; variant.KEY (every variant) is ("variant", "*", KEY)."""
    out = []
    for item in overrides:
        parts = tuple(p.strip() for p in item.split("=", 1)[0].strip().split("."))
        out.append((("variant", "*", *parts[1:]) if parts[0] == "variant" and len(parts) == 2 else parts, item))
    return out


def _refuse_what_does_not_apply(data: dict, recipe: Recipe, raw_variants: list, overrides) -> None:
    findings = recipe_findings(data, recipe)
    for raw, v in zip(raw_variants, recipe.variants):
        findings += variant_findings(raw, v)
    refused, passed = settle(findings, _override_paths(overrides), len(recipe.variants))
    if refused:
        raise refused[0].error()
    for i, (raw, v) in enumerate(zip(raw_variants, recipe.variants)):  # what the command line left idle
        idle = {f.path[2] for f in passed if f.path[:2] == ("variant", v.name) and f.path[2] != "steps"}
        if idle:
            recipe.variants[i] = parse_variant({k: x for k, x in raw.items() if k not in idle}, v.name)


def load(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Reads a recipe file; `overrides` are "key.path=value" strings (value in TOML syntax)
    applied before validation, so CLI flags win over the file."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"recipe not found: {p}",
                             "give the path of a .toml recipe, e.g. models/mobilenet_v2_fashion.toml")
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
    recipe = from_dict(data, source=str(p), overrides=overrides or [])
    if recipe.model.path and not Path(recipe.model.path).is_absolute():
        recipe.model.path = str((p.parent / recipe.model.path).resolve()) if not Path(recipe.model.path).exists() \
            else recipe.model.path
    return recipe


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`data` with every "key.path=value" set: variant.KEY on every variant, variant.NAME.KEY[.SUB]
    on one."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} has no '='",
                              "write --set key.path=value, e.g. --set baseline.epochs=1")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        parts = key.strip().split(".")
        node, targets = data, [data]
        if parts[0] == "variant":
            targets = [v for v in data.get("variant", []) if isinstance(v, dict)]
            if len(parts) >= 3:
                targets = [v for v in targets if v.get("name") == parts[1]]
                if not targets:
                    names = [str(v["name"]) for v in data.get("variant", []) if isinstance(v, dict) and "name" in v]
                    raise RecipeError(f"override {item!r} names no variant of the recipe",
                                      f"choose one of: {', '.join(names)}" if names else "check the name")
                parts = parts[2:]
            else:
                parts = parts[1:]
        for node in targets:
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise RecipeError(f"override {item!r}: {part} is not a table", "check the key path")
            node[parts[-1]] = value
    return data

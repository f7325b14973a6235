"""Recipes: one TOML file declares the model, the data, the baseline training and the variants.
Every table is checked strictly: an unknown key is refused with the closest valid name, a value
of the wrong type or out of range is refused with what was expected, and a key that does not
apply is refused with what to do. A variant is a list of steps (blocks, channels, sparsity,
qat/pqat, convert), written as `steps = [...]` or with the flat keys; docs/recipes.md has both.

    from edgeprune.recipe import load_recipe
    recipe = load_recipe("models/mobilenet_v2_fashion.toml", ["baseline.epochs=1"])
    recipe.variants[0].steps  # (ConvertStep(mode='int8', sparse_encoding='auto'),)
"""

from edgeprune.recipe.load import apply_overrides, from_dict, load, parse_variant, validate_variant
from edgeprune.recipe.spec import (ARCHITECTURE_KEYS, CONVERT_MODES, DATA_KINDS, DEFAULT_SKIP, OPTIMIZERS,
                                   PRUNE_METHODS, QUANT_MODES, SCHEDULES, SHARED_KEYS, SPARSE_ENCODING,
                                   SPARSITY_METHODS, STEP_KEYS, STRATEGIES, STRUCTURE_STEPS, BenchSpec, DataSpec,
                                   ModelSpec, Recipe, TrainSpec, VariantSpec)
from edgeprune.recipe.steps import (KINDS as STEP_KINDS, BlocksStep, ChannelsStep, ConvertStep, PqatStep, QatStep,
                                    SparsityStep, Step, check_steps, flat_of, parse_steps, steps_of)
from edgeprune.train import LR_SCHEDULES

load_recipe = load

__all__ = [
    "ARCHITECTURE_KEYS", "CONVERT_MODES", "DATA_KINDS", "DEFAULT_SKIP", "LR_SCHEDULES", "OPTIMIZERS", "PRUNE_METHODS",
    "QUANT_MODES", "SCHEDULES", "SHARED_KEYS", "SPARSE_ENCODING", "SPARSITY_METHODS", "STEP_KEYS", "STEP_KINDS",
    "STRATEGIES", "STRUCTURE_STEPS", "BenchSpec", "BlocksStep", "ChannelsStep", "ConvertStep", "DataSpec",
    "ModelSpec", "PqatStep", "QatStep", "Recipe", "SparsityStep", "Step", "TrainSpec", "VariantSpec",
    "apply_overrides", "check_steps", "flat_of", "from_dict", "load", "load_recipe", "parse_steps", "parse_variant",
    "steps_of", "validate_variant",
]

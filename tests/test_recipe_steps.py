"""A variant as ordered steps: every step checked on its own and against its neighbours, the flat
keys read as the same steps, and every key that would not apply refused with one line that names
it, where it is and what to do. Recipes are parsed in-process (from_dict), and a few bad ones go
through the real CLI, which must exit 2 with one error line and write nothing."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from test_bad_inputs import assets  # noqa: F401  (the fixture: an untrained tiny model and an npz)
from test_bad_inputs import HEAVY, HeavyWorkStarted, invoke, populate, recipe, snapshot

from edgeprune.errors import RecipeError
from edgeprune.recipe import (SHARED_KEYS, BlocksStep, ChannelsStep, ConvertStep, PqatStep, QatStep, SparsityStep,
                              VariantSpec, apply_overrides, flat_of, from_dict, load, load_recipe)

ROOT = Path(__file__).resolve().parents[1]
ARCH = 'architecture = "mobilenet_v2"\ninput_shape = [32, 32, 1]\nclasses = 10'


def parse(variant: str = "", overrides=(), **tables):
    """The recipe of test_bad_inputs (a model file, an npz) with one variant "a"."""
    data = tomllib.loads(recipe(variant=variant, **tables))
    return from_dict(apply_overrides(data, list(overrides)), overrides=list(overrides))


def error(variant: str = "", overrides=(), **tables) -> str:
    with pytest.raises(RecipeError) as e:
        parse(variant, overrides, **tables)
    return e.value.one_line()


def variants(*bodies: str) -> str:
    """Variant "a" with the first body, then variants b, c, ... with the others."""
    return bodies[0] + "".join(f'\n[[variant]]\nname = "{chr(98 + i)}"\n{b}' for i, b in enumerate(bodies[1:]))


# ---------------------------------------------------------------- flat keys and steps say the same

SAME = [
    ("dense", "", "steps = []"),
    ("float32-explicit", 'quantize = "float32"', 'steps = [{ convert = "float32" }]'),
    ("int8", 'quantize = "int8"', 'steps = [{ convert = "int8" }]'),
    ("sparse50", 'prune = "unstructured"\ntarget_sparsity = 0.5\nfine_tune_epochs = 1',
     'steps = [{ sparsity = { method = "unstructured", target_sparsity = 0.5 } }]\nfine_tune_epochs = 1'),
    ("sparse80-pqat", 'prune = "unstructured"\nschedule = "polynomial"\ntarget_sparsity = 0.8\nfine_tune_epochs = 1\n'
                      'quantize = "pqat"\nqat_epochs = 0.25',
     'steps = [{ sparsity = { method = "unstructured", schedule = "polynomial", target_sparsity = 0.8 } },\n'
     '         { pqat = { epochs = 0.25 } }, { convert = "int8" }]\nfine_tune_epochs = 1'),
    ("2of4-int8", 'prune = "2:4"\nfine_tune_epochs = 0.5\nquantize = "int8"',
     'steps = [{ sparsity = { method = "2:4" } }, { convert = "int8" }]\nfine_tune_epochs = 0.5'),
    ("qat", 'quantize = "qat"\nqat_epochs = 1', 'steps = [{ qat = { epochs = 1 } }, { convert = "int8" }]'),
    ("channels-kd", 'prune = "channels"\nchannels = { ratio = 0.5, allocation = "sensitivity" }\nfine_tune_epochs = 1\n'
                    'lr_schedule = "cosine"\ndistill_alpha = 0.5\nquantize = "int8"',
     'steps = [{ channels = { allocation = "sensitivity", ratio = 0.5 } }, { convert = "int8" }]\n'
     'fine_tune_epochs = 1\nlr_schedule = "cosine"\ndistill_alpha = 0.5'),
    ("blocks-then-channels", 'prune = "channels"\nblocks = { count = 6 }\nchannels = { ratio = 0.5 }\n'
                             'fine_tune_epochs = 4\nquantize = "int8"',
     'steps = [{ blocks = { count = 6 } }, { channels = { ratio = 0.5 } }, { convert = "int8" }]\n'
     'fine_tune_epochs = 4'),
    ("channels-then-blocks", 'prune = "channels"\nblocks = { names = ["block_2"] }\nchannels = { ratio = 0.5 }\n'
                             'order = ["channels", "blocks"]',
     'steps = [{ channels = { ratio = 0.5 } }, { blocks = { names = ["block_2"] } }]'),
    ("blocks-alone", 'prune = "blocks"\nblocks = { count = 2, score = "output_l2" }\nfine_tune_epochs = 0',
     'steps = [{ blocks = { count = 2, score = "output_l2" } }]\nfine_tune_epochs = 0'),
    ("channels-sparsity-float16", 'prune = "unstructured"\nchannels = { ratio = 0.3 }\nskip = ["conv"]\n'
                                  'frozen = "keep"\nfrequency = 2\nbegin_step = 1\nend_step = 8\n'
                                  'pruning_summaries = true\nquantize = "float16"\nsparse_encoding = "on"',
     'steps = [{ channels = { ratio = 0.3 } },\n'
     '         { sparsity = { method = "unstructured", skip = ["conv"], frozen = "keep", frequency = 2, '
     'begin_step = 1, end_step = 8, pruning_summaries = true } },\n'
     '         { convert = { mode = "float16", sparse_encoding = "on" } }]'),
    ("array-of-tables", 'prune = "unstructured"\nchannels = { ratio = 0.3 }\ntarget_sparsity = 0.7\n'
                        'fine_tune_epochs = 2',
     'fine_tune_epochs = 2\n[[variant.steps]]\nchannels = { ratio = 0.3 }\n[[variant.steps]]\n'
     '[variant.steps.sparsity]\nmethod = "unstructured"\ntarget_sparsity = 0.7'),
]


@pytest.mark.parametrize("flat, steps", [pytest.param(f, s, id=i) for i, f, s in SAME])
def test_flat_keys_and_steps_give_equal_variants(flat, steps):
    a, b = parse(flat).variants[0], parse(steps).variants[0]
    assert a == b
    assert a.steps == b.steps and a.steps[-1].kind == "convert"
    assert flat_of(a.steps) == {k: getattr(a, k) for k in flat_of(a.steps)}  # the flat attributes are the steps'


def test_the_steps_are_typed_frozen_values_the_pipeline_can_iterate():
    v = parse('prune = "channels"\nblocks = { count = 6 }\nchannels = { ratio = 0.5, protect = ["stem"] }\n'
              'fine_tune_epochs = 4\nquantize = "int8"').variants[0]
    assert v.steps == (BlocksStep.of({"count": 6}), ChannelsStep.of({"protect": ["stem"], "ratio": 0.5}),
                       ConvertStep("int8"))
    assert [s.kind for s in v.steps] == ["blocks", "channels", "convert"]
    assert v.steps[1].settings == {"protect": ["stem"], "ratio": 0.5} == v.channels
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.steps[2].mode = "float16"
    assert len(set(v.steps)) == 3  # hashable
    pqat = parse('prune = "2:4"\nquantize = "pqat"').variants[0].steps
    assert pqat == (SparsityStep("2:4"), PqatStep(0.5), ConvertStep("int8")) and PqatStep(0.5) != QatStep(0.5)
    # the pipeline's own baseline spec, built directly, and the row it writes to report.json
    assert VariantSpec("baseline", sparse_encoding="off").steps == (ConvertStep("float32", "off"),)
    assert "steps" not in json.loads(json.dumps(v.__dict__))


@pytest.mark.parametrize("path", ["models/mobilenet_v2_fashion.toml", "benchmarks/recipes/headline.toml",
                                  "benchmarks/recipes/mnv2_fashion.toml"])
def test_shipped_recipes_read_the_same_written_as_steps(path):
    r = load_recipe(ROOT / path)
    data = tomllib.loads((ROOT / path).read_text())
    as_steps = [{"name": v.name, "steps": [s.to_toml() for s in v.steps],
                 **{k: raw[k] for k in SHARED_KEYS if k in raw}} for raw, v in zip(data["variant"], r.variants)]
    assert from_dict({**data, "variant": as_steps}).variants == r.variants
    assert [s.kind for s in load(ROOT / "models/mobilenet_v2_fashion.toml").variant("sparse80-pqat").steps] == \
        ["sparsity", "pqat", "convert"]


# ---------------------------------------------------------------- neighbour rules

S = '{ sparsity = { method = "unstructured" } }'
NEIGHBOURS = [
    ("convert-not-last", 'steps = [{ convert = "int8" }, { channels = { ratio = 0.5 } }]',
     "[variant a] steps: convert (step 1) must be the last step, but channels (step 2) follows it; move convert "
     "to the end: it writes the .tflite file."),
    ("convert-twice", 'steps = [{ convert = "int8" }, { convert = "float16" }]',
     "[variant a] steps: convert appears twice (steps 1 and 2); keep one convert step, the last: it writes the "
     ".tflite file."),
    ("channels-twice", 'steps = [{ channels = { ratio = 0.5 } }, { blocks = { count = 1 } }, { channels = { ratio = '
                       '0.2 } }]',
     "[variant a] steps: channels appears twice (steps 1 and 3); keep one channels step (iterative_steps = 2 in it "
     "prunes in two stages)."),
    ("blocks-twice", 'steps = [{ blocks = { count = 1 } }, { blocks = { count = 2 } }]',
     "[variant a] steps: blocks appears twice (steps 1 and 2); keep one blocks step (iterative_steps = 2 in it "
     "prunes in two stages)."),
    ("sparsity-twice", f"steps = [{S}, {S}]",
     "[variant a] steps: sparsity appears twice (steps 1 and 2); keep one sparsity step: the pipeline prunes with "
     "TF-MOT once."),
    ("qat-and-pqat", f'steps = [{S}, {{ pqat = {{}} }}, {{ qat = {{}} }}, {{ convert = "int8" }}]',
     "[variant a] steps: pqat (step 2) and qat (step 3) both train quantization-aware; keep one: pqat after a "
     "sparsity step, qat without one."),
    ("structural-after-sparsity", f"steps = [{S}, {{ blocks = {{ count = 2 }} }}]",
     "[variant a] steps: blocks (step 2) comes after sparsity (step 1); move blocks before sparsity: structural "
     "steps run first, then TF-MOT sparsity."),
    ("pqat-before-sparsity", f'steps = [{{ pqat = {{}} }}, {S}, {{ convert = "int8" }}]',
     "[variant a] steps: sparsity (step 2) comes after pqat (step 1); move pqat after every pruning step, just "
     "before convert."),
    ("pqat-without-sparsity", 'steps = [{ channels = { ratio = 0.5 } }, { pqat = {} }, { convert = "int8" }]',
     "[variant a] steps: pqat preserves TF-MOT sparsity, but no sparsity step comes before it; add a { sparsity = { "
     "method = \"unstructured\" } } step before it, or use { qat = {} }."),
    ("qat-after-sparsity", f'steps = [{S}, {{ qat = {{}} }}, {{ convert = "int8" }}]',
     "[variant a] steps: qat after sparsity would erase the sparsity; use { pqat = {} } (pruning-preserving QAT)."),
    ("qat-without-convert", "steps = [{ qat = {} }]",
     "[variant a] steps: qat must be followed by { convert = \"int8\" }; add it as the last step: it converts the "
     "quantization-aware model."),
    ("qat-into-float16", 'steps = [{ qat = {} }, { convert = "float16" }]',
     "[variant a] steps: qat trains for an int8 file, but convert is 'float16'; end with { convert = \"int8\" }, or "
     "drop qat for a float16 file."),
    ("sparse-encoding-int8", 'steps = [{ convert = { mode = "int8", sparse_encoding = "on" } }]',
     "[variant a] step 1 (convert): sparse_encoding does not apply: int8 files are always dense (sparse ones do not "
     "run under XNNPACK); remove it: it applies to float32 and float16 files."),
    ("sparsity-without-fine-tune", f"steps = [{S}]\nfine_tune_epochs = 0",
     "[variant a] the sparsity step needs fine_tune_epochs > 0; TF-MOT applies its masks during fine-tuning steps."),
    # ---- one step on its own
    ("steps-not-a-list", 'steps = "int8"',
     "[variant a] steps = 'int8' is not a list of steps; write e.g. steps = [{ channels = { ratio = 0.5 } }, { "
     "convert = \"int8\" }]."),
    ("step-not-a-table", 'steps = ["int8"]',
     "[variant a] step 1 is 'int8', not a table; write each step as a table of one kind, e.g. { convert = \"int8\" }."),
    ("step-two-kinds", 'steps = [{ blocks = { count = 2 }, convert = "int8" }]',
     "[variant a] step 1 names 2 kinds (blocks, convert); give each step a table of its own, e.g. [{ blocks = { "
     "count = 4 } }, { convert = \"int8\" }]."),
    ("step-kind-typo", "steps = [{ chanels = { ratio = 0.3 } }]",
     "[variant a] step 1: unknown step kind 'chanels'; did you mean 'channels'?"),
    ("channels-step-empty", "steps = [{ channels = {} }]",
     "[variant a] step 1 (channels) is empty; say what to remove, e.g. { channels = { ratio = 0.3 } }."),
    ("channels-step-ratio-range", "steps = [{ channels = { ratio = 1.5 } }]",
     "[variant a] step 1 (channels): channel ratio 1.5 is out of range; use a fraction in [0, 1), e.g. 0.4."),
    ("blocks-step-unknown-key", "steps = [{ blocks = { cout = 2 } }]",
     "unknown key 'cout' in [variant a] step 1 (blocks); did you mean 'count'?"),
    ("sparsity-without-method", "steps = [{ sparsity = { target_sparsity = 0.5 } }]",
     "[variant a] step 1 (sparsity) needs a method; add method = \"unstructured\" or method = \"2:4\"."),
    ("sparsity-method-unknown", 'steps = [{ sparsity = { method = "random" } }]',
     "[variant a] step 1 (sparsity): method = 'random' is not supported; use one of: unstructured, 2:4."),
    ("sparsity-target-range", 'steps = [{ sparsity = { method = "unstructured", target_sparsity = 1.5 } }]',
     "[variant a] step 1 (sparsity): target_sparsity = 1.5 is outside [0, 1); sparsity is the fraction of weights "
     "set to zero: use e.g. 0.5 for half."),
    ("sparsity-wrong-type", 'steps = [{ sparsity = { method = "unstructured", frequency = "often" } }]',
     "[variant a] step 1 (sparsity): frequency = 'often' has the wrong type; expected int | None; fix the value in "
     "the recipe."),
    ("qat-epochs-negative", 'steps = [{ qat = { epochs = -1 } }, { convert = "int8" }]',
     "[variant a] step 1 (qat): epochs = -1.0 must not be negative; use 0 or more."),
    ("convert-mode-unknown", 'steps = [{ convert = "int4" }]',
     "[variant a] step 1 (convert): mode = 'int4' is not supported; use one of: float32, float16, dynamic, int8."),
    ("convert-table-without-mode", 'steps = [{ convert = { sparse_encoding = "on" } }]',
     "[variant a] step 1 (convert) needs a mode; write e.g. { convert = \"int8\" } or { convert = { mode = "
     "\"float32\", sparse_encoding = \"on\" } }."),
    ("steps-key-typo", "stpes = []", "unknown key 'stpes' in [variant a]; did you mean 'steps'?"),
]


@pytest.mark.parametrize("variant, line", [pytest.param(v, e, id=i) for i, v, e in NEIGHBOURS])
def test_a_step_and_its_neighbours(variant, line):
    assert error(variant) == line


def test_every_order_the_pipeline_runs_is_accepted():
    every = (f'steps = [{{ channels = {{ ratio = 0.5 }} }}, {{ blocks = {{ count = 2 }} }}, {S}, {{ pqat = {{}} }}, '
             '{ convert = "int8" }]')
    v = parse(every).variants[0]
    assert [s.kind for s in v.steps] == ["channels", "blocks", "sparsity", "pqat", "convert"]
    assert (v.order, v.prune, v.quantize) == (["channels", "blocks"], "unstructured", "pqat")


# ---------------------------------------------------------------- keys that do not apply

NOT_APPLICABLE = [
    # ---- flat variant keys
    ("sparsity-key-without-sparsity", {"variant": "target_sparsity = 0.6"},
     "[variant a] target_sparsity does not apply: prune = 'none' makes no TF-MOT sparsity; remove it, or set prune = "
     "'unstructured' or '2:4'."),
    ("schedule-on-channels", {"variant": 'prune = "channels"\nchannels = { ratio = 0.3 }\nschedule = "polynomial"'},
     "[variant a] schedule does not apply: prune = 'channels' makes no TF-MOT sparsity; remove it, or set prune = "
     "'unstructured' or '2:4'."),
    ("frozen-on-channels", {"variant": 'prune = "channels"\nchannels = { ratio = 0.3 }\nfrozen = "keep"'},
     "[variant a] frozen does not apply: prune = 'channels' makes no TF-MOT sparsity; remove it, or set prune = "
     "'unstructured' or '2:4'."),
    ("target-on-2of4", {"variant": 'prune = "2:4"\ntarget_sparsity = 0.7'},
     "[variant a] target_sparsity does not apply: 2:4 sparsity is fixed: two of every four weights zero, from "
     "begin_step; remove it."),
    ("initial-with-constant", {"variant": 'prune = "unstructured"\ninitial_sparsity = 0.1'},
     "[variant a] initial_sparsity does not apply: schedule = 'constant' holds target_sparsity from begin_step; "
     "remove it, or set schedule = 'polynomial'."),
    ("qat-epochs-on-int8", {"variant": 'quantize = "int8"\nqat_epochs = 1'},
     "[variant a] qat_epochs does not apply: quantize = 'int8' trains nothing quantization-aware; remove it, or set "
     "quantize = 'qat' or 'pqat'."),
    ("sparse-encoding-on-dynamic", {"variant": 'quantize = "dynamic"\nsparse_encoding = "off"'},
     "[variant a] sparse_encoding does not apply: quantize = 'dynamic' files are always dense (sparse dynamic-range "
     "files do not run under XNNPACK); remove it: it applies to float32 and float16 files."),
    ("order-with-one-table", {"variant": 'prune = "channels"\nchannels = { ratio = 0.3 }\norder = ["channels"]'},
     "[variant a] order does not apply: it orders a blocks and a channels table, and the variant has only a channels "
     "table; remove it."),
    ("fine-tune-epochs-on-int8", {"variant": 'quantize = "int8"\nfine_tune_epochs = 2'},
     "[variant a] fine_tune_epochs does not apply: the variant prunes nothing (no channels, blocks or TF-MOT "
     "sparsity); remove it."),
    ("learning-rate-on-int8", {"variant": 'quantize = "int8"\nlearning_rate = 0.001'},
     "[variant a] learning_rate does not apply: nothing in the variant fine-tunes; remove it."),
    ("distill-on-sparsity", {"variant": 'prune = "unstructured"\ndistill = false'},
     "[variant a] distill does not apply: it shapes the recovery fine-tune of a channels or blocks step, and the "
     "variant has none (TF-MOT's and QAT's fine-tunes do not read it); remove it."),
    ("lr-schedule-on-sparsity", {"variant": 'prune = "unstructured"\nlr_schedule = "cosine"'},
     "[variant a] lr_schedule does not apply: it shapes the recovery fine-tune of a channels or blocks step, and the "
     "variant has none (TF-MOT's and QAT's fine-tunes do not read it); remove it."),
    ("augment-without-fine-tune", {"variant": 'prune = "channels"\nchannels = { ratio = 0.3 }\nfine_tune_epochs = 0\n'
                                              "augment = true"},
     "[variant a] augment does not apply: fine_tune_epochs = 0, so the structural steps are not fine-tuned; remove "
     "it, or set fine_tune_epochs > 0."),
    ("distill-alpha-without-distill", {"variant": 'prune = "channels"\nchannels = { ratio = 0.3 }\ndistill = false\n'
                                                  "distill_alpha = 0.5"},
     "[variant a] distill_alpha does not apply: distill = false; remove it, or set distill = true."),
    ("channels-with-prune-none", {"variant": "channels = { ratio = 0.3 }"},
     "[variant a] has a channels table but prune = 'none'; set prune = 'channels' (a blocks table still runs, in "
     "order), or remove the channels table."),
    ("channels-with-prune-blocks", {"variant": 'prune = "blocks"\nblocks = { count = 1 }\nchannels = { ratio = 0.3 }'},
     "[variant a] has a channels table but prune = 'blocks'; set prune = 'channels' (a blocks table still runs, in "
     "order), or remove the channels table."),
    ("blocks-with-prune-none", {"variant": "blocks = { count = 1 }"},
     "[variant a] has a blocks table but prune = 'none'; set prune = 'blocks', or remove the blocks table."),
    ("pqat-without-sparsity", {"variant": 'quantize = "pqat"'},
     "[variant a] quantize = 'pqat' preserves TF-MOT sparsity, but prune = 'none' makes none; use quantize = 'qat', "
     "or prune = 'unstructured' or '2:4'."),
    ("empty-channels-table", {"variant": 'prune = "channels"\nchannels = {}'},
     "[variant a] channels = {} is empty; say what to remove, e.g. channels = { ratio = 0.3 }, or leave channels out."),
    # ---- flat keys beside steps
    ("quantize-beside-steps", {"variant": 'steps = [{ convert = "int8" }]\nquantize = "int8"'},
     "[variant a] quantize does not apply: the variant lists steps, and this setting belongs in one; write it in its "
     "step: { convert = \"int8\" } (after { qat = {} } or { pqat = {} } for QAT)."),
    ("target-beside-steps", {"variant": f"steps = [{S}]\ntarget_sparsity = 0.8"},
     "[variant a] target_sparsity does not apply: the variant lists steps, and this setting belongs in one; write it "
     "in its step: { sparsity = { method = \"unstructured\", target_sparsity = ... } }."),
    ("order-beside-steps", {"variant": 'steps = []\norder = ["blocks", "channels"]'},
     "[variant a] order does not apply: the steps run in the order they are listed; remove it, and list the steps in "
     "order."),
    ("target-in-2of4-step", {"variant": 'steps = [{ sparsity = { method = "2:4", target_sparsity = 0.5 } }]'},
     "[variant a] step 1 (sparsity): target_sparsity does not apply: 2:4 sparsity is fixed: two of every four weights "
     "zero, from begin_step; remove it."),
    ("distill-beside-convert-only", {"variant": 'steps = [{ convert = "int8" }]\ndistill = false'},
     "[variant a] distill does not apply: it shapes the recovery fine-tune of a channels or blocks step, and the "
     "variant has none (TF-MOT's and QAT's fine-tunes do not read it); remove it."),
    # ---- the other tables
    ("baseline-batch-size-untrained", {"baseline": "epochs = 0\nbatch_size = 64"},
     "[baseline] batch_size does not apply: the baseline is not trained (epochs = 0); remove it, or set epochs > 0 to "
     "train the baseline."),
    ("baseline-cache-model-file", {"baseline": "cache = false"},
     "[baseline] cache does not apply: the baseline of a model file is not trained unless epochs is set; remove it, "
     "or set epochs > 0 to train the baseline."),
    ("baseline-warmup-constant", {"baseline": "epochs = 1\nwarmup_epochs = 1"},
     "[baseline] warmup_epochs does not apply: it warms up into the cosine schedule, and lr_schedule = 'constant'; "
     "remove it, or set lr_schedule = 'cosine'."),
    ("baseline-optimizer-unused", {"baseline": 'epochs = 0\noptimizer = "sgd"', "variant": 'quantize = "int8"'},
     "[baseline] optimizer does not apply: the baseline is not trained (epochs = 0), and no variant fine-tunes a "
     "channels or blocks step (TF-MOT's and QAT's fine-tunes use Adam); remove it."),
    ("baseline-augment-uninherited", {"baseline": "augment = true",
                                      "variant": 'prune = "channels"\nchannels = { ratio = 0.3 }\naugment = false'},
     "[baseline] augment does not apply: the baseline of a model file is not trained unless epochs is set, and no "
     "variant's recovery fine-tune inherits it; remove it, or set it on the variants that fine-tune."),
    ("baseline-reference-alone", {"baseline": 'reference = "a paper"'},
     "[baseline] reference does not apply: it says where reference_accuracy was measured, and there is none; add "
     "reference_accuracy (what the model reaches trained to convergence), or remove reference."),
    ("baseline-reference-accuracy-percent", {"baseline": "reference_accuracy = 92.1"},
     "[baseline] reference_accuracy = 92.1 is outside (0, 1]; give it as a fraction, e.g. 0.92."),
    ("model-dropout-mobilenet-v2", {"model": ARCH + "\ndropout = 0.2"},
     "[model] dropout does not apply: keras.applications' MobileNetV2 has no dropout layer; remove it, or use "
     "mobilenet_v1 or a mobilenet_v3 architecture."),
    ("data-representative-count-unused", {"data": 'kind = "npz"\npath = "data.npz"\nrepresentative_count = 8',
                                          "variant": 'quantize = "float16"'},
     "[data] representative_count does not apply: no variant converts to int8 by calibration on representative "
     "images; remove it."),
]


@pytest.mark.parametrize("tables, line", [pytest.param(t, e, id=i) for i, t, e in NOT_APPLICABLE])
def test_a_key_that_does_not_apply_is_refused(tables, line):
    assert error(**tables) == line


def test_keys_that_apply_are_kept():
    r = parse(variants('prune = "channels"\nchannels = { ratio = 0.3 }\ndistill = false\nlr_schedule = "cosine"',
                       'quantize = "int8"'),
              baseline="augment = true\noptimizer = \"sgd\"", data='kind = "npz"\npath = "data.npz"\n'
                                                                 "representative_count = 8")
    assert (r.variants[0].distill, r.variants[0].lr_schedule, r.baseline.optimizer) == (False, "cosine", "sgd")
    r = parse('prune = "2:4"\nquantize = "pqat"', model=ARCH.replace("v2", "v3_small") + "\ndropout = 0.2",
              data='kind = "npz"\npath = "data.npz"\nrepresentative_count = 8', bench="input_shapes = [[64, 64, 1]]")
    assert r.model.dropout == 0.2 and r.data.representative_count == 8  # int8 PTQ at 64x64 for the pqat variant


# ---------------------------------------------------------------- what the command line changes

def test_an_override_may_leave_keys_of_the_file_idle():
    r = parse(variants('quantize = "int8"', 'prune = "unstructured"'), ["variant.fine_tune_epochs=0.5"])
    assert [v.fine_tune_epochs for v in r.variants] == [1.0, 0.5]  # set where it applies, the default elsewhere
    r = parse("", ["baseline.epochs=0"], baseline="epochs = 2\nbatch_size = 64")
    assert r.baseline.epochs == 0
    r = parse('prune = "unstructured"\nquantize = "pqat"\nqat_epochs = 1', ["variant.a.quantize=int8"])
    assert r.variants[0].steps == (SparsityStep(), ConvertStep("int8")) and r.variants[0].qat_epochs == 0.5
    r = parse('prune = "unstructured"\ntarget_sparsity = 0.8', ["variant.a.steps=[{convert = 'float16'}]"])
    assert r.variants[0] == VariantSpec("a", quantize="float16")
    r = parse('prune = "channels"\nchannels = { ratio = 0.3 }', ["variant.a.channels.ratio=0.5"])
    assert r.variants[0].channels == {"ratio": 0.5}


def test_an_override_that_does_not_apply_is_refused():
    assert error('quantize = "int8"', ["variant.distill=false"]) == (
        "override 'variant.distill=false' applies to no variant of the recipe ([variant a] distill does not apply: it "
        "shapes the recovery fine-tune of a channels or blocks step, and the variant has none (TF-MOT's and QAT's "
        "fine-tunes do not read it)); drop the override.")
    assert error('quantize = "int8"', ["variant.a.qat_epochs=2"]) == (
        "[variant a] qat_epochs does not apply: quantize = 'int8' trains nothing quantization-aware; remove it, or set "
        "quantize = 'qat' or 'pqat'.")
    assert error("", ["baseline.epochs=0", "baseline.cache=false"]) == (
        "[baseline] cache does not apply: the baseline is not trained (epochs = 0); remove it, or set epochs > 0 to "
        "train the baseline.")


# ---------------------------------------------------------------- through the CLI

CLI_CASES = [
    pytest.param(["run", "bad.toml"], {"bad.toml": recipe(variant='steps = [{ convert = "int8" }, { blocks = { count '
                                                                  '= 2 } }]')},
                 "[variant a] steps: convert (step 1) must be the last step, but blocks (step 2) follows it; move "
                 "convert to the end: it writes the .tflite file.", id="convert-not-last"),
    pytest.param(["run", "bad.toml"], {"bad.toml": recipe(variant='quantize = "int8"\ntarget_sparsity = 0.5')},
                 "[variant a] target_sparsity does not apply: prune = 'none' makes no TF-MOT sparsity; remove it, or "
                 "set prune = 'unstructured' or '2:4'.", id="flat-key-does-not-apply"),
    pytest.param(["run", "bad.toml", "--set", "variant.distill=false"], {"bad.toml": recipe()},
                 "override 'variant.distill=false' applies to no variant of the recipe ([variant a] distill does not "
                 "apply: it shapes the recovery fine-tune of a channels or blocks step, and the variant has none "
                 "(TF-MOT's and QAT's fine-tunes do not read it)); drop the override.", id="override-applies-nowhere"),
]


@pytest.mark.parametrize("args, files, line", CLI_CASES)
def test_a_bad_recipe_through_the_cli(args, files, line, assets, tmp_path, monkeypatch, capfd):  # noqa: F811
    for target in HEAVY:
        def stop(*a, _name=target, **k):
            raise HeavyWorkStarted(f"{_name} started: the recipe must be refused before it")

        monkeypatch.setattr(target, stop)
    monkeypatch.delenv("EDGEPRUNE_DEBUG", raising=False)
    populate(tmp_path, assets, files)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    capfd.readouterr()
    code, out, err = invoke(args)
    leaked = capfd.readouterr()
    assert (code, out, leaked.out, leaked.err) == (2, "", "", ""), (code, out, err, leaked)
    assert err == f"error: {line}\n"
    assert snapshot(tmp_path) == before


"""Bad input through the real CLI, one row per case: exit code 2, exactly one stderr line (the
`error: ...` line given, which names the fix), nothing else on stdout or stderr, and the working
folder unchanged to the byte and the permission bit: nothing half-written, no input overwritten,
no `runs/` left behind.

Every case runs `edgeprune.cli.main`, the console script's entry point, in this process (click's
CliRunner isolates stdin, stdout and stderr; capfd also catches anything written to the file
descriptors), with the working folder a fresh tmp_path holding the same inputs. Every case must
fail before any training, conversion or baseline preparation starts: those functions are
replaced by one that stops the test."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner


class HeavyWorkStarted(BaseException):
    """Raised by the replaced heavy functions; a BaseException so that the CLI cannot turn it
    into an error line."""


HEAVY = ["edgeprune.train.fit", "edgeprune.export.convert", "edgeprune.pipeline.prepare_baseline",
         "edgeprune.quantize.quantize_aware", "edgeprune.sparsity.prune", "edgeprune.channels.prune_channels"]


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """The inputs every case starts from: an untrained tiny CNN (16x16x1 -> 10 classes) as .keras,
    a truncated .h5 of it, a dataset that fits it, and a pipeline run folder."""
    import core_fixtures
    import report_builders

    d = tmp_path_factory.mktemp("bad_input_assets")
    model = core_fixtures.build_tiny()
    model.save(d / "tiny.keras")
    model.save(d / "full.h5")
    h5 = (d / "full.h5").read_bytes()
    (d / "truncated.h5").write_bytes(h5[: len(h5) // 2])
    (d / "full.h5").unlink()
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x_train=rng.integers(0, 255, (20, 16, 16), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 255, (10, 16, 16), dtype=np.uint8), y_test=np.arange(10))
    report_builders.write_pipeline(d / "run1", report_builders.pipeline_report())
    return d


def recipe(top="", model='path = "tiny.keras"', data='kind = "npz"\npath = "data.npz"', baseline="", bench="",
           variant="", name='"r"'):
    return (f"name = {name}\n{top}\n[model]\n{model}\n[data]\n{data}\n[baseline]\n{baseline}\n[bench]\n{bench}\n"
            f"[[variant]]\nname = \"a\"\n{variant}\n")


VALID = recipe()
ARCH = 'architecture = "mobilenet_v2"\ninput_shape = [32, 32, 1]\nclasses = 10'
INVENTORY = '[[device]]\nname = "pi"\ntarget = "ssh:pi@pi5.local"\n'
HELP = "(see 'edgeprune {} --help')"


def npz(**arrays):
    """An .npz writer: by default arrays that fit the tiny model (16x16 images, 10 classes); a keyword
    replaces one array, None leaves it out."""

    def write(path: Path):
        rng = np.random.default_rng(1)
        defaults = {"x_train": rng.integers(0, 255, (20, 16, 16), dtype=np.uint8), "y_train": np.arange(20) % 10,
                    "x_test": rng.integers(0, 255, (10, 16, 16), dtype=np.uint8), "y_test": np.arange(10)}
        out = {k: v for k, v in {**defaults, **arrays}.items() if v is not None}
        np.savez(path, **out)

    return write


def keras_zip_without_config(path: Path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "a zip file, but no model in it")


def weights_only_h5(path: Path):
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.zeros(3))


def folder(*names):
    def make(path: Path):
        path.mkdir()
        for n in names:
            (path / n).mkdir(parents=True)

    return make


def case(id_, args, error, files=None, stdout=""):
    """One row: the argv, the files to create first, the error line after "error: " ({tmp} is the
    working folder; a compiled pattern must match it whole), and what stdout must hold."""
    return pytest.param(args, files or {}, error, stdout, id=id_)


CASES = [
    # ---- recipes: types, ranges, choices, fields that do not apply
    case("channels-ratio-not-a-number", ["run", "r.toml"],
         "[variant a] channels: ratio = 'big' has the wrong type; expected float; fix the value in the recipe.",
         {"r.toml": recipe(variant='prune = "channels"\nchannels = { ratio = "big" }')}),
    case("channels-protect-not-a-list", ["run", "r.toml"],
         "[variant a] channels: protect = 5 has the wrong type; expected str | list[str]; fix the value in the "
         "recipe.",
         {"r.toml": recipe(variant='prune = "channels"\nchannels = { ratio = 0.3, protect = 5 }')}),
    case("channels-round-to-zero", ["run", "r.toml"],
         "[variant a] channels: round_to 0 is not a positive integer; use 1 to disable rounding, or 8.",
         {"r.toml": recipe(variant='prune = "channels"\nchannels = { ratio = 0.3, round_to = 0 }')}),
    case("seed-not-an-integer", ["run", "r.toml"],
         "[recipe] seed = 'abc' has the wrong type; expected int; fix the value in the recipe.",
         {"r.toml": recipe(top='seed = "abc"')}),
    case("seed-negative", ["run", "r.toml"],
         "[recipe] seed = -1 is outside [0, 4294967295]; use e.g. seed = 0.",
         {"r.toml": recipe(top="seed = -1")}),
    case("fine-tune-batch-size-zero", ["run", "r.toml"],
         "[recipe] fine_tune_batch_size = 0 must be at least 1; use e.g. 256.",
         {"r.toml": recipe(top="fine_tune_batch_size = 0")}),
    case("strategy-not-a-string", ["run", "r.toml"],
         "[recipe] strategy = 2 has the wrong type; expected str; fix the value in the recipe.",
         {"r.toml": recipe(top="strategy = 2")}),
    case("strategy-multi-worker-without-tf-config", ["run", "r.toml"],
         "strategy 'multi_worker' needs the TF_CONFIG environment variable; set TF_CONFIG='{{\"cluster\": "
         "{{\"worker\": [...]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}}' on every machine.",
         {"r.toml": recipe(top='strategy = "multi_worker"')}),
    case("strategy-unknown", ["run", "r.toml"],
         "[recipe] strategy = 'tpu' is not supported; use one of: default, mirrored, multi_worker.",
         {"r.toml": recipe(top='strategy = "tpu"')}),
    case("name-escapes-runs", ["run", "r.toml"],
         "the recipe name '../escape' is unfit for a folder name; use letters, digits, '-', '_' and '.', not only "
         "dots: it names the default run folder runs/NAME.",
         {"r.toml": recipe(name='"../escape"')}),
    case("name-dot-dot", ["run", "r.toml"],
         "the recipe name '..' is unfit for a folder name; use letters, digits, '-', '_' and '.', not only dots: "
         "it names the default run folder runs/NAME.",
         {"r.toml": recipe(name='".."')}),
    case("name-not-a-string", ["run", "r.toml"],
         "[recipe] name = 5 has the wrong type; expected str; fix the value in the recipe.",
         {"r.toml": recipe(name="5")}),
    case("baseline-batch-size-zero", ["run", "r.toml"],
         "[baseline] batch_size = 0 must be at least 1; use e.g. 256.",
         {"r.toml": recipe(baseline="batch_size = 0")}),
    case("baseline-epochs-negative", ["run", "r.toml"],
         "[baseline] epochs = -3.0 must not be negative; use 0 or more.",
         {"r.toml": recipe(baseline="epochs = -3")}),
    case("baseline-epochs-infinite", ["run", "r.toml"],
         "[baseline] epochs = inf is not a finite number; use 0 or more.",
         {"r.toml": recipe(baseline="epochs = inf")}),
    case("baseline-epochs-string", ["run", "r.toml"],
         "[baseline] epochs = '3' has the wrong type; expected float | None; fix the value in the recipe.",
         {"r.toml": recipe(baseline='epochs = "3"')}),
    case("baseline-learning-rate-negative", ["run", "r.toml"],
         "[baseline] learning_rate = -1.0 must be positive; use e.g. 0.001.",
         {"r.toml": recipe(baseline="learning_rate = -1")}),
    case("baseline-optimizer-unknown", ["run", "r.toml"],
         "[baseline] optimizer = 'nosuchopt' is not supported; use one of: adam, sgd.",
         {"r.toml": recipe(baseline='optimizer = "nosuchopt"')}),
    case("baseline-strategy-does-not-apply", ["run", "r.toml"],
         "[baseline] strategy does not apply: the strategy is the whole run's; move it to the top of the recipe: "
         "strategy = 'mirrored'.",
         {"r.toml": recipe(baseline='strategy = "mirrored"')}),
    case("bench-runs-negative", ["run", "r.toml"],
         "[bench] runs = -5 must be at least 1; use e.g. 50.",
         {"r.toml": recipe(bench="runs = -5")}),
    case("bench-threads-zero", ["run", "r.toml"],
         "[bench] threads = [0] must list thread counts of 1 or more; use e.g. threads = [1, 2].",
         {"r.toml": recipe(bench="threads = [0]")}),
    case("bench-threads-empty", ["run", "r.toml"],
         "[bench] threads = [] must list thread counts of 1 or more; use e.g. threads = [1, 2].",
         {"r.toml": recipe(bench="threads = []")}),
    case("bench-warmup-negative", ["run", "r.toml"],
         "[bench] warmup = -1 must not be negative; use e.g. 5.",
         {"r.toml": recipe(bench="warmup = -1")}),
    case("bench-min-secs-negative", ["run", "r.toml"],
         "[bench] min_secs = -0.5 must not be negative; use e.g. 0.5.",
         {"r.toml": recipe(bench="min_secs = -0.5")}),
    case("bench-unknown-key", ["run", "r.toml"],
         "unknown key 'thread' in [bench]; did you mean 'threads'?",
         {"r.toml": recipe(bench="thread = [1]")}),
    case("model-alpha-zero", ["run", "r.toml"],
         "[model] alpha = 0.0 must be positive; use e.g. 0.35 or 1.0.",
         {"r.toml": recipe(model=ARCH + "\nalpha = 0")}),
    case("model-input-shape-two-values", ["run", "r.toml"],
         "[model] input_shape = [32, 32] is not (height, width, channels) of positive integers; use e.g. "
         "input_shape = [32, 32, 1].",
         {"r.toml": recipe(model='architecture = "mobilenet_v2"\ninput_shape = [32, 32]')}),
    case("model-input-shape-zero", ["run", "r.toml"],
         "[model] input_shape = [32, 0, 1] is not (height, width, channels) of positive integers; use e.g. "
         "input_shape = [32, 32, 1].",
         {"r.toml": recipe(model='architecture = "mobilenet_v2"\ninput_shape = [32, 0, 1]')}),
    case("model-classes-one", ["run", "r.toml"],
         "[model] classes = 1 must be at least 2; a classifier needs two classes or more.",
         {"r.toml": recipe(model='architecture = "mobilenet_v2"\nclasses = 1')}),
    case("model-dropout-one", ["run", "r.toml"],
         "[model] dropout = 1.0 is outside [0, 1); use e.g. 0.2.",
         {"r.toml": recipe(model=ARCH + "\ndropout = 1")}),
    case("model-bn-momentum-one", ["run", "r.toml"],
         "[model] bn_momentum = 1.0 is outside (0, 1); use e.g. 0.9.",
         {"r.toml": recipe(model=ARCH + "\nbn_momentum = 1.0")}),
    case("model-architecture-unknown", ["run", "r.toml"],
         "[model] architecture = 'resnet9' is not supported; use one of: mobilenet_v1, mobilenet_v2, "
         "mobilenet_v3_small, mobilenet_v3_large.",
         {"r.toml": recipe(model='architecture = "resnet9"')}),
    case("model-alpha-with-a-model-file", ["run", "r.toml"],
         "[model] alpha applies only to a built-in architecture, not to a model file; remove it: the file fixes "
         "the model's width, input shape and classes.",
         {"r.toml": recipe(model='path = "tiny.keras"\nalpha = 0.5')}),
    case("model-path-and-architecture", ["run", "r.toml"],
         "[model] needs exactly one of architecture or path; set architecture = \"mobilenet_v2\" or path = "
         "\"model.keras\".",
         {"r.toml": recipe(model='path = "tiny.keras"\narchitecture = "mobilenet_v2"')}),
    case("data-kind-unknown", ["run", "r.toml"],
         "[data] kind = 'csv' is not supported; use one of: fashion_mnist, npz, image_folder.",
         {"r.toml": recipe(data='kind = "csv"')}),
    case("data-npz-without-path", ["run", "r.toml"],
         "[data] kind = 'npz' needs a path; set path = \"file.npz\" in [data].",
         {"r.toml": recipe(data='kind = "npz"')}),
    case("data-normalization-unknown", ["run", "r.toml"],
         "[data] normalization = 'zscore' is not supported; use one of: 0_1, -1_1, none.",
         {"r.toml": recipe(data='kind = "npz"\npath = "data.npz"\nnormalization = "zscore"')}),
    case("data-representative-count-zero", ["run", "r.toml"],
         "[data] representative_count = 0 must be at least 1; use e.g. 200.",
         {"r.toml": recipe(data='kind = "npz"\npath = "data.npz"\nrepresentative_count = 0')}),
    case("data-train-limit-zero", ["run", "r.toml"],
         "[data] train_limit = 0 must be at least 1; leave it out to use every image.",
         {"r.toml": recipe(data='kind = "npz"\npath = "data.npz"\ntrain_limit = 0')}),
    case("data-test-limit-negative", ["run", "r.toml"],
         "[data] test_limit = -4 must be at least 1; leave it out to use every image.",
         {"r.toml": recipe(data='kind = "npz"\npath = "data.npz"\ntest_limit = -4')}),
    case("data-std-zero", ["run", "r.toml"],
         "[data] std = [0.0] must hold positive numbers; use the per-channel standard deviation, e.g. std = [0.5].",
         {"r.toml": recipe(data='kind = "npz"\npath = "data.npz"\nstd = [0.0]')}),
    case("data-file-missing", ["run", "r.toml"],
         "dataset file not found: gone.npz; check the path.",
         {"r.toml": recipe(data='kind = "npz"\npath = "gone.npz"')}),
    case("variant-learning-rate-zero", ["run", "r.toml"],
         "[variant a] learning_rate = 0.0 must be positive; use e.g. 0.0005.",
         {"r.toml": recipe(variant="learning_rate = 0")}),
    case("variant-sparse-encoding-unknown", ["run", "r.toml"],
         "[variant a] sparse_encoding = 'maybe' is not supported; use one of: auto, on, off.",
         {"r.toml": recipe(variant='sparse_encoding = "maybe"')}),
    case("variant-fine-tune-epochs-negative", ["run", "r.toml"],
         "[variant a] fine_tune_epochs = -1.0 must not be negative; use 0 or more.",
         {"r.toml": recipe(variant="fine_tune_epochs = -1")}),
    case("variant-duplicate-name", ["run", "r.toml"],
         "two variants are named 'a'; give each variant its own name.",
         {"r.toml": recipe(variant='[[variant]]\nname = "a"')}),
    case("variant-name-escapes", ["run", "r.toml"],
         "variant name '..' is unfit for a file name; use letters, digits, '-', '_' and '.', not only dots.",
         {"r.toml": recipe(variant='[[variant]]\nname = ".."')}),
    case("unknown-top-level-key", ["run", "r.toml"],
         "unknown key 'seeed' at the top of the recipe; did you mean 'seed'?",
         {"r.toml": recipe(top="seeed = 1")}),
    case("toml-syntax-error", ["run", "r.toml"],
         "r.toml is not valid TOML: invalid value at line 2, column 5; fix the syntax at line 2, column 5.",
         {"r.toml": 'name = "r"\nx = = 1\n'}),
    case("recipe-not-text", ["run", "r.toml"],
         "r.toml is not a text file (byte 0x89 at offset 0 is not UTF-8); give a TOML recipe, e.g. "
         "models/mobilenet_v2_fashion.toml.",
         {"r.toml": b"\x89PNG\r\n\x1a\n\x00\x00"}),
    case("recipe-missing", ["run", "nope.toml"],
         "recipe not found: nope.toml; give the path of a .toml recipe, e.g. models/mobilenet_v2_fashion.toml."),
    case("recipe-is-a-folder", ["run", "d"],
         "Invalid value for 'RECIPE': File 'd' is a directory. " + HELP.format("run"),
         {"d": folder()}),
    case("model-missing-no-out", ["run", "r.toml"],
         "model file not found: {tmp}/nope.keras; check the path, or name a built-in architecture.",
         {"r.toml": recipe(model='path = "nope.keras"')}),
    case("model-path-is-a-folder", ["run", "r.toml"],
         "d is a folder but not a SavedModel (no saved_model.pb); check the path.",
         {"r.toml": recipe(model='path = "d"'), "d": folder()}),
    case("model-not-a-model", ["run", "r.toml"],
         "notes.keras is not a readable .keras file (BadZipFile: File is not a zip file); the file is corrupt or "
         "truncated: save the model again.",
         {"r.toml": recipe(model='path = "notes.keras"'), "notes.keras": "just some notes"}),
    # ---- run: overrides and options
    case("set-without-equals", ["run", "r.toml", "--set", "baseline.epochs"],
         "override 'baseline.epochs' has no '='; write --set key.path=value, e.g. --set baseline.epochs=1.",
         {"r.toml": VALID}),
    case("set-batch-size-zero", ["run", "r.toml", "--set", "baseline.batch_size=0"],
         "[baseline] batch_size = 0 must be at least 1; use e.g. 256.", {"r.toml": VALID}),
    case("set-seed-bare-word", ["run", "r.toml", "--set", "seed=abc"],
         "[recipe] seed = 'abc' has the wrong type; expected int; fix the value in the recipe.", {"r.toml": VALID}),
    case("set-unknown-variant", ["run", "r.toml", "--set", "variant.nope.quantize=int8"],
         "override 'variant.nope.quantize=int8' names no variant of the recipe; choose one of: a.",
         {"r.toml": VALID}),
    case("set-through-a-value", ["run", "r.toml", "--set", "name.x=1"],
         "override 'name.x=1': name is not a table; check the key path.", {"r.toml": VALID}),
    case("set-variant-quantize-unknown", ["run", "r.toml", "--set", "variant.quantize=int4"],
         "[variant a] quantize = 'int4' is not supported; use one of: float32, float16, dynamic, int8, pqat, qat.",
         {"r.toml": VALID}),
    case("set-model-missing", ["run", "r.toml", "--set", "model.path='gone.keras'"],
         "model file not found: {tmp}/gone.keras; check the path, or name a built-in architecture.",
         {"r.toml": VALID}),
    case("variants-unknown", ["run", "r.toml", "--variants", "b"],
         "the recipe has no variant 'b'; choose one of: a.", {"r.toml": VALID}),
    case("threads-zero", ["run", "r.toml", "--threads", "0"],
         "Invalid value for '--threads': '0': thread counts must be 1 or more " + HELP.format("run"),
         {"r.toml": VALID}),
    case("epochs-negative", ["run", "r.toml", "--epochs", "-1"],
         "Invalid value for '--epochs': -1.0 is not in the range x>=0. " + HELP.format("run"), {"r.toml": VALID}),
    case("target-malformed", ["run", "r.toml", "--target", "phone"],
         "'phone' is not a target; use local, adb:SERIAL, ssh:[user@]host[:port] or a device name from "
         "--inventory.", {"r.toml": VALID}),
    case("out-is-a-file", ["run", "r.toml", "--out", "notes.txt"],
         "Invalid value for '--out' / '-o': Directory 'notes.txt' is a file. " + HELP.format("run"),
         {"r.toml": VALID, "notes.txt": "keep me"}),
    case("out-holds-other-files", ["run", "r.toml", "--out", "mine"],
         "the output folder mine holds files that are not an edgeprune run; choose an empty or new folder with "
         "--out.", {"r.toml": VALID, "mine/notes.txt": "keep me"}),
    case("out-holds-a-run", ["run", "r.toml", "--out", "run1"],
         "the output folder run1 already holds a run; pass --force to replace it, or choose another --out.",
         {"r.toml": VALID}),
    case("out-holds-the-recipe", ["run", "run1/r.toml", "--out", "run1", "--force"],
         "the output folder run1 holds an input of the run (run1/r.toml); choose another --out.",
         {"run1/r.toml": recipe(model='path = "../tiny.keras"')}),
    # ---- inventories
    case("inventory-device-not-a-table", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inventory inv.toml: device 1 is 1, not a table; write each device as a [[device]] table with a name and "
         "a target.", {"r.toml": VALID, "inv.toml": "device = [1]\n"}),
    case("inventory-not-text", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inventory inv.toml is not a text file (byte 0xff at offset 2 is not UTF-8); give a TOML file with "
         "[[device]] tables.", {"r.toml": VALID, "inv.toml": b"\x00\x01\xff\xfe"}),
    case("inventory-syntax-error", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inventory inv.toml is not valid TOML: expected '=' after a key in a key/value pair at line 2, column 6; "
         "fix the syntax at line 2, column 6.", {"r.toml": VALID, "inv.toml": "[[device]]\nname \n"}),
    case("inventory-missing", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inventory inv.toml does not exist; give the path of a TOML file with [[device]] tables.",
         {"r.toml": VALID}),
    case("inventory-unknown-key", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inv.toml device 1: unknown key 'adress'; did you mean 'address'?",
         {"r.toml": VALID, "inv.toml": INVENTORY + 'adress = "x"\n'}),
    case("inventory-threads-bool", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inv.toml device 1 (pi): threads should be a list of positive integers, got [True]; e.g. threads = [1, 4].",
         {"r.toml": VALID, "inv.toml": INVENTORY + "threads = [true]\n"}),
    case("inventory-name-not-a-string", ["run", "r.toml", "--target", "pi", "--inventory", "inv.toml"],
         "inv.toml device 1: 'name' should be a string, got 7; fix the value in the inventory.",
         {"r.toml": VALID, "inv.toml": '[[device]]\nname = 7\ntarget = "local"\n'}),
    # ---- quantize
    case("quantize-out-keras-suffix", ["quantize", "tiny.keras", "--mode", "int8", "--data", "data.npz", "--out",
                                       "o.keras"],
         "--out o.keras must end in .tflite: quantize writes a TFLite flatbuffer; name it o.tflite."),
    case("quantize-out-no-suffix", ["quantize", "tiny.keras", "--mode", "float16", "--out", "model"],
         "--out model must end in .tflite: quantize writes a TFLite flatbuffer; name it model.tflite."),
    case("quantize-model-missing", ["quantize", "nope.keras", "--mode", "float16", "--out", "o.tflite"],
         "model file not found: nope.keras; check the path, or name a built-in architecture."),
    case("quantize-model-text", ["quantize", "notes.keras", "--mode", "float16", "--out", "o.tflite"],
         "notes.keras is not a readable .keras file (BadZipFile: File is not a zip file); the file is corrupt or "
         "truncated: save the model again.", {"notes.keras": "not a model"}),
    case("quantize-model-tflite", ["quantize", "m.tflite", "--mode", "float16", "--out", "o.tflite"],
         "m.tflite has an unknown model file type .tflite; give a .keras or .h5 file or a SavedModel folder.",
         {"m.tflite": b"\x1c\x00\x00\x00TFL3"}),
    case("quantize-data-missing", ["quantize", "tiny.keras", "--mode", "int8", "--data", "gone.npz", "--out",
                                   "o.tflite"],
         "--data gone.npz: no such file or folder; give fashion_mnist, an .npz file (x_train, y_train, x_test, "
         "y_test) or an image folder."),
    case("quantize-data-lacks-arrays", ["quantize", "tiny.keras", "--mode", "int8", "--data", "part.npz", "--out",
                                        "o.tflite"],
         "part.npz lacks the arrays y_train, y_test (it has x_test, x_train); save it with np.savez(path, "
         "x_train=..., y_train=..., x_test=..., y_test=...).", {"part.npz": npz(y_train=None, y_test=None)}),
    case("quantize-out-exists", ["quantize", "tiny.keras", "--mode", "float16", "--out", "o.tflite"],
         "o.tflite already exists; pass --force to replace it, or choose another --out.", {"o.tflite": b"old"}),
    case("quantize-out-folder-missing", ["quantize", "tiny.keras", "--mode", "float16", "--out", "no/o.tflite"],
         "cannot write no/o.tflite: the folder no does not exist; create it or choose another --out."),
    case("quantize-mode-unknown", ["quantize", "tiny.keras", "--mode", "int4", "--out", "o.tflite"],
         "Invalid value for '--mode': 'int4' is not one of 'float32', 'float16', 'dynamic', 'int8', 'pqat', 'qat'. "
         + HELP.format("quantize")),
    case("quantize-out-is-a-folder", ["quantize", "tiny.keras", "--mode", "float16", "--out", "d"],
         "Invalid value for '--out' / '-o': File 'd' is a directory. " + HELP.format("quantize"), {"d": folder()}),
    # ---- export
    case("export-out-pb-suffix", ["export", "tiny.keras", "--out", "o.pb"],
         "--out o.pb must end in .tflite: export writes a TFLite flatbuffer; name it o.tflite, or pass --keras3 "
         "with a .keras file."),
    case("export-keras3-out-tflite", ["export", "tiny.keras", "--keras3", "--out", "o.tflite"],
         "--out o.tflite must end in .keras: --keras3 writes a Keras 3 model; name it o.keras."),
    case("export-keras3-with-verify-data", ["export", "tiny.keras", "--keras3", "--out", "o.keras", "--verify-data",
                                            "data.npz"],
         "--verify-data applies to .tflite exports, not to --keras3 " + HELP.format("export")),
    case("export-keras3-over-its-input", ["export", "tiny.keras", "--keras3", "--out", "tiny.keras", "--force"],
         "the output tiny.keras is the input file; write the result to a new file with --out."),
    case("export-verify-data-lacks-y-test", ["export", "tiny.keras", "--out", "o.tflite", "--verify-data",
                                             "part.npz"],
         "part.npz lacks the arrays y_test (it has x_test, x_train, y_train); save it with np.savez(path, "
         "x_train=..., y_train=..., x_test=..., y_test=...).", {"part.npz": npz(y_test=None)}),
    case("export-verify-data-wrong-classes", ["export", "tiny.keras", "--out", "o.tflite", "--verify-data",
                                              "three.npz"],
         "the dataset three has 3 classes but the model outputs 10; use a model whose classifier has as many "
         "outputs as the dataset has classes.",
         {"three.npz": npz(y_train=np.arange(20) % 3, y_test=np.arange(10) % 3)}),
    case("export-model-folder-not-savedmodel", ["export", "d", "--out", "o.tflite"],
         "d is a folder but not a SavedModel (no saved_model.pb); check the path.", {"d": folder()}),
    # ---- eval: models that are not models, data specs
    case("eval-data-missing", ["eval", "tiny.keras", "--data", "gone.npz"],
         "--data gone.npz: no such file or folder; give fashion_mnist, an .npz file (x_train, y_train, x_test, "
         "y_test) or an image folder."),
    case("eval-data-name-typo", ["eval", "tiny.keras", "--data", "fashion-mnist"],
         "--data fashion-mnist: no such file or folder; give fashion_mnist, an .npz file (x_train, y_train, "
         "x_test, y_test) or an image folder."),
    case("eval-data-not-npz", ["eval", "tiny.keras", "--data", "notes.txt"],
         "notes.txt is not an .npz file (not a zip archive); save the arrays with np.savez(path, x_train=..., "
         "y_train=..., x_test=..., y_test=...).", {"notes.txt": "not arrays"}),
    case("eval-data-npy-not-npz", ["eval", "tiny.keras", "--data", "x.npy"],
         "x.npy is not an .npz file (not a zip archive); save the arrays with np.savez(path, x_train=..., "
         "y_train=..., x_test=..., y_test=...).", {"x.npy": lambda p: np.save(p, np.zeros(3))}),
    case("eval-data-is-a-model", ["eval", "tiny.keras", "--data", "tiny.keras"],
         "tiny.keras lacks the arrays x_train, y_train, x_test, y_test (it has config.json, metadata.json, "
         "model.weights.h5); save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."),
    case("eval-data-folder-without-classes", ["eval", "tiny.keras", "--data", "imgs"],
         "imgs has 0 class subfolders; expected at least 2; put each class's images in a subfolder named after "
         "the class.", {"imgs": folder()}),
    case("eval-data-folder-without-images", ["eval", "tiny.keras", "--data", "imgs"],
         "imgs holds no images (.bmp, .gif, .jpeg, .jpg, .png); add images.", {"imgs": folder("cat", "dog")}),
    case("eval-data-labels-mismatch", ["eval", "tiny.keras", "--data", "odd.npz"],
         "odd.npz: x_test has 10 images but y_test has 4 labels; make them equal.",
         {"odd.npz": npz(y_test=np.arange(4))}),
    case("eval-data-flat-images", ["eval", "tiny.keras", "--data", "flat.npz"],
         "flat.npz: x_train has shape (20, 256, 1, 1, 1); expected (N, H, W) or (N, H, W, C); store images as a "
         "3-D or 4-D array.", {"flat.npz": npz(x_train=np.zeros((20, 256, 1, 1, 1), np.uint8))}),
    case("eval-fashion-mnist-missing", ["eval", "tiny.keras"],
         "Fashion-MNIST is not installed ({tmp}/none/train-images-idx3-ubyte.gz is missing); install it with: sudo "
         "apt-get install dataset-fashion-mnist (or set EDGEPRUNE_FASHION_MNIST_DIR)."),
    case("eval-model-unknown-suffix", ["eval", "model.txt"],
         "model.txt has an unknown model file type .txt; give a .keras or .h5 file or a SavedModel folder.",
         {"model.txt": "hello"}),
    case("eval-model-zip-without-config", ["eval", "m.keras"],
         "m.keras is a zip file but not a Keras model (no config.json); check the file.",
         {"m.keras": keras_zip_without_config}),
    case("eval-model-weights-only-h5", ["eval", "w.h5"],
         "w.h5 is an HDF5 file without a Keras model config (weights only?); save the whole model with "
         "model.save('model.h5').", {"w.h5": weights_only_h5}),
    case("eval-model-truncated-h5", ["eval", "truncated.h5"],  # the middle part is h5py's own words
         re.compile(r"truncated\.h5 is not a readable \.h5 file \(.+\); the file is corrupt or truncated: save the "
                    r"model again\.")),
    case("eval-tflite-missing", ["eval", "gone.tflite"],
         "file not found: gone.tflite; check the path of the .tflite file."),
    case("eval-tflite-not-a-flatbuffer", ["eval", "m.tflite"],
         "m.tflite is not a TFLite flatbuffer (no TFL3 identifier); give a .tflite file written by the TFLite "
         "converter.", {"m.tflite": "hello"}),
    case("eval-threads-zero", ["eval", "tiny.keras", "--threads", "0"],
         "Invalid value for '--threads': 0 is not in the range x>=1. " + HELP.format("eval")),
    # ---- report, inspect, compare
    case("report-out-pdf", ["report", "run1", "-o", "x.pdf"],
         "-o x.pdf has the suffix .pdf, which names no report format; name the file .html, .md, .csv or .json."),
    case("report-out-no-suffix", ["report", "run1", "-o", "summary"],
         "-o summary has no suffix, which names no report format; name the file .html, .md, .csv or .json."),
    case("report-format-and-suffix-disagree", ["report", "run1", "-f", "md", "-o", "x.html"],
         "-o x.html does not match --format md; name the file x.md, or pass --format html."),
    case("report-over-its-input", ["report", "run1", "-o", "run1/report.json", "--force"],
         "the output run1/report.json is the input file; write the result to a new file with --out."),
    case("report-run-missing", ["report", "gone"],
         "gone does not exist; give the folder of an `edgeprune run` or `edgeprune bench`."),
    case("report-run-empty", ["report", "empty"],
         "the run folder empty is empty; give the folder an `edgeprune run` or `edgeprune bench --out` wrote.",
         {"empty": folder()}),
    case("report-folder-without-results", ["report", "other"],
         "other holds no results (neither report.json nor bench.json); give the folder an `edgeprune run` or "
         "`edgeprune bench --out` wrote.", {"other/notes.txt": "x"}),
    case("inspect-not-tflite", ["inspect", "notes.txt"],
         "notes.txt is not a TFLite flatbuffer (no TFL3 identifier); give a .tflite file written by the TFLite "
         "converter.", {"notes.txt": "hello"}),
    case("compare-missing", ["compare", "run1", "gone"],
         "gone does not exist; give the folder of an `edgeprune run` or `edgeprune bench`."),
    # ---- prune: checks made before the model is loaded
    case("prune-over-its-input", ["prune", "tiny.keras", "--method", "unstructured", "--out", "tiny.keras",
                                  "--force"],
         "the output tiny.keras is the input file; write the result to a new file with --out."),
    case("prune-model-missing", ["prune", "nope.keras", "--method", "unstructured", "--out", "o.keras"],
         "model file not found: nope.keras; check the path, or name a built-in architecture."),
]


def snapshot(root: Path) -> dict:
    """Every path under root (and root itself) -> kind, permission bits, size and sha256."""
    out = {".": ("dir", stat.S_IMODE(root.stat().st_mode))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def populate(root: Path, assets: Path, files: dict) -> None:
    shutil.copyfile(assets / "tiny.keras", root / "tiny.keras")
    shutil.copyfile(assets / "truncated.h5", root / "truncated.h5")
    shutil.copyfile(assets / "data.npz", root / "data.npz")
    shutil.copytree(assets / "run1", root / "run1")
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(p)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def invoke(args: list[str]) -> tuple[int, str, str]:
    """edgeprune.cli.main(args) with stdin, stdout and stderr captured by click's CliRunner."""
    from edgeprune import progress
    from edgeprune.cli import main

    previous = progress.get_reporter()
    try:
        with CliRunner().isolation() as (out, err, _):
            try:
                main(args)
                code = 0
            except SystemExit as e:
                code = e.code
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        progress.set_reporter(previous)
    return code, stdout, stderr


@pytest.mark.parametrize("args, files, error, stdout", CASES)
def test_bad_input(args, files, error, stdout, assets, tmp_path, monkeypatch, capfd):
    for target in HEAVY:
        def stop(*a, _name=target, **k):
            raise HeavyWorkStarted(f"{_name} started: the case must fail before it")

        monkeypatch.setattr(target, stop)
    monkeypatch.delenv("EDGEPRUNE_DEBUG", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("EDGEPRUNE_FASHION_MNIST_DIR", str(tmp_path / "none"))
    monkeypatch.setattr("edgeprune.data.FASHION_MNIST_DIR", tmp_path / "none")
    populate(tmp_path, assets, files)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    capfd.readouterr()

    code, out, err = invoke(args)

    leaked = capfd.readouterr()
    assert (code, out, leaked.out, leaked.err) == (2, stdout, "", ""), (code, out, err, leaked)
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    if isinstance(error, re.Pattern):
        assert re.fullmatch("error: " + error.pattern, lines[0]), lines[0]
    else:
        assert lines[0] == "error: " + error.format(tmp=tmp_path)
    assert snapshot(tmp_path) == before


def test_models_are_saved_with_the_umask_permissions(assets, tmp_path):
    """save_model_atomic, the writer for Keras models, gives what a plain write would (mkstemp
    alone gives 0600) and leaves no temp file."""
    from edgeprune._tf import keras
    from edgeprune.runfolder import save_model_atomic

    model = keras.models.load_model(assets / "tiny.keras", compile=False)
    previous = os.umask(0o027)
    try:
        save_model_atomic(model, tmp_path / "m.keras")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m.keras").stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["m.keras"]
    assert keras.models.load_model(tmp_path / "m.keras", compile=False).count_params() == model.count_params()


def test_the_table_is_large_and_every_id_is_unique():
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60

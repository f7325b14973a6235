"""`edgeprune run` and the pipeline's steps on their own: prune, quantize, export, eval."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeprune.cli._progress import install as install_progress


def _csv_ints(ctx, param, value):
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 1,2") from None
    if not out or any(v < 1 for v in out):
        raise click.BadParameter(f"{value!r}: thread counts must be 1 or more")
    return out


data_options = [
    click.option("--data", "data_spec", default="fashion_mnist", show_default=True,
                 help="fashion_mnist, a .npz file (x_train, y_train, x_test, y_test) or an image folder."),
    click.option("--normalization", type=click.Choice(["0_1", "-1_1", "none"]), default="0_1", show_default=True),
    click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Use at most N training images."),
    click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use at most N test images."),
]


def with_data_options(f):
    for opt in reversed(data_options):
        f = opt(f)
    return f


def _read_data(data_spec, option="--data"):
    """The dataset `option` names, as read: fashion_mnist, an image folder or an .npz file."""
    from edgeprune.data import load_dataset
    from edgeprune.errors import InputFileError

    if data_spec == "fashion_mnist":
        return load_dataset("fashion_mnist")
    if Path(data_spec).is_dir():
        return load_dataset("image_folder", data_spec)
    if not Path(data_spec).is_file():
        raise InputFileError(f"{option} {data_spec}: no such file or folder",
                             "give fashion_mnist, an .npz file (x_train, y_train, x_test, y_test) or an "
                             "image folder")
    return load_dataset("npz", data_spec)


def _fit_data(model, raw, normalization, train_limit, test_limit):
    from edgeprune.data import fit_to_model
    from edgeprune.models import io_shape

    shape, n_out = io_shape(model)
    return fit_to_model(raw, shape, n_out, normalization, train_limit=train_limit, test_limit=test_limit)


def _load_data(model, data_spec, normalization, train_limit, test_limit):
    return _fit_data(model, _read_data(data_spec), normalization, train_limit, test_limit)


def _check_model(path):
    """Refuses a missing file or one that is no model, from its header, before TensorFlow loads it."""
    from edgeprune.models import detect_format

    detect_format(path)


def _check_suffix(out: Path, suffix: str, writes: str, alternative: str = "") -> None:
    from edgeprune.errors import OutputError

    if out.suffix.lower() != suffix:
        raise OutputError(f"--out {out} must end in {suffix}: {writes}",
                          f"name it {out.with_suffix(suffix)}{alternative}")


def _load_keras(path):
    from edgeprune.models import load_model

    return load_model(path)[0]


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<recipe name>].")
@click.option("--force", is_flag=True, help="Replace a run already in --out.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set baseline.epochs=1 --set variant.fine_tune_epochs=0.5 "
                   "--set variant.sparse50.quantize=pqat. Repeatable.")
@click.option("--variants", default=None, help="Run only these variants (comma-separated names).")
@click.option("--threads", callback=_csv_ints, default=None, help="Host thread counts, e.g. 1,2.")
@click.option("--epochs", type=click.FloatRange(min=0), default=None, help="Baseline training epochs.")
@click.option("--target", "targets", multiple=True,
              help="Also benchmark every export on this device (adb:SERIAL, ssh:[user@]host[:port] or an "
                   "inventory name). Repeatable; adds to the recipe's [bench] targets.")
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Device inventory (TOML) for --target names.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout instead of the table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def run(recipe, out, force, overrides, variants, threads, epochs, targets, inventory, as_json, quiet):
    """Run the whole pipeline of RECIPE: baseline, every variant, verified exports, a report."""
    install_progress(quiet)
    from edgeprune import pipeline
    from edgeprune import recipe as recipe_mod
    from edgeprune.report.tables import terminal_summary
    from edgeprune.results import from_run_dict

    extra = list(overrides)
    if threads:
        extra.append(f"bench.threads={json.dumps(threads)}")
    if epochs is not None:
        extra.append(f"baseline.epochs={epochs}")
    r = recipe_mod.load(recipe, extra)
    if targets:
        r.bench.targets = list(dict.fromkeys([*r.bench.targets, *targets]))
    if inventory:
        r.bench.inventory = str(inventory)
    from edgeprune.steps import check_targets

    check_targets(r.bench.targets, r.bench.inventory)
    only = [v.strip() for v in variants.split(",")] if variants else None
    if only:
        for name in only:
            r.variant(name)
    out = out or Path("runs") / r.name
    from edgeprune.data import check_source
    from edgeprune.runfolder import check_output_folder

    check_output_folder(out, [recipe, r.model.path, r.data.path, r.bench.inventory])
    if r.model.path:  # a missing model or dataset fails here, before the run folder is made
        _check_model(r.model.path)
    check_source(r.data.kind, r.data.path)
    report = pipeline.run(r, out, force=force, only=only)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(terminal_summary(from_run_dict(report, path=Path(out) / "report.json")))
        click.echo(f"\nRun folder: {out}  (report.md, report.json, tflite/*.tflite)")
    failed = pipeline.failed_variants(report)
    if failed:
        click.echo(f"error: {len(failed)} variant(s) failed: {', '.join(failed)} (reasons in {out}/report.md)",
                   err=True)
        return 1
    return 0


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["unstructured", "2:4", "channels", "blocks"]), required=True)
@click.option("--sparsity", type=float, default=0.5, show_default=True, help="Target zero fraction (unstructured).")
@click.option("--schedule", type=click.Choice(["constant", "polynomial"]), default="constant", show_default=True)
@click.option("--frequency", type=click.IntRange(min=1), default=None, help="Mask update every N steps.")
@click.option("--skip", multiple=True, help="Regex of layer names to leave dense [default: first conv and classifier].")
@click.option("--frozen", type=click.Choice(["unfreeze", "keep", "skip"]), default="unfreeze", show_default=True,
              help="Layers the model freezes (trainable = False): prune and fine-tune them with the rest, then "
                   "freeze them again (unfreeze); prune them frozen (keep); or leave them dense (skip).")
@click.option("--epochs", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Fine-tune epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=5e-4, show_default=True)
@click.option("--ratio", type=float, default=None, help="Channels: fraction of channels to remove.")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn_gamma", "taylor"]), default="l2", show_default=True)
@click.option("--round-to", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--allocation", type=click.Choice(["uniform", "global", "sensitivity"]), default="uniform",
              show_default=True, help="Channels: the same ratio everywhere, a global ranking, or per-group "
              "ratios from measured sensitivity.")
@click.option("--latency-ms", type=float, default=None, help="Channels: prune until host latency is at most this.")
@click.option("--macs-target", type=float, default=None, help="Channels: keep this fraction of the MACs.")
@click.option("--protect", multiple=True, help="Channels and blocks: regex of layers (blocks) that are kept.")
@click.option("--iterative-steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Channels and blocks: reach the target in this many prune-and-fine-tune steps.")
@click.option("--blocks", "block_count", type=click.IntRange(min=1), default=None,
              help="Blocks: remove this many residual blocks, those whose removal changes the outputs least.")
@click.option("--remove", "block_names", multiple=True, help="Blocks: remove this block (repeatable), e.g. block_2.")
@click.option("--distill/--no-distill", default=True, show_default=True,
              help="Channels and blocks: fine-tune with distillation from the unpruned model.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Distillation temperature.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Distillation: weight of the label loss (the rest goes to the teacher's soft targets).")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Channels and blocks: learning rate over the fine-tune.")
@click.option("--augment/--no-augment", default=False, show_default=True,
              help="Channels and blocks: random shifts and flips during the fine-tune.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The pruned model (.keras).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@with_data_options
@click.option("--quiet", "-q", is_flag=True)
def prune(model, method, sparsity, schedule, frequency, skip, frozen, epochs, batch_size, learning_rate, ratio, criterion,
          round_to, allocation, latency_ms, macs_target, protect, iterative_steps, block_count, block_names, distill,
          temperature, alpha, lr_schedule, augment, out, force, data_spec, normalization, train_limit, test_limit,
          quiet):
    """Prune MODEL (.keras/.h5/SavedModel) and fine-tune it; write the pruned Keras model.

    \b
    unstructured, 2:4  TF-MOT sparsity (zeroed weights; the network keeps its size)
    channels           remove whole filters: a smaller network (--ratio, --macs-target or --latency-ms)
    blocks             remove whole residual blocks: fewer ops (--blocks N or --remove NAME)
    """
    install_progress(quiet)
    from edgeprune.errors import RecipeError
    from edgeprune.runfolder import check_output_file, write_json_atomic

    check_output_file(out, [model], force)
    if out.suffix != ".keras":
        raise RecipeError(f"--out {out} must end in .keras", "name the output model file.keras")
    if method == "channels" and ratio is None and latency_ms is None and macs_target is None:
        raise RecipeError("--method channels needs a budget", "pass --ratio 0.3, --macs-target or --latency-ms")
    if method == "blocks" and (block_count is None) == (not block_names):
        raise RecipeError("--method blocks needs exactly one of --blocks N and --remove NAME",
                          "e.g. --blocks 4, or --remove block_2 --remove block_5")
    if method in ("channels", "blocks"):
        plan = out.with_suffix(".plan.json" if method == "channels" else ".blocks.json")
        check_output_file(plan, [model], force)
    keras_model = _load_keras(model)
    ds = _load_data(keras_model, data_spec, normalization, train_limit, test_limit)
    if method in ("channels", "blocks"):
        from edgeprune import steps
        from edgeprune.finetune import FineTuneSettings
        from edgeprune.runfolder import save_model_atomic

        settings = FineTuneSettings(learning_rate=learning_rate, schedule=lr_schedule, batch_size=batch_size,
                                    distill=distill, temperature=temperature, alpha=alpha, augment=augment)
        fine_tune = steps.recovery(ds.x_train, ds.y_train, keras_model, settings, epochs, f"{method} recovery")
        held_out = steps.held_out(ds.x_train, ds.y_train)
        if method == "blocks":
            from edgeprune.channels.blocks import BlockConfig

            cfg = BlockConfig(count=block_count, names=tuple(block_names), protect=tuple(protect),
                              iterative_steps=iterative_steps)
            pruned, rec, plan_data = steps.remove_blocks(keras_model, cfg, held_out, fine_tune, epochs)
            save_model_atomic(pruned, out)
            write_json_atomic(plan, plan_data)
            click.echo(f"blocks: removed {', '.join(rec['removed'])}; layers {rec['layers_before']} -> "
                       f"{rec['layers_after']}, parameters {rec['params_before']:,} -> {rec['params_after']:,}")
        else:
            from edgeprune.channels import ChannelConfig

            cfg = ChannelConfig(ratio=ratio if ratio is not None else 0.0, criterion=criterion, round_to=round_to,
                                allocation=allocation, protect=list(protect), macs_target=macs_target,
                                latency_ms=latency_ms, iterative_steps=iterative_steps)
            pruned, rec, plan_data = steps.prune_channels(keras_model, cfg, held_out, fine_tune, epochs)
            save_model_atomic(pruned, out)
            plan_data.save(plan)
            click.echo(f"channels: parameters {rec['params_before']:,} -> {rec['params_after']:,}, MACs "
                       f"{rec['macs_before']:,} -> {rec['macs_after']:,}")
        click.echo(f"wrote {out} and the plan {plan}")
        return 0
    from edgeprune import sparsity as sp
    from edgeprune.report.tables import table

    pruned, report = sp.prune(keras_model, method, ds.x_train, ds.y_train, schedule=schedule, target=sparsity,
                              frequency=frequency, skip_patterns=list(skip) or None, epochs=epochs,
                              batch_size=batch_size, learning_rate=learning_rate, frozen=frozen)
    from edgeprune.runfolder import save_model_atomic

    save_model_atomic(pruned, out)
    write_json_atomic(out.with_suffix(".sparsity.json"), report.to_dict())
    rows = [[lay.name, lay.kind, f"{lay.weights:,}", f"{lay.sparsity:.1%}", lay.reason or "pruned"]
            for lay in report.layers]
    click.echo(table(["layer", "kind", "weights", "zeros", "note"], rows, left=(0, 1, 4)))
    click.echo(f"{method}: targeted layers {report.targeted_sparsity:.1%} zero, all kernels "
               f"{report.overall_sparsity:.1%}" + (" (2:4 pattern verified)" if report.m_by_n_ok else ""))
    click.echo(f"wrote {out}")
    return 0


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["float32", "float16", "dynamic", "int8", "pqat", "qat"]), required=True)
@click.option("--epochs", type=click.FloatRange(min=0), default=0.5, show_default=True, help="QAT fine-tune epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--learning-rate", type=float, default=1e-4, show_default=True)
@click.option("--sparse/--no-sparse", default=None, help="Sparse tensor encoding [default: chosen by measured bytes].")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .tflite file.")
@click.option("--force", is_flag=True)
@with_data_options
@click.option("--quiet", "-q", is_flag=True)
def quantize(model, mode, epochs, batch_size, learning_rate, sparse, out, force, data_spec, normalization,
             train_limit, test_limit, quiet):
    """Quantize MODEL and write a verified .tflite (PTQ through the converter, or (P)QAT fine-tuning)."""
    install_progress(quiet)
    from edgeprune import steps
    from edgeprune.data import representative_set
    from edgeprune.runfolder import check_output_file

    _check_suffix(out, ".tflite", "quantize writes a TFLite flatbuffer")
    check_output_file(out, [model], force)
    _check_model(model)
    raw = _read_data(data_spec)
    keras_model = _load_keras(model)
    ds = _fit_data(keras_model, raw, normalization, train_limit, test_limit)
    content, _ = steps.convert(keras_model, mode, ds.x_train, ds.y_train,
                               representative_set(ds) if mode == "int8" else None, qat_epochs=epochs,
                               batch_size=batch_size, learning_rate=learning_rate,
                               sparse_encoding="auto" if sparse is None else ("on" if sparse else "off"))
    _verify_and_write(content, ds, keras_model if mode == "float32" else None, out)
    return 0


def _verify_and_write(content, ds, keras_model, out, shape=None):
    """Verifies the export on the data's test split (or, without data, on random inputs: it runs
    and, for float32, matches Keras) and only then writes it; prints what was checked."""
    import numpy as np

    from edgeprune import export as ex
    from edgeprune import steps
    from edgeprune.runfolder import write_bytes_atomic

    if ds is not None:
        from edgeprune.train import predict

        x, y = ds.x_test, ds.y_test
        base_top1 = np.argmax(predict(keras_model, x), axis=-1) if keras_model is not None else None
    else:
        x = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
        y, base_top1 = np.zeros(len(x), np.int64), None
    v = steps.verify_export(content, x, y, base_top1, keras_model=keras_model)
    write_bytes_atomic(out, content)
    msg = f"wrote {out}: {len(content):,} bytes (gzip {ex.gzip_size(content):,})"
    if ds is not None:
        msg += f", accuracy through LiteRT {v.accuracy:.1%}"
    if v.max_abs_diff_vs_keras is not None:
        msg += f", max |diff| vs Keras {v.max_abs_diff_vs_keras:.1e}"
    click.echo(msg)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A .tflite file, or a .keras file with --keras3.")
@click.option("--mode", type=click.Choice(["float32", "float16", "dynamic"]), default="float32", show_default=True)
@click.option("--keras3", "to_keras3", is_flag=True, help="Write a Keras 3 .keras file instead of .tflite.")
@click.option("--input-shape", default=None, metavar="H,W,C",
              help="Export the same network and weights at another input size, e.g. 224,224,3.")
@click.option("--force", is_flag=True)
@click.option("--verify-data", "data_spec", default=None,
              help="Verify accuracy on this dataset too (fashion_mnist, .npz or folder).")
@click.option("--quiet", "-q", is_flag=True)
def export(model, out, mode, to_keras3, input_shape, force, data_spec, quiet):
    """Export MODEL to .tflite (verified to run and, for float32, to match Keras), or to Keras 3."""
    install_progress(quiet)
    from edgeprune import export as ex
    from edgeprune.runfolder import check_output_file

    if to_keras3:
        if data_spec:
            raise click.UsageError("--verify-data applies to .tflite exports, not to --keras3")
        _check_suffix(out, ".keras", "--keras3 writes a Keras 3 model")
    else:
        _check_suffix(out, ".tflite", "export writes a TFLite flatbuffer",
                      ", or pass --keras3 with a .keras file")
    check_output_file(out, [model], force)
    shape = _parse_shape(input_shape) if input_shape else None
    _check_model(model)
    raw = _read_data(data_spec, "--verify-data") if data_spec else None
    keras_model = _load_keras(model)
    if shape is not None:
        from edgeprune.channels.blocks import with_input_shape

        keras_model = with_input_shape(keras_model, shape)
    if to_keras3:
        from edgeprune.keras3 import save_keras3

        check = save_keras3(keras_model, out)
        click.echo(f"wrote {out} (Keras 3); max |diff| vs tf_keras {check['max_abs_diff']:.1e} "
                   f"(tolerance {check['tolerance']:.0e})")
        return 0
    ds = _fit_data(keras_model, raw, "0_1", None, None) if raw is not None else None  # before converting
    content = ex.convert(keras_model, mode)
    _verify_and_write(content, ds, keras_model if mode == "float32" else None, out,
                      shape=[int(d) if d else 1 for d in keras_model.inputs[0].shape[1:]])
    return 0


def _parse_shape(text: str) -> tuple[int, ...]:
    from edgeprune.errors import RecipeError

    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise RecipeError(f"--input-shape {text!r} is not three positive integers", "write H,W,C, e.g. 224,224,3")
    return shape


@click.command(name="eval")
@click.argument("model", type=click.Path(path_type=Path))
@with_data_options
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def eval_(model, data_spec, normalization, train_limit, test_limit, threads, as_json, quiet):
    """Measure MODEL's top-1 accuracy (a .tflite through LiteRT, or a Keras model) and host latency."""
    install_progress(quiet)
    from edgeprune import export as ex
    from edgeprune import tflite_file
    from edgeprune.data import fit_to_model

    result = {"model": str(model)}
    if model.suffix == ".tflite":
        info = tflite_file.read(model)
        tflite_file.check_runs(model)  # a file the interpreter would crash on is refused by its path
        content = model.read_bytes()
        tin = info.tensors[info.inputs[0]]
        tout = info.tensors[info.outputs[0]]
        raw = _read_data(data_spec)
        ds = fit_to_model(raw, tin.shape[1:], tout.shape[-1], normalization, train_limit=train_limit,
                          test_limit=test_limit)
        v = ex.verify(content, ds.x_test, ds.y_test, threads=threads)
        if not v.runs_in_default_interpreter:
            from edgeprune.errors import InputFileError

            raise InputFileError(f"{model} {v.failures[0]}", "re-export it (see `edgeprune inspect`)")
        from edgeprune.bench import BenchSettings, bench_models
        from edgeprune.errors import DeviceError

        bench = bench_models([model], ["local"], BenchSettings(threads=[threads], runs=50, warmup=5, min_secs=0.5))
        if not bench.results:  # the host's runner failed: the reason is the one failure
            raise DeviceError(f"timing {model} on this host failed: {bench.failures[0].reason}")
        lat = bench.results[0].stats
        result.update(accuracy=v.accuracy, samples=v.samples, bytes=len(content), gzip_bytes=ex.gzip_size(content),
                      threads=threads, median_ms=lat.median_us / 1e3, p90_ms=lat.p90_us / 1e3, runs=lat.count)
        text = (f"{model}: accuracy through LiteRT {v.accuracy:.2%} on {v.samples} images; "
                f"{len(content):,} bytes (gzip {result['gzip_bytes']:,}); host latency median "
                f"{result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms ({lat.count} runs, {threads} thread(s))")
    else:
        from edgeprune.train import keras_accuracy

        _check_model(model)
        raw = _read_data(data_spec)
        keras_model = _load_keras(model)
        ds = _fit_data(keras_model, raw, normalization, train_limit, test_limit)
        acc = keras_accuracy(keras_model, ds.x_test, ds.y_test)
        result.update(accuracy=acc, samples=int(len(ds.x_test)), params=int(keras_model.count_params()))
        text = f"{model}: Keras accuracy {acc:.2%} on {len(ds.x_test)} images; {result['params']:,} parameters"
    click.echo(json.dumps(result, indent=2) if as_json else text)
    return 0

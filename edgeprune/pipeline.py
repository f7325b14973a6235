"""The whole pipeline for one recipe: baseline (trained or cached), then every variant through
channel pruning, TF-MOT sparsity, quantization and export, each export verified through LiteRT.
Then every verified export is measured through the bench harness (edgeprune.bench), on the host
(`local`) and on the recipe's devices, side by side (paired), so that the speed-ups are ratios
measured in one session. All is written to one run folder: report.json (the record, holding the
bench run with raw samples), and report.md and report.html drawn from it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune import export as export_mod
from edgeprune import progress, steps, tflite_file
from edgeprune.data import Dataset, fit_to_model, load_dataset, representative_set
from edgeprune.errors import EdgepruneError
from edgeprune.models import ModelSource, build_builtin, count_params, io_shape, load_model
from edgeprune.recipe import Recipe, VariantSpec
from edgeprune.runfolder import RunFolder, write_bytes_atomic, write_json_atomic, write_text_atomic

REPORT_SCHEMA = "edgeprune.run"
REPORT_VERSION = 2
CACHE_DIR = Path(os.environ.get("EDGEPRUNE_CACHE_DIR", Path.home() / ".cache" / "edgeprune"))


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("edgeprune", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": platform.node(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


@dataclass
class Context:
    recipe: Recipe
    data: Dataset
    baseline: object
    baseline_top1: np.ndarray
    representative: np.ndarray
    strategy: object
    out: Path


# ---------------------------------------------------------------- baseline

def _baseline_key(recipe: Recipe, epochs: float) -> str:
    train = {k: v for k, v in recipe.baseline.__dict__.items() if k not in ("reference_accuracy", "reference")}
    spec = {"model": recipe.model.__dict__, "data": recipe.data.__dict__, "train": train,
            "epochs": epochs, "seed": recipe.seed, "versions": versions()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_baseline(recipe: Recipe, strategy):
    """Returns (model, ModelSource, Dataset shaped for it, baseline info dict)."""
    from edgeprune._tf import keras
    from edgeprune.train import clone_in_scope, compile_classifier, fit, keras_accuracy, learning_rate_for, steps_for

    if recipe.model.path:
        model, source = load_model(recipe.model.path)
        default_epochs = 0.0
    else:
        model = build_builtin(recipe.model.architecture, recipe.model.input_shape, recipe.model.classes,
                              recipe.model.alpha, recipe.model.bn_momentum, recipe.model.dropout, recipe.seed)
        source = ModelSource("builtin", architecture=recipe.model.architecture,
                             details={"alpha": recipe.model.alpha, "input_shape": recipe.model.input_shape,
                                      "classes": recipe.model.classes})
        default_epochs = 3.0
    in_shape, n_out = io_shape(model)
    raw = load_dataset(recipe.data.kind, recipe.data.path)
    ds = fit_to_model(raw, in_shape, n_out, recipe.data.normalization, recipe.data.mean, recipe.data.std,
                      recipe.data.train_limit, recipe.data.test_limit, recipe.seed)
    epochs = recipe.baseline.epochs if recipe.baseline.epochs is not None else default_epochs
    info = {"epochs": epochs, "cached": False, "trained": epochs > 0}
    if epochs > 0:
        key = _baseline_key(recipe, epochs)
        cached = CACHE_DIR / "baselines" / key / "model.keras"
        if recipe.baseline.cache and cached.is_file():
            model = keras.models.load_model(cached, compile=False)
            info.update(cached=True, cache_path=str(cached))
            curve = cached.with_name("curve.json")
            if curve.is_file():
                info["curve"] = json.loads(curve.read_text())
            progress.log(f"baseline: reusing the cached model {cached}")
        else:
            keras.utils.set_random_seed(recipe.seed)
            model = clone_in_scope(model, strategy)
            spec = recipe.baseline
            steps = steps_for(len(ds.x_train), spec.batch_size, epochs)
            per_epoch = steps_for(len(ds.x_train), spec.batch_size, 1)
            with strategy.scope():
                rate = learning_rate_for(spec.learning_rate, spec.lr_schedule, steps,
                                         warmup_steps=int(spec.warmup_epochs * per_epoch))
                compile_classifier(model, rate, spec.optimizer, spec.label_smoothing)
            t = time.perf_counter()
            logs = fit(model, ds.x_train, ds.y_train, epochs, spec.batch_size, "baseline training",
                       seed=recipe.seed, strategy=strategy, augment=spec.augment,
                       one_hot=n_out if spec.label_smoothing > 0 else None, validation=(ds.x_test, ds.y_test))
            info["train_seconds"] = round(time.perf_counter() - t, 1)
            info["curve"] = logs.get("curve", [])
            if recipe.baseline.cache:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f".model.{os.getpid()}.keras")
                model.save(tmp)
                os.replace(tmp, cached)
                write_json_atomic(cached.with_name("curve.json"), info["curve"])
                info["cache_path"] = str(cached)
    info["keras_accuracy"] = keras_accuracy(model, ds.x_test, ds.y_test)
    ref = recipe.baseline.reference_accuracy
    if ref is not None:
        gap = 100 * (ref - info["keras_accuracy"])
        info["convergence"] = (f"baseline: {epochs:g} epochs, Keras accuracy {info['keras_accuracy']:.1%}, "
                               + (f"{gap:.1f} points below" if gap > 0 else f"{-gap:.1f} points above")
                               + f" the {ref:.1%} this model reaches trained to convergence"
                               + (f" ({recipe.baseline.reference})" if recipe.baseline.reference else "")
                               + "; losses below are against this baseline.")
    return model, source, ds, info


# ---------------------------------------------------------------- variants

def recovery_settings(recipe: Recipe, v: VariantSpec):
    """How a variant's structural steps are fine-tuned: its own learning rate and schedule,
    distillation from the baseline, and the baseline's augmentation and label smoothing unless the
    variant says otherwise."""
    from edgeprune.finetune import FineTuneSettings

    b = recipe.baseline
    return FineTuneSettings(learning_rate=v.learning_rate, schedule=v.lr_schedule,
                            batch_size=recipe.fine_tune_batch_size, optimizer=b.optimizer, distill=v.distill,
                            temperature=v.distill_temperature, alpha=v.distill_alpha,
                            label_smoothing=b.label_smoothing if v.label_smoothing is None else v.label_smoothing,
                            augment=b.augment if v.augment is None else v.augment, seed=recipe.seed)


def _fine_tune(ctx: Context, v: VariantSpec, what: str):
    return steps.recovery(ctx.data.x_train, ctx.data.y_train, ctx.baseline, recovery_settings(ctx.recipe, v),
                          v.fine_tune_epochs, f"{v.name}: {what} recovery", ctx.strategy)


def _structural(ctx: Context, v: VariantSpec, model, row: dict, step: str, settings: dict):
    """Blocks or channels out of `model`, its record in the row and its plan in the run folder."""
    from edgeprune.channels import ChannelConfig
    from edgeprune.channels.blocks import BlockConfig, save_block_plan

    data = steps.held_out(ctx.data.x_train, ctx.data.y_train)
    plan_path = ctx.out / "variants" / v.name / f"{'block' if step == 'blocks' else 'channel'}_plan.json"
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    if step == "blocks":
        model, row["blocks"], plan = steps.remove_blocks(model, BlockConfig(**settings), data,
                                                         _fine_tune(ctx, v, "block"), v.fine_tune_epochs)
        save_block_plan(plan, plan_path)
    else:
        model, row["channels"], plan = steps.prune_channels(model, ChannelConfig(**settings), data,
                                                            _fine_tune(ctx, v, "channel"), v.fine_tune_epochs)
        plan.save(plan_path)
    return model


def run_variant(ctx: Context, v: VariantSpec) -> dict:
    """The variant's steps in order (recipe.steps: structural, TF-MOT sparsity, (P)QAT, convert),
    then the verified export and its record."""
    from edgeprune import sparsity
    from edgeprune.train import keras_accuracy

    r = ctx.recipe
    row: dict = {"name": v.name, "spec": v.__dict__.copy(), "status": "ok", "failures": []}
    t0 = time.perf_counter()
    model = ctx.baseline
    x, y = ctx.data.x_train, ctx.data.y_train
    qat, convert = None, None
    for step in v.steps:
        if step.kind in ("blocks", "channels"):
            model = _structural(ctx, v, model, row, step.kind, step.settings)
        elif step.kind == "sparsity":
            log_dir = str(ctx.out / "variants" / v.name / "tensorboard") if step.pruning_summaries else None
            model, rep = sparsity.prune(model, step.method, x, y, schedule=step.schedule, target=step.target_sparsity,
                                        initial=step.initial_sparsity, begin_step=step.begin_step,
                                        end_step=step.end_step, frequency=step.frequency,
                                        skip_patterns=list(step.skip), epochs=v.fine_tune_epochs,
                                        batch_size=r.fine_tune_batch_size, learning_rate=v.learning_rate,
                                        strategy=ctx.strategy, log_dir=log_dir, seed=r.seed, frozen=step.frozen)
            row["sparsity"] = rep.to_dict()
        elif step.kind in ("qat", "pqat"):
            qat = step  # fine-tunes quantization-aware as part of the conversion that follows
        else:
            convert = step
    if "sparsity" not in row:
        row["sparsity"] = sparsity.measure(model, set(), set(), "none", None).to_dict()
    row["params"] = count_params(model)
    if model is not ctx.baseline:  # the baseline's model is already in baseline/
        keras_dir = ctx.out / "variants" / v.name
        keras_dir.mkdir(parents=True, exist_ok=True)
        model.save(keras_dir / "model.keras")
    row["keras_accuracy"] = keras_accuracy(model, ctx.data.x_test, ctx.data.y_test)

    mode = qat.kind if qat is not None else convert.mode
    content, encoding = steps.convert(model, mode, x, y, ctx.representative,
                                      qat_epochs=qat.epochs if qat is not None else 0.0,
                                      batch_size=r.fine_tune_batch_size, learning_rate=v.learning_rate / 5,
                                      strategy=ctx.strategy, seed=r.seed, sparse_encoding=convert.sparse_encoding,
                                      has_zeros=row["sparsity"]["targeted_sparsity"] > 0.3)
    row["sparse_encoding"] = encoding
    path = ctx.out / "tflite" / f"{v.name}.tflite"
    write_bytes_atomic(path, content)
    row["tflite"] = str(path.relative_to(ctx.out))
    row["sha256"] = hashlib.sha256(content).hexdigest()
    row["bytes"] = len(content)
    row["gzip_bytes"] = export_mod.gzip_size(content)
    info = tflite_file.read(content, name=path.name)
    row["tflite_info"] = {"op_counts": info.op_counts, "has_sparse_tensors": info.has_sparse_tensors,
                          "has_densify": info.has_densify,
                          "weights_zero_fraction": round(info.constant_zero_fraction(), 6),
                          "input_dtype": info.tensors[info.inputs[0]].dtype,
                          "tensor_dtypes": sorted({t.dtype for t in info.tensors if t.is_constant})}
    ver = steps.verify_export(content, ctx.data.x_test, ctx.data.y_test, ctx.baseline_top1,
                              keras_model=model if mode == "float32" else None, strict=False)
    row["verification"] = ver.to_dict()
    row["accuracy"] = ver.accuracy
    row["agreement"] = ver.agreement
    if not ver.ok:
        row["status"] = "failed"
        row["failures"].extend(ver.failures)
    else:
        row["exports"] = [_export_at(ctx, v, model, shape) for shape in r.bench.input_shapes]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _export_at(ctx: Context, v: VariantSpec, model, shape: list[int]) -> dict:
    """The variant's network re-instantiated at another input size (same layers, same weights) and
    exported in the variant's mode, to be measured beside the others: where compute, not per-op
    overhead, decides latency. A (P)QAT variant is exported as int8 PTQ, which has the same ops."""
    from edgeprune.channels.blocks import with_input_shape

    mode = {"pqat": "int8", "qat": "int8"}.get(v.quantize, v.quantize)
    out = {"input_shape": list(shape), "export": mode if mode == v.quantize else f"{mode} (for {v.quantize})"}
    try:
        big = with_input_shape(model, shape)
        reps = None
        if mode == "int8":
            from edgeprune._tf import tf

            reps = tf.image.resize(ctx.representative, shape[:2]).numpy().astype(np.float32)
            if reps.shape[-1] != shape[2]:
                raise EdgepruneError(f"input shape {shape} has {shape[2]} channels; the data has {reps.shape[-1]}",
                                     f"use [H, W, {reps.shape[-1]}] in [bench] input_shapes")
        content = export_mod.convert(big, mode, representative=reps)
        export_mod.TFLiteModel(content).predict(np.zeros((1, *shape), np.float32))
    except EdgepruneError as e:
        out["error"] = e.one_line()
        return out
    path = ctx.out / "tflite" / f"{v.name}@{shape[0]}x{shape[1]}.tflite"
    write_bytes_atomic(path, content)
    out.update(tflite=str(path.relative_to(ctx.out)), sha256=hashlib.sha256(content).hexdigest(), bytes=len(content),
               gzip_bytes=export_mod.gzip_size(content))
    return out


# ---------------------------------------------------------------- run

def run(recipe: Recipe, out: Path | str, force: bool = False, only: list[str] | None = None) -> dict:
    """Runs the recipe into the run folder `out`. Returns the report dict (also in report.json)."""
    from edgeprune._tf import keras
    from edgeprune.report.html import render
    from edgeprune.report.markdown import render_markdown
    from edgeprune.results import from_run_dict
    from edgeprune.train import get_strategy, predict

    variants = [recipe.variant(n) for n in only] if only else list(recipe.variants)
    with RunFolder(out, force=force) as folder:
        work = folder.path
        started = time.time()
        keras.utils.set_random_seed(recipe.seed)
        strategy = get_strategy(recipe.strategy)
        model, source, ds, base_info = prepare_baseline(recipe, strategy)
        (work / "baseline").mkdir()
        model.save(work / "baseline" / "model.keras")
        baseline_top1 = np.argmax(predict(model, ds.x_test), axis=-1)
        reps = representative_set(ds, recipe.data.representative_count, recipe.seed)
        ctx = Context(recipe, ds, model, baseline_top1, reps, strategy, work)
        baseline_spec = VariantSpec(name="baseline", quantize="float32", sparse_encoding="off")
        rows = []
        with progress.task("variants", len(variants) + 1) as t:
            for v in [baseline_spec, *variants]:
                progress.log(f"variant {v.name}: prune={v.prune} quantize={v.quantize}")
                try:
                    rows.append(run_variant(ctx, v))
                except EdgepruneError as e:
                    rows.append({"name": v.name, "spec": v.__dict__.copy(), "status": "failed",
                                 "failures": [e.one_line()]})
                except Exception as e:  # recorded with its cause; the other variants still run
                    rows.append({"name": v.name, "spec": v.__dict__.copy(), "status": "failed",
                                 "failures": [f"internal: {type(e).__name__}: {' '.join(str(e).split())[:300]}"],
                                 "traceback": traceback.format_exc(limit=8)})
                t.advance(1, v.name)
        bench = measure_exports(recipe, rows, work)
        report = {
            "schema": REPORT_SCHEMA, "version": REPORT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "recipe": recipe.to_dict(), "recipe_file": recipe.source,
            "model": source.to_dict() | {"params": count_params(model), "input_shape": list(io_shape(model)[0])},
            "data": ds.describe(), "baseline": base_info, "strategy": recipe.strategy,
            "versions": versions(), "machine": machine(),
            "variants": rows, "bench": bench.to_dict() if bench is not None else None,
        }
        if recipe.source and Path(recipe.source).is_file():
            shutil.copyfile(recipe.source, work / "recipe.toml")
        write_json_atomic(work / "report.json", report)
        model = from_run_dict(report, path=work / "report.json")
        write_text_atomic(work / "report.md", render_markdown(model))
        write_text_atomic(work / "report.html", render(model))
    return report


def measure_exports(recipe: Recipe, rows: list[dict], work: Path):
    """Measures every verified export through the bench harness, on the host (`local`) and on the
    recipe's device targets at once, each device with its own worker. The exports at the model's
    input size are one paired group with the baseline first (its reference); the exports at each
    other input size another, with the baseline at that size first. Returns the BenchRun (None when
    no export was verified)."""
    from edgeprune.bench import BenchSettings, bench_models

    ok = [v for v in rows if v.get("status") == "ok" and v.get("tflite")]
    if not ok:
        return None
    paths: list[Path] = []
    groups: list[list[int]] = []
    sizes = [None, *(list(s) for s in recipe.bench.input_shapes)]
    for shape in sizes:
        files = ([work / v["tflite"] for v in ok] if shape is None else
                 [work / e["tflite"] for v in ok for e in v.get("exports", [])
                  if e.get("tflite") and list(e["input_shape"]) == shape])
        if files:
            groups.append(list(range(len(paths), len(paths) + len(files))))
            paths += files
    targets = list(dict.fromkeys(["local", *recipe.bench.targets]))
    settings = BenchSettings(threads=list(recipe.bench.threads), runs=recipe.bench.runs, warmup=recipe.bench.warmup,
                             min_secs=recipe.bench.min_secs, paired=True)
    progress.log(f"measuring {len(paths)} exports side by side on {', '.join(targets)}")
    return bench_models(paths, targets, settings, inventory=recipe.bench.inventory, pair_groups=groups)


def failed_variants(report: dict) -> list[str]:
    return [v["name"] for v in report["variants"] if v["status"] != "ok"]


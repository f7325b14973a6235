"""The pipeline's steps, each usable on its own. `edgeprune run` (edgeprune.pipeline) and the
single-step commands (`prune`, `quantize`, `export`) call these same functions, so a step does
the same thing whichever way it is reached:

    recovery(...)         the fine-tune closure that recovers accuracy after a structural step
    held_out(x, y)        the scoring images for blocks and channel sensitivity
    remove_blocks(...)    whole residual blocks out, with its record and plan
    prune_channels(...)   whole filters out, with its record and plan
    convert(...)          PTQ, (P)QAT or float export to flatbuffer bytes, the encoding chosen by size
    verify_export(...)    the bytes run in LiteRT and, for float32, match Keras; else PruningError
    check_targets(...)    device targets parse (or name inventory devices) before any training"""

from __future__ import annotations

import numpy as np

from edgeprune import export as export_mod
from edgeprune.errors import PruningError

HELD_OUT = 1024


def held_out(x, y, n: int = HELD_OUT):
    """The last `n` training images: scoring data for blocks and channel sensitivity."""
    n = min(n, len(x))
    return x[len(x) - n:], y[len(y) - n:]


def recovery(x, y, teacher, settings, epochs: float, label: str, strategy=None):
    """The fine-tune closure structural steps call after removing something (None for 0 epochs):
    the settings' learning rate and schedule, distillation from `teacher`, augmentation."""
    if epochs <= 0:
        return None
    from edgeprune.finetune import make_fine_tune

    return make_fine_tune(x, y, teacher=teacher, settings=settings, strategy=strategy, label=label)


def remove_blocks(model, cfg, data, fine_tune, epochs: float):
    """Returns (smaller model, the record a run keeps, the block plan)."""
    from edgeprune.channels.blocks import prune_blocks

    result = prune_blocks(model, cfg, data=data, fine_tune=fine_tune, fine_tune_epochs=epochs)
    record = {"removed": result.removed, "scores": result.scores, "blocks": result.blocks,
              "params_before": result.params_before, "params_after": result.params_after,
              "layers_before": result.layers_before, "layers_after": result.layers_after, "config": cfg.to_dict()}
    return result.model, record, result.plan()


def prune_channels(model, cfg, data, fine_tune, epochs: float):
    """Returns (smaller model, the record a run keeps, the channel plan). prune_channels
    fine-tunes after every step (iterative_steps) with `epochs`."""
    from edgeprune.channels import prune_channels as prune

    result = prune(model, cfg, data=data, fine_tune=fine_tune, fine_tune_epochs=epochs)
    record = {"layers": result.layers, "params_before": result.params_before, "params_after": result.params_after,
              "macs_before": result.macs_before, "macs_after": result.macs_after, "config": cfg.to_dict(),
              "sensitivity": [s["sensitivity"] for s in result.steps if "sensitivity" in s]}
    for key in ("latency", "latency_table"):
        if getattr(result, key, None) is not None:
            record[key] = getattr(result, key)
    return result.model, record, result.plan


def choose_encoding(model, mode: str, setting: str, has_zeros: bool) -> tuple[bytes, dict]:
    """float32/float16: convert with and without EXPERIMENTAL_SPARSITY and keep the smaller one that
    runs in the default interpreter. int8/dynamic sparse files fail under XNNPACK: never chosen."""
    dense = export_mod.convert(model, mode)
    info = {"setting": setting, "dense_bytes": len(dense), "sparse_bytes": None, "chosen": "dense", "why": ""}
    if setting == "off":
        info["why"] = "sparse_encoding = off"
        return dense, info
    if mode not in ("float32", "float16"):
        info["why"] = f"sparse encoding of {mode} weights does not run under XNNPACK"
        return dense, info
    if setting == "auto" and not has_zeros:
        info["why"] = "no pruned weights"
        return dense, info
    sparse = export_mod.convert(model, mode, sparse=True)
    info["sparse_bytes"] = len(sparse)
    try:
        export_mod.TFLiteModel(sparse).predict(np.zeros((1, *model.inputs[0].shape[1:]), np.float32))
        runs = True
    except (ValueError, RuntimeError):
        runs = False
    if setting == "on" or (runs and len(sparse) < len(dense)):
        info["chosen"] = "sparse"
        info["why"] = "forced" if setting == "on" else f"{len(dense) - len(sparse)} bytes smaller and runs"
        return sparse, info
    info["why"] = "does not run in the default interpreter" if not runs else "not smaller"
    return dense, info


def convert(model, mode: str, x=None, y=None, representative=None, *, qat_epochs: float = 0.5,
            batch_size: int = 256, learning_rate: float = 1e-4, strategy=None, seed: int = 0,
            sparse_encoding: str = "auto", has_zeros: bool = True) -> tuple[bytes, dict | None]:
    """The model as flatbuffer bytes in `mode`: (P)QAT fine-tunes on (x, y) at `learning_rate`
    first; int8 calibrates on `representative`; float modes choose the sparse encoding by measured
    size. Returns (bytes, the encoding choice or None)."""
    if mode in ("pqat", "qat"):
        from edgeprune import quantize

        qat = quantize.quantize_aware(model, x, y, preserve_sparsity=(mode == "pqat"), epochs=qat_epochs,
                                      batch_size=batch_size, learning_rate=learning_rate, strategy=strategy, seed=seed)
        return export_mod.convert(qat, "qat"), None
    if mode == "int8":
        return export_mod.convert(model, "int8", representative=representative), None
    return choose_encoding(model, mode, sparse_encoding, has_zeros)


def verify_export(content: bytes, x_test, y_test, baseline_top1=None, keras_model=None, strict: bool = True):
    """Runs the bytes through LiteRT on (x_test, y_test): accuracy, agreement with `baseline_top1`
    and, given the float32 `keras_model`, the largest output difference. `strict`: a failed check
    raises PruningError (nothing is written); else the Verification says what failed."""
    ver = export_mod.verify(content, x_test, y_test, baseline_top1, keras_model=keras_model,
                            float32=keras_model is not None)
    if strict and not ver.ok:
        raise PruningError(f"the export failed verification: {'; '.join(ver.failures)}", "nothing was written")
    return ver


def check_targets(targets: list[str], inventory: str | None) -> None:
    """Every target other than `local` parses, or names a device of the inventory: a malformed one
    fails here, before any training."""
    if all(t == "local" for t in targets):
        return
    from edgeprune.bench import load_inventory, parse_target

    inv = load_inventory(inventory) if inventory else None
    names = {d.name for d in inv.devices} if inv is not None else set()
    for t in targets:
        if t != "local" and t not in names:
            parse_target(t)

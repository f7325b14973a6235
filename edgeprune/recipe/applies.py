"""Keys that do not apply. A key the pipeline would never read is refused, not silently ignored:
TF-MOT's schedule on a variant without sparsity, distillation on one without a structural
fine-tune, a [baseline] batch size when the baseline is not trained, and so on. Each finding names
the key, where it is, why it does not apply and what to do.

A value the command line changed (--set, --epochs) may leave keys of the file without effect:
those are not refused (the file is not wrong), except a key the command line set itself on a
variant. `--set variant.KEY=V` sets KEY on every variant it applies to, and is refused if it
applies to none."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.errors import RecipeError
from edgeprune.recipe.spec import FLOAT_MODES, RECOVERY_KEYS, SPARSITY_KEYS, STEP_KEYS, STRUCTURE_STEPS

TWO_FOUR_FIXED = ("schedule", "target_sparsity", "initial_sparsity", "end_step")
TWO_FOUR = "2:4 sparsity is fixed: two of every four weights zero, from begin_step"
IN_STEP = {"prune": '{ sparsity = { method = "unstructured" } }, or a channels or blocks step',
           "quantize": '{ convert = "int8" } (after { qat = {} } or { pqat = {} } for QAT)',
           "qat_epochs": "{ qat = { epochs = 0.5 } } or { pqat = { epochs = 0.5 } }",
           "sparse_encoding": '{ convert = { mode = "float32", sparse_encoding = "on" } }',
           "channels": "{ channels = { ratio = 0.3 } }", "blocks": "{ blocks = { count = 4 } }"}


@dataclass
class Finding:
    at: str  # "[variant a]", "[baseline]", "[variant a] step 2 (sparsity):"
    key: str
    reason: str
    fix: str
    scopes: tuple[str, ...]  # what decides it: "model", "baseline", "data", "bench", "variant:NAME", "variant:*"
    path: tuple[str, ...]  # the key as --set names it: ("baseline", "cache"), ("variant", "a", "distill")

    def error(self) -> RecipeError:
        return RecipeError(f"{self.at} {self.key} does not apply: {self.reason}", self.fix)


def recovers(v) -> bool:
    """The variant fine-tunes after a structural step (the fine-tune that reads the recovery keys)."""
    return any(s.kind in STRUCTURE_STEPS for s in v.steps) and v.fine_tune_epochs > 0


def variant_findings(raw: dict, v) -> list[Finding]:
    """The keys of one [[variant]] table (`raw`, as written) that its steps never read."""
    at, keys, steps = f"[variant {v.name}]", set(raw) - {"name", "steps"}, v.steps
    structural = [s.kind for s in steps if s.kind in STRUCTURE_STEPS]
    sparsity = next((s for s in steps if s.kind == "sparsity"), None)
    qat = next((s for s in steps if s.kind in ("qat", "pqat")), None)
    mode = steps[-1].mode
    out: list[Finding] = []

    def refuse(key, reason, fix="remove it", where=at, path_key=None):
        out.append(Finding(where, key, reason, fix, (f"variant:{v.name}",), ("variant", v.name, path_key or key)))

    if "steps" in raw:
        for key in sorted(keys & set(STEP_KEYS), key=STEP_KEYS.index):
            if key == "order":
                refuse(key, "the steps run in the order they are listed", "remove it, and list the steps in order")
            else:
                where = IN_STEP.get(key, f'{{ sparsity = {{ method = "unstructured", {key} = ... }} }}')
                refuse(key, "the variant lists steps, and this setting belongs in one",
                       f"write it in its step: {where}")
        for i, item in enumerate(raw["steps"], 1):
            (kind, table), = item.items()
            where = f"{at} step {i} ({kind}):"
            if kind == "sparsity" and table["method"] == "2:4":
                for key in (k for k in TWO_FOUR_FIXED if k in table):
                    refuse(key, TWO_FOUR, where=where, path_key="steps")
            elif kind == "sparsity" and table.get("schedule", "constant") == "constant" and "initial_sparsity" in table:
                refuse("initial_sparsity", "schedule = 'constant' holds target_sparsity from begin_step",
                       "remove it, or set schedule = 'polynomial'", where, "steps")
            if kind == "convert" and isinstance(table, dict) and "sparse_encoding" in table and mode not in FLOAT_MODES:
                refuse("sparse_encoding", f"{mode} files are always dense (sparse ones do not run under XNNPACK)",
                       "remove it: it applies to float32 and float16 files", where, "steps")
    else:
        if sparsity is None:
            for key in (k for k in SPARSITY_KEYS if k in keys):
                refuse(key, f"prune = {v.prune!r} makes no TF-MOT sparsity",
                       "remove it, or set prune = 'unstructured' or '2:4'")
        elif sparsity.method == "2:4":
            for key in (k for k in TWO_FOUR_FIXED if k in keys):
                refuse(key, TWO_FOUR)
        elif sparsity.schedule == "constant" and "initial_sparsity" in keys:
            refuse("initial_sparsity", "schedule = 'constant' holds target_sparsity from begin_step",
                   "remove it, or set schedule = 'polynomial'")
        if qat is None and "qat_epochs" in keys:
            refuse("qat_epochs", f"quantize = {v.quantize!r} trains nothing quantization-aware",
                   "remove it, or set quantize = 'qat' or 'pqat'")
        if mode not in FLOAT_MODES and "sparse_encoding" in keys:
            kind = "dynamic-range" if mode == "dynamic" else mode
            refuse("sparse_encoding", f"quantize = {v.quantize!r} files are always dense (sparse {kind} files do not "
                   "run under XNNPACK)", "remove it: it applies to float32 and float16 files")
        if "order" in keys and len(structural) < 2:
            refuse("order", "it orders a blocks and a channels table, and the variant has "
                   + (f"only a {structural[0]} table" if structural else "neither"))
    if "fine_tune_epochs" in keys and not structural and sparsity is None:
        refuse("fine_tune_epochs", "the variant prunes nothing (no channels, blocks or TF-MOT sparsity)",
               "remove it" + (" (QAT fine-tunes for its own epochs)" if qat else ""))
    if "learning_rate" in keys and not (recovers(v) or sparsity or (qat and qat.epochs > 0)):
        refuse("learning_rate", "nothing in the variant fine-tunes")
    for key in (k for k in RECOVERY_KEYS if k in keys):
        if not structural:
            refuse(key, "it shapes the recovery fine-tune of a channels or blocks step, and the variant has none "
                   "(TF-MOT's and QAT's fine-tunes do not read it)")
        elif v.fine_tune_epochs <= 0:
            refuse(key, "fine_tune_epochs = 0, so the structural steps are not fine-tuned",
                   "remove it, or set fine_tune_epochs > 0")
        elif key in ("distill_temperature", "distill_alpha") and not v.distill:
            refuse(key, "distill = false", "remove it, or set distill = true")
    return out


def recipe_findings(data: dict, r) -> list[Finding]:
    """The keys of [model], [data] and [baseline] that nothing in the recipe reads."""
    out: list[Finding] = []
    tables = {t: data.get(t) if isinstance(data.get(t), dict) else {} for t in ("model", "data", "baseline")}

    def refuse(table, key, reason, fix="remove it", scopes=()):
        if key in tables[table]:
            out.append(Finding(f"[{table}]", key, reason, fix, (table, *scopes), (table, key)))

    if r.model.architecture == "mobilenet_v2":
        refuse("model", "dropout", "keras.applications' MobileNetV2 has no dropout layer",
               "remove it, or use mobilenet_v1 or a mobilenet_v3 architecture")
    b = r.baseline
    epochs = b.epochs if b.epochs is not None else (3.0 if r.model.architecture else 0.0)
    untrained = ("the baseline is not trained (epochs = 0)" if b.epochs is not None
                 else "the baseline of a model file is not trained unless epochs is set")
    if epochs <= 0:
        for key in ("batch_size", "learning_rate", "lr_schedule", "warmup_epochs", "cache"):
            refuse("baseline", key, untrained, "remove it, or set epochs > 0 to train the baseline", ("model",))
    elif b.lr_schedule == "constant":
        refuse("baseline", "warmup_epochs", "it warms up into the cosine schedule, and lr_schedule = 'constant'",
               "remove it, or set lr_schedule = 'cosine'")
    recovering = [v for v in r.variants if recovers(v)]
    if epochs <= 0 and not recovering:
        refuse("baseline", "optimizer", f"{untrained}, and no variant fine-tunes a channels or blocks step "
               "(TF-MOT's and QAT's fine-tunes use Adam)", scopes=("model", "variant:*"))
    for key in ("augment", "label_smoothing"):
        if epochs <= 0 and not any(getattr(v, key) is None for v in recovering):
            refuse("baseline", key, f"{untrained}, and no variant's recovery fine-tune inherits it",
                   "remove it, or set it on the variants that fine-tune", ("model", "variant:*"))
    if b.reference_accuracy is None:
        refuse("baseline", "reference", "it says where reference_accuracy was measured, and there is none",
               "add reference_accuracy (what the model reaches trained to convergence), or remove reference")

    def calibrates(v) -> bool:  # int8 by post-training calibration, which reads the representative images
        qat = any(s.kind in ("qat", "pqat") for s in v.steps)
        return v.steps[-1].mode == "int8" and (not qat or bool(r.bench.input_shapes))

    if not any(calibrates(v) for v in r.variants):
        refuse("data", "representative_count", "no variant converts to int8 by calibration on representative "
               "images", scopes=("variant:*", "bench"))
    return out


def _scope(path: tuple[str, ...]) -> str:
    return f"variant:{path[1]}" if path[0] == "variant" else (path[0] if len(path) > 1 else "recipe")


def _touches(scopes, changed) -> bool:
    """Any scope met by a changed one; "variant:*" meets every variant's."""
    def meets(s: str, c: str) -> bool:
        return s == c or "variant:*" in (s, c) and s.startswith("variant:") and c.startswith("variant:")

    return any(meets(s, c) for s in scopes for c in changed)


def settle(findings: list[Finding], overrides: list[tuple[tuple[str, ...], str]], variant_count: int):
    """The findings to refuse, first to last, and those let pass because the command line changed
    what decides them: (refused, passed). `overrides` are (path, "key=value") with a variant
    override for every variant written ("variant", "*", KEY)."""
    refused, passed, blanket_hits = [], [], {}
    for f in findings:
        own = [item for p, item in overrides if p[:len(f.path)] == f.path]
        blanket = [item for p, item in overrides
                   if p[:2] == ("variant", "*") and f.path[0] == "variant" and p[2:3] == f.path[2:3]]
        if own:
            refused.append(f)
        elif blanket:
            passed.append(f)
            blanket_hits.setdefault(blanket[0], []).append(f)
        elif _touches(f.scopes, [_scope(p) for p, _ in overrides]):
            passed.append(f)
        else:
            refused.append(f)
    for item, hits in blanket_hits.items():
        if len({f.path[1] for f in hits}) == variant_count:
            first = hits[0]
            raise RecipeError(f"override {item!r} applies to no variant of the recipe ({first.at} {first.key} does "
                              f"not apply: {first.reason})", "drop the override")
    return refused, passed

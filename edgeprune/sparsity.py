"""TF-MOT sparsity: unstructured magnitude pruning and 2:4, with schedules, fine-tuning under a
strategy, stripping, and measurement of what was really achieved, layer by layer.

TF-MOT's masks update only on steps where (step - begin_step) % frequency == 0, so a short
fine-tune with the default frequency of 100 ends with no sparsity at all. We pick a frequency
that fits the fine-tune, and then measure the stripped weights instead of trusting the schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from edgeprune import progress
from edgeprune.errors import PruningError, RecipeError

TOLERANCE = 0.01  # a targeted layer may end at most one point below target
# What pruning does with layers the model freezes (trainable = False, itself or through a nested model):
# "unfreeze" prunes them and fine-tunes them with the rest (BatchNormalization keeps its flag), "keep"
# prunes them frozen (their kept weights never adapt), "skip" leaves them dense. The model's flags are
# restored on the result in every case.
FROZEN_MODES = ("unfreeze", "keep", "skip")
FROZEN_SKIP_REASON = "frozen (trainable = False) in the model and left dense (frozen = skip)"
DENSE_REASONS = {
    "DepthwiseConv2D": "TF-MOT wraps DepthwiseConv2D but never prunes it (its prune registry lists no weights)",
    "BatchNormalization": "no prunable weights",
}


@dataclass
class LayerSparsity:
    name: str
    kind: str
    weights: int
    zeros: int
    targeted: bool
    reason: str = ""

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "weights": self.weights, "zeros": self.zeros,
                "sparsity": round(self.sparsity, 6), "targeted": self.targeted, "reason": self.reason}


@dataclass
class SparsityReport:
    method: str
    target: float | None
    layers: list[LayerSparsity] = field(default_factory=list)
    m_by_n_ok: bool | None = None
    schedule: dict = field(default_factory=dict)
    frozen: dict = field(default_factory=dict)  # {"mode", "layers"}: prunable layers the model freezes

    @property
    def targeted_sparsity(self) -> float:
        t = [lay for lay in self.layers if lay.targeted]
        w = sum(lay.weights for lay in t)
        return sum(lay.zeros for lay in t) / w if w else 0.0

    @property
    def overall_sparsity(self) -> float:
        w = sum(lay.weights for lay in self.layers)
        return sum(lay.zeros for lay in self.layers) / w if w else 0.0

    def to_dict(self) -> dict:
        return {"method": self.method, "target": self.target, "schedule": self.schedule,
                "targeted_sparsity": round(self.targeted_sparsity, 6),
                "overall_sparsity": round(self.overall_sparsity, 6), "m_by_n_ok": self.m_by_n_ok,
                "frozen": self.frozen, "layers": [lay.to_dict() for lay in self.layers]}


# TF-MOT's public API (tfmot.sparsity.keras) exports no layer registry and no wrapper class: which
# layers and weights `prune_low_magnitude` wraps is known only to its private PruneRegistry, and the
# wrappers it makes are instances of the private PruneLowMagnitude. edgeprune must agree with TF-MOT
# exactly on both (what is pruned, what is reported as dense and why), so it reads them where TF-MOT
# keeps them, pinned by tensorflow-model-optimization==0.8.1 in pyproject.toml.


def _kernel_of(layer):
    """(attribute, weight) measured for a layer: the weight TF-MOT prunes when its registry names
    one (a SeparableConv's pointwise kernel, not its depthwise kernel), else the layer's kernel."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    registered = prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__) or []
    for attr in (*[n for n in registered if "." not in n], "kernel", "depthwise_kernel", "pointwise_kernel",
                 "embeddings"):
        w = getattr(layer, attr, None)
        if w is not None:
            return attr, w
    return None, None


def resolve_skip(model, patterns: list[str]) -> set[str]:
    """Layer names to leave dense. '@first_conv' is the first Conv2D, '@classifier' the last Dense;
    anything else is a regex over layer names, and one that matches nothing is an error."""
    from edgeprune._tf import keras

    layers = list(_all_layers(model))  # nested models (a base model used as a layer) included
    names = [lay.name for lay in layers]
    skip: set[str] = set()
    for pattern in patterns:
        for token in [t.strip() for t in pattern.split(",")] if pattern.startswith("@") else [pattern]:
            if token == "@first_conv":
                convs = [lay.name for lay in layers if type(lay) is keras.layers.Conv2D]
                skip.update(convs[:1])
            elif token == "@classifier":
                dense = [lay.name for lay in layers if isinstance(lay, keras.layers.Dense)]
                skip.update(dense[-1:])
            elif token.startswith("@"):
                raise RecipeError(f"unknown skip name {token!r}", "use @first_conv, @classifier or a regex")
            else:
                try:
                    rx = re.compile(token)
                except re.error as e:
                    raise RecipeError(f"skip pattern {token!r} is not a valid regex: {e}", "fix the pattern") from None
                hits = [n for n in names if rx.search(n)]
                if not hits:
                    sample = ", ".join(names[:4])
                    raise RecipeError(f"skip pattern {token!r} matches no layer of {model.name}",
                                      f"layer names look like: {sample}, ...")
                skip.update(hits)
    return skip


def make_schedule(method: str, schedule: str, target: float, initial: float, begin_step: int, end_step: int,
                  frequency: int | None, total_steps: int):
    """Returns (tfmot schedule, a dict describing it). Frequency defaults to one mask update per
    step for short fine-tunes, so the final target is always reached."""
    import tensorflow_model_optimization as tfmot

    if begin_step >= total_steps:
        raise RecipeError(f"begin_step {begin_step} is past the fine-tune's last step ({total_steps - 1})",
                          "lower begin_step or fine-tune longer")
    freq = frequency or (1 if total_steps <= 2000 else 100)
    if method == "2:4":
        sched = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=begin_step, frequency=freq)
        return sched, {"kind": "m_by_n", "m": 2, "n": 4, "begin_step": begin_step, "frequency": freq}
    if schedule == "constant":
        end = end_step
        sched = tfmot.sparsity.keras.ConstantSparsity(target, begin_step=begin_step, end_step=end, frequency=freq)
        return sched, {"kind": "constant", "target": target, "begin_step": begin_step, "end_step": end,
                       "frequency": freq, "steps": total_steps}
    end = end_step if end_step >= 0 else max(begin_step + 1, int((total_steps - 1) * 0.75))
    end = begin_step + ((end - begin_step) // freq) * freq  # the final update must land on a mask step
    if end <= begin_step or end >= total_steps:
        raise RecipeError(f"polynomial schedule from step {begin_step} to {end} does not fit {total_steps} steps "
                          f"at frequency {freq}", "fine-tune longer or lower frequency / end_step")
    sched = tfmot.sparsity.keras.PolynomialDecay(initial, target, begin_step=begin_step, end_step=end, power=3,
                                                 frequency=freq)
    return sched, {"kind": "polynomial", "initial": initial, "target": target, "begin_step": begin_step,
                   "end_step": end, "frequency": freq, "steps": total_steps}


def apply_pruning(model, method: str, sched, skip: set[str], strategy):
    """Wraps every prunable, non-skipped layer with prune_low_magnitude under `strategy`."""
    import tensorflow_model_optimization as tfmot

    from edgeprune.train import clone_in_scope

    from edgeprune._tf import keras

    targeted = []

    def wrap(layer):
        # The layer passed in belongs to a private copy of the model, so wrapping it (and training
        # the wrapper) keeps its trained weights and never touches the caller's model.
        if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
            return keras.models.clone_model(layer, clone_function=wrap)  # a nested base model
        if layer.name in skip or not _prunable(layer):
            return layer
        targeted.append(layer.name)
        kwargs = {"pruning_schedule": sched}
        if method == "2:4":
            kwargs["sparsity_m_by_n"] = (2, 4)
        return tfmot.sparsity.keras.prune_low_magnitude(layer, **kwargs)

    private = clone_in_scope(model, strategy)
    with strategy.scope():
        wrapped = keras.models.clone_model(private, clone_function=wrap)
    if not targeted:
        raise PruningError(f"no layer of {model.name} can be pruned after skipping {sorted(skip)}",
                           "loosen the skip patterns; TF-MOT prunes Conv2D and Dense kernels")
    return wrapped, targeted


def _prunable(layer) -> bool:
    """True when `apply_pruning` wraps the layer (unless skipped): registered, with prunable weights."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return prune_registry.PruneRegistry.supports(layer) and bool(_prunable_weights(layer))


def _is_fixed_false(value) -> bool:
    return isinstance(value, (bool, int, np.bool_, np.integer)) and not value


def pinned_wrappers(model, pinned_by: str | None = None) -> list[tuple[object, str]]:
    """Pruning wrappers that fit() never calls in training mode, each with the layer that pins it.
    TF-MOT's wrapper counts its step and updates its mask only inside a training call, and a layer
    called with a fixed training=False (the transfer-learning `base(x, training=False)`) passes
    False to every layer inside it, so without help those layers keep a mask of ones."""
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    found = []
    for layer in model.layers:
        nodes = layer.inbound_nodes
        fixed = bool(nodes) and all(_is_fixed_false(n.call_kwargs.get("training")) for n in nodes)
        by = pinned_by or (layer.name if fixed else None)
        if isinstance(layer, PruneLowMagnitude):
            if by:
                found.append((layer, by))
        elif hasattr(layer, "layers") and layer.layers:
            found.extend(pinned_wrappers(layer, by))
    return found


def _pinned_mask_updates(wrappers):
    """A callback that does, before every batch, what a training call does in TF-MOT's wrapper:
    count the step and update the mask on schedule. The forward pass, in inference mode as the
    model asks (BatchNormalization on its moving statistics), still multiplies by the mask."""
    from edgeprune._tf import keras, tf

    @tf.function
    def update():
        for w in wrappers:
            w.pruning_step.assign_add(1)
            w.pruning_obj.conditional_mask_update()

    class _Update(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            update()

    return _Update()


def _nested(layer) -> bool:
    return bool(getattr(layer, "layers", None))


def trainable_flags(model) -> dict[str, bool]:
    """Every layer's own `trainable` flag by name, the layers of nested models included."""
    flags = {}
    for layer in model.layers:
        flags[layer.name] = layer.trainable
        if _nested(layer):
            flags.update(trainable_flags(layer))
    return flags


def frozen_layers(model, frozen_above: bool = False) -> set[str]:
    """Names of the layers that do not train: their own flag is False, or a model holding them is."""
    names = set()
    for layer in model.layers:
        frozen = frozen_above or not layer.trainable
        if _nested(layer):
            names |= frozen_layers(layer, frozen)
        elif frozen:
            names.add(layer.name)
    return names


def set_trainable_flags(model, flags: dict[str, bool]) -> None:
    """Sets the flags of `trainable_flags` top-down: setting a model's flag sets it on every layer
    inside, so the layers inside are set after their model. A pruning wrapper takes the flag of
    the layer it wraps. (Cloning a model loses a nested model's own flag; this puts it back.)"""
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    for layer in model.layers:
        name = layer.layer.name if isinstance(layer, PruneLowMagnitude) else layer.name
        if name in flags:
            layer.trainable = flags[name]
        if _nested(layer):
            set_trainable_flags(layer, flags)


def _fine_tune_flags(model, mode: str) -> dict[str, bool]:
    flags = trainable_flags(model)
    if mode != "unfreeze":
        return flags
    # BatchNormalization keeps its flag: a frozen one normalizes with its moving statistics
    bn = {lay.name for lay in _all_layers(model) if "BatchNormalization" in type(lay).__name__}
    return {name: flag if name in bn else True for name, flag in flags.items()}


def _prunable_weights(layer) -> list:
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if isinstance(layer, prune_registry.prunable_layer.PrunableLayer):
        return layer.get_prunable_weights()
    names = prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__, [])
    return list(names)


def measure(model, targeted: set[str], skip: set[str], method: str, target: float | None,
            reasons: dict[str, str] | None = None) -> SparsityReport:
    """Zero fractions of every conv/dense/depthwise kernel, read from the (stripped) weights.
    `reasons` names why a layer left dense on purpose stayed dense, before the default reasons."""
    report = SparsityReport(method=method, target=target)
    for layer in _all_layers(model):
        attr, w = _kernel_of(layer)
        if w is None:
            continue
        values = w.numpy()
        kind = type(layer).__name__
        is_target = layer.name in targeted
        if is_target:
            reason = ""
        elif reasons and layer.name in reasons:
            reason = reasons[layer.name]
        elif layer.name in skip:
            reason = "skipped by the recipe's skip patterns"
        else:
            reason = DENSE_REASONS.get(kind, f"TF-MOT does not prune {kind}")
        report.layers.append(LayerSparsity(layer.name, kind, int(values.size), int(np.sum(values == 0)),
                                           is_target, reason))
    return report


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer


def mask_update_steps(schedule: dict) -> int:
    """How many steps of the fine-tune update the masks: TF-MOT counts steps from 1 and updates on
    steps s >= begin_step with (s - begin_step) % frequency == 0, up to end_step when it is set."""
    total, begin, freq = schedule.get("steps", 0), schedule.get("begin_step", 0), schedule.get("frequency", 1)
    end = schedule.get("end_step", -1)
    last = total if end is None or end < 0 else min(total, end)
    first = begin if begin >= 1 else begin + freq * ((1 - begin + freq - 1) // freq)
    return 0 if last < first else (last - first) // freq + 1


def check_target(report: SparsityReport, steps_seen: dict[str, int] | None = None) -> None:
    """Fails loudly when a targeted layer ends more than one point below the target, with the
    cause: layers that never ran a training step (`steps_seen`, each wrapper's final pruning step),
    a schedule that updates masks at no step of the fine-tune, or neither."""
    if report.target is None or report.method != "unstructured":
        return
    low = [lay for lay in report.layers if lay.targeted and lay.sparsity < report.target - TOLERANCE]
    if not low:
        return
    worst = min(low, key=lambda lay: lay.sparsity)
    what = (f"{len(low)} targeted layers ended below the {report.target:.0%} target (worst: {worst.name} at "
            f"{worst.sparsity:.1%}; schedule {report.schedule})")
    idle = [lay.name for lay in low if steps_seen is not None and steps_seen.get(lay.name, 1) <= 0]
    if idle:
        raise PruningError(
            f"{what}: {len(idle)} of them ({', '.join(idle[:3])}{', ...' if len(idle) > 3 else ''}) never ran a "
            "training step, and TF-MOT updates a mask only when its layer is called in training mode",
            "call those layers (or the model holding them) without a fixed `training` argument and save the model "
            "again, or leave them dense with a skip pattern")
    if report.schedule and mask_update_steps(report.schedule) == 0:
        raise PruningError(f"{what}: the schedule updates the masks at no step of the fine-tune",
                           "masks update only every `frequency` steps after begin_step: lower frequency or "
                           "fine-tune longer")
    raise PruningError(f"{what}, although the masks were updated on {mask_update_steps(report.schedule)} steps",
                       "this is a TF-MOT fault or a layer TF-MOT cannot mask; leave those layers dense with a skip "
                       "pattern and report it")


def m_by_n_violations(kernel: np.ndarray, m: int = 2, n: int = 4) -> int:
    """Groups of n along the input-channel axis (TFLite layout) holding more than m non-zeros.
    Conv kernels are (kh, kw, cin, cout); Dense kernels are (in, out)."""
    if kernel.ndim == 4:
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    elif kernel.ndim == 2:
        rows = kernel.T
    else:
        return 0
    cin = rows.shape[1]
    pad = (-cin) % n
    if pad:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), rows.dtype)], axis=1)
    groups = rows.reshape(rows.shape[0], -1, n)
    return int(np.sum(np.count_nonzero(groups, axis=-1) > m))


def check_m_by_n(model, report: SparsityReport) -> None:
    bad = []
    for layer in _all_layers(model):
        if layer.name not in {lay.name for lay in report.layers if lay.targeted}:
            continue
        _, w = _kernel_of(layer)
        v = m_by_n_violations(w.numpy())
        if v:
            bad.append(f"{layer.name} ({v} groups)")
    report.m_by_n_ok = not bad
    if bad:
        raise PruningError(f"the 2:4 pattern does not hold in {', '.join(bad[:5])}",
                           "this is a TF-MOT fault; check the layer shapes and report it")


def prune(model, method: str, x: np.ndarray, y: np.ndarray, *, schedule: str = "constant", target: float = 0.5,
          initial: float = 0.0, begin_step: int = 0, end_step: int = -1, frequency: int | None = None,
          skip_patterns: list[str] | None = None, epochs: float = 1.0, batch_size: int = 256,
          learning_rate: float = 5e-4, strategy=None, log_dir: str | None = None, seed: int = 0,
          frozen: str = "unfreeze"):
    """Fine-tunes `model` under TF-MOT pruning and returns (stripped model, SparsityReport).
    `frozen` says what happens to layers the model freezes (FROZEN_MODES): by default they are
    pruned and fine-tuned with the rest, because a pruned layer that cannot train does not recover
    (measured on a transfer-learned MobileNetV2, 50 %: 20 points lost frozen, none unfrozen)."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    from edgeprune.train import compile_classifier, fit, get_strategy, steps_for

    if method not in ("unstructured", "2:4"):
        raise RecipeError(f"unknown pruning method {method!r}", "use unstructured or 2:4")
    if not 0.0 <= target < 1.0:
        raise RecipeError(f"target sparsity {target} is outside [0, 1)", "use e.g. 0.5 for half the weights zero")
    if frozen not in FROZEN_MODES:
        raise RecipeError(f"unknown frozen-layer mode {frozen!r}", f"use one of: {', '.join(FROZEN_MODES)}")
    strategy = strategy or get_strategy("default")
    skip = resolve_skip(model, skip_patterns if skip_patterns is not None else ["@first_conv,@classifier"])
    flags = trainable_flags(model)
    frozen_now = frozen_layers(model) - skip
    frozen_prunable = sorted(lay.name for lay in _all_layers(model) if lay.name in frozen_now and _prunable(lay))
    reasons = {}
    if frozen == "skip":
        reasons = {n: FROZEN_SKIP_REASON for n in frozen_prunable}
        skip = skip | set(frozen_prunable)
    total = steps_for(len(x), batch_size, epochs)
    sched, sched_info = make_schedule(method, schedule, target, initial, begin_step, end_step, frequency, total)
    progress.log(f"pruning {method} to {target if method == 'unstructured' else '2:4'} over {total} steps "
                 f"(mask update every {sched_info['frequency']})")
    wrapped, targeted = apply_pruning(model, method, sched, skip, strategy)
    set_trainable_flags(wrapped, _fine_tune_flags(model, frozen))
    if frozen_prunable:
        progress.log(f"{len(frozen_prunable)} prunable layers are frozen in {model.name}: " + {
            "unfreeze": "pruned and fine-tuned with the rest, then frozen again",
            "keep": "pruned and kept frozen (their kept weights do not adapt)",
            "skip": "left dense"}[frozen])
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]  # first: it sets every step to 0
    pinned = pinned_wrappers(wrapped)
    if pinned:
        by = sorted({b for _, b in pinned})
        progress.log(f"{len(pinned)} pruned layers run in inference mode (inside {', '.join(by)}, called with "
                     "training=False): their masks are updated by edgeprune on TF-MOT's schedule")
        callbacks.append(_pinned_mask_updates([w for w, _ in pinned]))
    if log_dir:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    with strategy.scope():
        compile_classifier(wrapped, learning_rate)
    fit(wrapped, x, y, epochs, batch_size, f"fine-tune ({method})", callbacks=callbacks, seed=seed,
        strategy=strategy)
    steps_seen = {w.layer.name: int(w.pruning_step.numpy())
                  for w in pruning_wrapper.collect_prunable_layers(wrapped)}
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    set_trainable_flags(stripped, flags)
    report = measure(stripped, set(targeted), skip, method, target if method == "unstructured" else 0.5, reasons)
    report.schedule = sched_info
    if frozen_prunable:
        report.frozen = {"mode": frozen, "layers": frozen_prunable}
    if method == "2:4":
        check_m_by_n(stripped, report)
    else:
        check_target(report, steps_seen)
    return stripped, report

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
                "layers": [lay.to_dict() for lay in self.layers]}


def _kernel_of(layer):
    for attr in ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"):
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
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    from edgeprune.train import clone_in_scope

    from edgeprune._tf import keras

    targeted = []

    def wrap(layer):
        # The layer passed in belongs to a private copy of the model, so wrapping it (and training
        # the wrapper) keeps its trained weights and never touches the caller's model.
        if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
            return keras.models.clone_model(layer, clone_function=wrap)  # a nested base model
        if layer.name in skip or not prune_registry.PruneRegistry.supports(layer) or not _prunable_weights(layer):
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


def _prunable_weights(layer) -> list:
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if isinstance(layer, prune_registry.prunable_layer.PrunableLayer):
        return layer.get_prunable_weights()
    names = prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__, [])
    return list(names)


def measure(model, targeted: set[str], skip: set[str], method: str, target: float | None) -> SparsityReport:
    """Zero fractions of every conv/dense/depthwise kernel, read from the (stripped) weights."""
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


def check_target(report: SparsityReport) -> None:
    """Fails loudly when a targeted layer ends more than one point below the target."""
    if report.target is None or report.method != "unstructured":
        return
    low = [lay for lay in report.layers if lay.targeted and lay.sparsity < report.target - TOLERANCE]
    if low:
        worst = min(low, key=lambda lay: lay.sparsity)
        raise PruningError(
            f"{len(low)} targeted layers ended below the {report.target:.0%} target (worst: {worst.name} at "
            f"{worst.sparsity:.1%}; schedule {report.schedule})",
            "masks update only every `frequency` steps after begin_step: lower frequency or fine-tune longer")


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
          learning_rate: float = 5e-4, strategy=None, log_dir: str | None = None, seed: int = 0):
    """Fine-tunes `model` under TF-MOT pruning and returns (stripped model, SparsityReport)."""
    import tensorflow_model_optimization as tfmot

    from edgeprune.train import compile_classifier, fit, get_strategy, steps_for

    if method not in ("unstructured", "2:4"):
        raise RecipeError(f"unknown pruning method {method!r}", "use unstructured or 2:4")
    if not 0.0 <= target < 1.0:
        raise RecipeError(f"target sparsity {target} is outside [0, 1)", "use e.g. 0.5 for half the weights zero")
    strategy = strategy or get_strategy("default")
    skip = resolve_skip(model, skip_patterns if skip_patterns is not None else ["@first_conv,@classifier"])
    total = steps_for(len(x), batch_size, epochs)
    sched, sched_info = make_schedule(method, schedule, target, initial, begin_step, end_step, frequency, total)
    progress.log(f"pruning {method} to {target if method == 'unstructured' else '2:4'} over {total} steps "
                 f"(mask update every {sched_info['frequency']})")
    wrapped, targeted = apply_pruning(model, method, sched, skip, strategy)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    if log_dir:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    with strategy.scope():
        compile_classifier(wrapped, learning_rate)
    fit(wrapped, x, y, epochs, batch_size, f"fine-tune ({method})", callbacks=callbacks, seed=seed,
        strategy=strategy)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    report = measure(stripped, set(targeted), skip, method, target if method == "unstructured" else 0.5)
    report.schedule = sched_info
    if method == "2:4":
        check_m_by_n(stripped, report)
    else:
        check_target(report)
    return stripped, report

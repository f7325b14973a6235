"""Public API: a Keras 3 file -> a tf_keras model, with a record of what the translation did."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeprune import progress
from edgeprune.errors import SchemaError
from edgeprune.keras3.build import build_model
from edgeprune.keras3.detect import Source, read_source
from edgeprune.keras3.plan import ModelPlan, make_plan, refuse
from edgeprune.keras3.reference import load_reference, uses_mixed_precision
from edgeprune.keras3.rules import MIXED_PRECISION_NOTE
from edgeprune.keras3.verify import DEFAULT_ATOL, DEFAULT_CHECK_BATCH, check_args, verify_translation
from edgeprune.keras3.weights import transfer_k3_to_tfk


SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Keras3Translation:
    """What `load_keras3` did: where the model came from and how closely the translation matches."""

    source_format: str  # "keras" (zip archive) or "h5"
    keras_version: str
    layers_translated: int  # Keras 3 layers (nested models included, inputs excluded)
    ops_translated: int  # Keras 3 operations rewritten as tf_keras TFOpLambda layers
    max_abs_diff: float  # over all outputs, on `check_batch` random inputs
    tolerance: float  # the absolute bound applied: atol * max(1, output_scale)
    atol: float
    output_scale: float  # largest |output| of the Keras 3 model on the check inputs
    check_batch: int
    notes: tuple = ()  # what the translation changed on purpose (e.g. mixed precision -> float32)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return {"schema_version": SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict) -> "Keras3Translation":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"Keras 3 translation record has schema_version {version!r}, expected {SCHEMA_VERSION}",
                hint="re-run the translation with this edgeprune version",
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"schema_version"})
        missing = sorted(fields - set(data))
        if unknown or missing:
            raise SchemaError(
                f"Keras 3 translation record has unknown keys {unknown} and missing keys {missing}",
                hint="the record is corrupt; re-run the translation",
            )
        values = {k: data[k] for k in fields}
        values["notes"] = tuple(values["notes"])
        return cls(**values)


def load_keras3(path, check_batch: int = DEFAULT_CHECK_BATCH, atol: float = DEFAULT_ATOL):
    """Read a model saved by Keras 3 and return (tf_keras model, Keras3Translation).

    Every layer is translated or the model is refused with a ModelError naming every layer that
    cannot be translated. The tf_keras model's outputs are checked against the Keras 3 model's
    on `check_batch` random inputs (standard normal; spread by 1/scale when an input feeds a
    Rescaling layer): a difference above atol * max(1, largest |output|) is refused with the
    layer where the outputs first diverge."""
    check_args(check_batch, atol)
    path = Path(path)
    source = read_source(path)
    progress.log(f"{path.name}: saved by Keras {source.keras_version}, translating to tf_keras")
    plan, problems = make_plan(source.config)
    if problems or plan is None:
        refuse(problems, path)
    layer_count = sum(1 for e in plan.walk() if e.kind in ("layer", "model"))
    op_count = sum(1 for e in plan.walk() if e.kind == "op")
    with progress.task("Translating Keras 3 model", total=3) as task:
        k3_model = load_reference(source)
        task.advance(status="Keras 3 model loaded")
        built = build_model(plan)
        transfer_k3_to_tfk(plan, k3_model, built.model)
        task.advance(status="tf_keras model built")
        diff, bound, scale = verify_translation(built, k3_model, check_batch, atol, path.name)
        task.advance(status=f"outputs agree within {diff:.2g}")
    info = Keras3Translation(
        source_format=source.format,
        keras_version=source.keras_version,
        layers_translated=layer_count,
        ops_translated=op_count,
        max_abs_diff=diff,
        tolerance=bound,
        atol=float(atol),
        output_scale=scale,
        check_batch=check_batch,
        notes=_notes(plan, source),
    )
    return built.model, info


def _notes(plan: ModelPlan, source: Source) -> tuple[str, ...]:
    """What the translation changed on purpose, for the report."""
    notes = []
    if uses_mixed_precision(source.config):
        notes.append(MIXED_PRECISION_NOTE)
    expanded = sorted({e.name for e in plan.walk() if e.expansion is not None})
    if expanded:
        notes.append(f"{len(expanded)} hard_sigmoid/hard_swish activation(s) rebuilt from tf_keras layers as tf_keras' "
                     f"MobileNetV3 writes them (relu6(x + 3) / 6), e.g. {', '.join(expanded[:3])}")
    pinned = sorted({e.name for e in plan.walk()
                     if e.kind == "model" and any(kw.get("training") is not None for _, kw in e.nodes)})
    if pinned:
        notes.append(f"nested model(s) {', '.join(pinned)} called with a fixed `training`: dropped, as Keras 3 passes "
                     "the caller's flag over it (fit() trains them in training mode) and the translation does too")
    regrouped = [p.name for p in [plan, *(e.sub for e in plan.walk() if e.kind == "model")]
                 if p.kind == "sequential" and not p.as_sequential]
    if regrouped:
        notes.append(f"Sequential model(s) {', '.join(regrouped)} rebuilt as functional: an expanded activation "
                     "needs a branch")
    return tuple(notes)

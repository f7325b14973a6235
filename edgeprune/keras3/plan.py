"""The plan: a Keras 3 model config decoded and translated, before anything is built."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeprune.errors import ModelError
from edgeprune.keras3.rules import (
    EXPANDED_ACTIVATIONS,
    MODEL_CLASSES,
    Untranslatable,
    short,
    tf_ops,
    translate_dtype,
    translate_layer_config,
)


@dataclasses.dataclass(frozen=True)
class Ref:
    """A tensor in the Keras 3 graph: output `tensor` of call `node` of layer `layer`."""

    layer: str
    node: int
    tensor: int


def _decode(value):
    """Node arguments as written by Keras 3 -> Python values with Ref for tensors."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        class_name = value.get("class_name")
        config = value.get("config") or {}
        if class_name == "__keras_tensor__":
            history = config.get("keras_history")
            if not history:
                raise Untranslatable("a call argument is a Keras tensor without history")
            return Ref(history[0], int(history[1]), int(history[2]))
        if class_name == "__slice__":
            return slice(_decode(config.get("start")), _decode(config.get("stop")), _decode(config.get("step")))
        if class_name == "__ellipsis__":
            return Ellipsis
        if class_name in ("__numpy__", "__tensor__"):
            return np.array(config["value"], dtype=config["dtype"])
        if class_name == "__bytes__":
            return config["value"].encode("utf-8")
        if class_name is not None and "config" in value:
            raise Untranslatable(f"a call argument is a serialized '{class_name}' object")
        return {k: _decode(v) for k, v in value.items()}
    return value


def map_refs(value, fn):
    if isinstance(value, Ref):
        return fn(value)
    if isinstance(value, list):
        return [map_refs(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(map_refs(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_refs(v, fn) for k, v in value.items()}
    return value


def refs_in(value) -> list[Ref]:
    found: list[Ref] = []
    map_refs(value, lambda r: found.append(r) or r)
    return found


def _decode_io(value):
    """input_layers / output_layers: a [name, node, tensor] leaf, or lists/dicts of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int):
        return Ref(value[0], value[1], value[2])
    if isinstance(value, list):
        return [_decode_io(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_io(v) for k, v in value.items()}
    raise Untranslatable(f"model inputs/outputs {value!r} are not understood")


@dataclasses.dataclass
class Entry:
    """One layer, operation, input or nested model of a Keras 3 model config."""

    name: str
    class_name: str
    kind: str  # "input" | "layer" | "op" | "model"
    nodes: list  # [(args, kwargs)], tensors in them stand as Ref markers
    # kind "input"
    batch_shape: tuple | None = None
    dtype: str | None = None
    sparse: bool = False
    # kind "layer"
    tfk_class: type | None = None
    tfk_config: dict | None = None
    expansion: Callable | None = None
    # kind "op"
    op_fn: Callable | None = None
    op_config: dict | None = None
    op_module: str | None = None  # Keras 3 module of the op class, for the reference side
    # kind "model"
    sub: "ModelPlan | None" = None


@dataclasses.dataclass
class ModelPlan:
    name: str
    kind: str  # "functional" | "sequential"
    entries: list
    inputs: Any  # structure of Ref
    outputs: Any  # structure of Ref

    def walk(self):
        for e in self.entries:
            yield e
            if e.kind == "model":
                yield from e.sub.walk()

    @property
    def as_sequential(self) -> bool:
        """Built as a tf_keras Sequential when every layer maps to exactly one tf_keras layer."""
        return self.kind == "sequential" and all(
            e.kind == "input" or (e.kind == "layer" and e.expansion is None and e.tfk_class is not None)
            or (e.kind == "model" and e.sub is not None)
            for e in self.entries
        )


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    class_name: str
    reason: str

    def __str__(self):
        return f"{self.path} ({self.class_name}: {self.reason})"


def is_op_entry(entry: dict) -> bool:
    module = entry.get("module")
    if module is not None:
        return str(module).startswith("keras.src.ops") or str(module).startswith("keras.ops")
    # Keras 3 .h5 files drop "module": every layer config has "trainable", no operation's has.
    config = entry.get("config") or {}
    return "trainable" not in config and entry.get("class_name") in tf_ops()


class _Planner:
    def __init__(self):
        self.problems: list[Problem] = []
        self.ops = tf_ops()

    def plan_model(self, config: dict, prefix: str = "") -> ModelPlan | None:
        class_name = config.get("class_name")
        inner = config.get("config") or {}
        name = inner.get("name", "model")
        path = prefix + name
        if class_name == "Sequential":
            return self._plan_sequential(inner, path)
        if class_name in ("Functional", "Model") and "layers" in inner and "input_layers" in inner:
            return self._plan_functional(inner, path)
        self.problems.append(Problem(path, str(class_name), "subclassed model: its layers and call() are Python code"))
        return None

    def _plan_functional(self, inner: dict, path: str) -> ModelPlan:
        entries = []
        for raw in inner["layers"]:
            entry = self._plan_entry(raw, path + "/", raw.get("name") or (raw.get("config") or {}).get("name"))
            if entry is not None:
                entries.append(entry)
        try:
            inputs = _decode_io(inner["input_layers"])
            outputs = _decode_io(inner["output_layers"])
        except Untranslatable as e:
            self.problems.append(Problem(path, "Functional", str(e)))
            inputs = outputs = []
        return ModelPlan(inner.get("name", path), "functional", entries, inputs, outputs)

    def _plan_sequential(self, inner: dict, path: str) -> ModelPlan | None:
        layers = list(inner.get("layers") or [])
        entries = []
        if layers and layers[0].get("class_name") == "InputLayer":
            first = layers.pop(0)
            entry = self._plan_entry({**first, "inbound_nodes": []}, path + "/", first["config"].get("name"))
        else:
            shape = inner.get("build_input_shape")
            if shape is None:
                self.problems.append(Problem(path, "Sequential", "the model was never built, so it has no weights"))
                return None
            entry = Entry(f"{inner.get('name', 'sequential')}_input", "InputLayer", "input", [],
                           batch_shape=tuple(shape), dtype="float32")
        if entry is None:
            return None
        entries.append(entry)
        previous = Ref(entry.name, 0, 0)
        for raw in layers:
            name = (raw.get("config") or {}).get("name")
            raw = {**raw, "inbound_nodes": []}
            e = self._plan_entry(raw, path + "/", name)
            if e is None:
                continue
            e.nodes = [([previous], {})]
            entries.append(e)
            previous = Ref(e.name, 0, 0)
        return ModelPlan(inner.get("name", path), "sequential", entries, Ref(entries[0].name, 0, 0), previous)

    def _plan_entry(self, raw: dict, prefix: str, name: str | None) -> Entry | None:
        class_name = str(raw.get("class_name"))
        config = raw.get("config") or {}
        name = name or config.get("name") or "?"
        path = prefix + name
        try:
            nodes = [self._decode_node(n) for n in raw.get("inbound_nodes") or []]
            if class_name == "InputLayer":
                return self._plan_input(name, config)
            if class_name in MODEL_CLASSES and isinstance(config, dict) and "layers" in config:
                sub = self.plan_model(raw, prefix)
                if sub is None:
                    return None
                return Entry(name, class_name, "model", nodes, sub=sub)
            if is_op_entry(raw):
                return self._plan_op(name, class_name, raw, config, nodes)
            module = str(raw.get("module") or "keras.layers")
            registered = str(raw.get("registered_name") or "")
            # Built-in layers live in keras.*; keras_hub/keras_cv/user layers are custom code, and
            # .h5 files name registered custom classes "package>Class".
            if not (module == "keras" or module.startswith("keras.")) or ">" in registered or ">" in class_name:
                raise Untranslatable("custom layer: its computation is Python code outside Keras")
            tfk_class, tfk_config, expansion = translate_layer_config(class_name, config)
            if tfk_class is not None:
                try:
                    tfk_class.from_config(dict(tfk_config))
                except (TypeError, ValueError, KeyError) as e:
                    raise Untranslatable(f"tf_keras refuses the translated config: {short(e)}") from e
            return Entry(name, class_name, "layer", nodes, tfk_class=tfk_class, tfk_config=tfk_config,
                          expansion=expansion)
        except Untranslatable as e:
            self.problems.append(Problem(path, class_name, str(e)))
            return None

    def _decode_node(self, node):
        if isinstance(node, dict) and "args" in node:
            return list(_decode(node["args"])), dict(_decode(node.get("kwargs") or {}))
        raise Untranslatable(f"call record {str(node)[:80]} is not in the Keras 3 format")

    def _plan_input(self, name: str, config: dict) -> Entry:
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        if shape is None:
            raise Untranslatable("the input has no shape")
        if config.get("ragged"):
            raise Untranslatable("ragged inputs are not supported")
        if config.get("optional"):
            raise Untranslatable("optional inputs are not supported")
        return Entry(name, "InputLayer", "input", [], batch_shape=tuple(shape),
                      dtype=translate_dtype(config.get("dtype")) or "float32", sparse=bool(config.get("sparse")))

    def _plan_op(self, name, class_name, raw, config, nodes) -> Entry:
        fn = self.ops.get(class_name)
        if fn is None:
            raise Untranslatable("Keras 3 operation with no translation in edgeprune")
        op_config = {k: _decode(v) for k, v in config.items() if k != "name"}
        if isinstance(fn, str):  # activation-like ops expanded into layers
            if op_config:
                raise Untranslatable(f"arguments {sorted(op_config)} are not supported")
            expansion = EXPANDED_ACTIVATIONS[fn]
            return Entry(name, class_name, "op", nodes, expansion=expansion, op_config={},
                          op_module=raw.get("module"))
        for args, kwargs in nodes:
            try:
                inspect.signature(fn).bind(*args, **kwargs, **op_config)
            except TypeError as e:
                raise Untranslatable(f"call arguments not supported: {short(e)}") from e
        return Entry(name, class_name, "op", nodes, op_fn=fn, op_config=op_config, op_module=raw.get("module"))


def make_plan(source_config: dict) -> tuple[ModelPlan | None, list[Problem]]:
    planner = _Planner()
    plan = planner.plan_model(source_config)
    return plan, planner.problems


def refuse(problems: list[Problem], path: Path):
    listed = "; ".join(str(p) for p in problems)
    raise ModelError(
        f"cannot translate the Keras 3 model {path.name} to tf_keras: {len(problems)} layer(s) have no "
        f"translation: {listed}",
        hint="replace these layers with built-in Keras layers (or rebuild the model in tf_keras) and save it again",
    )

"""tf_keras -> Keras 3 (export): the model rebuilt with Keras 3 layers and ops, its weights
copied, written as a .keras file and proven equal when Keras 3 reads it back."""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

from edgeprune import progress
from edgeprune.errors import ModelError, OutputError
from edgeprune.keras3 import libs
from edgeprune.keras3.export_rules import k3_name, reverse_layer_config, reverse_ops
from edgeprune.keras3.plan import Problem
from edgeprune.keras3.rules import Untranslatable, short
from edgeprune.keras3.verify import (
    DEFAULT_ATOL,
    DEFAULT_CHECK_BATCH,
    call_k3,
    check_args,
    max_abs_diff,
    random_inputs,
    tolerance_for,
)
from edgeprune.keras3.weights import copy_weights, k3_weight_names, tfk_weight_names


class _Exporter:
    """Rebuilds a tf_keras model with Keras 3 layers and ops, node by node."""

    def __init__(self):
        self.problems: list[Problem] = []
        self.ops = reverse_ops()

    def model(self, tfk_model, prefix: str = ""):
        keras = libs.keras3()
        tfk = libs.tfk()
        path = prefix + tfk_model.name
        if isinstance(tfk_model, tfk.Sequential):
            layers = []
            for layer in tfk_model.layers:
                converted = self.layer(layer, path + "/")
                if converted is not None:
                    layers.append(converted)
            shape = tfk_model.inputs[0].shape.as_list() if tfk_model.inputs else None
            if shape is None:
                self.problems.append(Problem(path, "Sequential", "the model was never built"))
                return None
            head = keras.Input(batch_shape=tuple(shape), dtype=tfk_model.inputs[0].dtype.name)
            return keras.Sequential([head, *layers], name=k3_name(tfk_model.name), trainable=tfk_model.trainable)
        if not getattr(tfk_model, "_is_graph_network", False):
            self.problems.append(Problem(path, type(tfk_model).__name__, "subclassed model"))
            return None
        return self._functional(tfk_model, path)

    def layer(self, layer, prefix: str):
        tfk = libs.tfk()
        if isinstance(layer, tfk.Model):
            return self.model(layer, prefix)
        try:
            cls, config = reverse_layer_config(layer)
            return cls.from_config(config)
        except Untranslatable as e:
            self.problems.append(Problem(prefix + layer.name, type(layer).__name__, str(e)))
        except (TypeError, ValueError) as e:
            self.problems.append(Problem(prefix + layer.name, type(layer).__name__,
                                          f"Keras 3 refuses the translated config: {short(e)}"))
        return None

    def _functional(self, tfk_model, path: str):
        keras = libs.keras3()
        tf = libs.tf()
        tensors: dict = {}
        created: dict = {}

        def key_of(t):
            layer, node_index, tensor_index = t._keras_history
            return (layer.name, node_index, tensor_index)

        def convert(value):
            if hasattr(value, "_keras_history"):  # a tf_keras symbolic tensor
                return tensors[key_of(value)]
            if isinstance(value, tf.Tensor):
                array = value.numpy()
                return array.item() if array.ndim == 0 else array
            if isinstance(value, (list, tuple)):
                return type(value)(convert(v) for v in value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        layer_names = {k3_name(layer.name) for layer in tfk_model.layers}
        depths = sorted(tfk_model._nodes_by_depth, reverse=True)
        failed = False
        for depth in depths:
            for node in tfk_model._nodes_by_depth[depth]:
                layer = node.layer
                if node.is_input:
                    t = node.outputs
                    tensors[key_of(t)] = keras.Input(batch_shape=tuple(t.shape.as_list()), dtype=t.dtype.name,
                                                     name=k3_name(layer.name))
                    continue
                if layer.name not in created:
                    created[layer.name] = self._callable(layer, path + "/")
                fn = created[layer.name]
                if fn is None:
                    failed = True
                    continue
                if failed:
                    continue
                args = convert(list(node.call_args))
                kwargs = {k: v for k, v in convert(dict(node.call_kwargs)).items() if v is not None}
                try:
                    out = fn(*args, **kwargs)
                except (TypeError, ValueError) as e:
                    self.problems.append(Problem(path + "/" + layer.name, type(layer).__name__,
                                                  f"cannot be called in Keras 3: {short(e)}"))
                    failed = True
                    continue
                flat_tfk = tf.nest.flatten(node.outputs)
                flat_k3 = keras.tree.flatten(out)
                for t, o in zip(flat_tfk, flat_k3):
                    tensors[key_of(t)] = o
                    if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
                        self._rename_op(o, layer_names)
        if failed or self.problems:
            return None
        inputs = tf.nest.map_structure(lambda t: tensors[key_of(t)], tfk_model._nested_inputs)
        outputs = tf.nest.map_structure(lambda t: tensors[key_of(t)], tfk_model._nested_outputs)
        return keras.Model(inputs=inputs, outputs=outputs, name=k3_name(tfk_model.name),
                           trainable=tfk_model.trainable)

    @staticmethod
    def _rename_op(tensor, taken: set):
        """Keras 3 names an operation after its class ("multiply", "multiply_3", ...), which can be
        the name of a tf_keras layer in the same model (tf_keras names Multiply layers alike):
        Keras 3 then refuses the model. Such an operation gets a free name."""
        history = getattr(tensor, "_keras_history", None)
        operation = history[0] if history else None
        if operation is None or operation.name not in taken:
            if operation is not None:
                taken.add(operation.name)
            return
        base, n = operation.name, 1
        while f"{base}_op{n}" in taken:
            n += 1
        operation.name = f"{base}_op{n}"
        taken.add(operation.name)

    def _callable(self, layer, prefix: str):
        tfk = libs.tfk()
        symbol = getattr(layer, "symbol", None)
        if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
            fn = self.ops.get(symbol)
            if fn is None:
                self.problems.append(Problem(prefix + layer.name, type(layer).__name__,
                                              f"TensorFlow op tf.{symbol} has no Keras 3 translation"))
                return None
            signature = inspect.signature(layer.function)

            def call(*args, **kwargs):
                bound = signature.bind(*args, **kwargs)
                return fn(**bound.arguments)

            return call
        if isinstance(layer, tfk.layers.InputLayer):
            return None
        return self.layer(layer, prefix)


def _transfer_tfk_to_k3(tfk_model, k3_model, prefix=""):
    tfk = libs.tfk()
    for layer in tfk_model.layers:
        if type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda", "InputLayer"):
            continue
        dst = k3_model.get_layer(k3_name(layer.name))
        if isinstance(layer, tfk.Model):
            _transfer_tfk_to_k3(layer, dst, prefix + layer.name + "/")
        elif layer.weights or dst.weights:
            copy_weights(layer, dst, tfk_weight_names(layer), k3_weight_names(dst), prefix + layer.name)


def _tfk_model_inputs(model, batch: int):
    shapes = [(tuple(t.shape.as_list()), t.dtype.name) for t in model.inputs]
    arrays = random_inputs(shapes, batch)
    return arrays[0] if len(arrays) == 1 else arrays


def save_keras3(model, path, check_batch: int = DEFAULT_CHECK_BATCH, atol: float = DEFAULT_ATOL) -> dict:
    """Write a tf_keras model as a Keras 3 `.keras` file (temp name, then rename), after checking
    that the file, read back by Keras 3, gives the tf_keras model's outputs within `atol` on
    `check_batch` random inputs. Returns {"max_abs_diff", "tolerance", "keras_version", "path"}."""
    check_args(check_batch, atol)
    tfk = libs.tfk()
    path = Path(path)
    if path.suffix != ".keras":
        raise OutputError(f"a Keras 3 model file must end in .keras, got {path.name}",
                          hint=f"use {path.with_suffix('.keras').name}")
    if not isinstance(model, tfk.Model):
        raise ModelError(f"save_keras3 needs a tf_keras model, got {type(model).__name__}",
                         hint="load the model with edgeprune first")
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist", hint="create it first")
    keras = libs.keras3()
    exporter = _Exporter()
    with progress.task("Writing Keras 3 model", total=3) as task:
        k3_model = exporter.model(model)
        if exporter.problems or k3_model is None:
            listed = "; ".join(str(p) for p in exporter.problems)
            raise ModelError(
                f"cannot write {model.name} as a Keras 3 model: {len(exporter.problems)} layer(s) have no Keras 3 "
                f"translation: {listed}",
                hint="export it as .tflite or tf_keras .h5 instead",
            )
        _transfer_tfk_to_k3(model, k3_model)
        task.advance(status="Keras 3 model built")
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            keras.saving.save_model(k3_model, tmp, overwrite=True)
            task.advance(status="written")
            reloaded = keras.saving.load_model(tmp, compile=False, safe_mode=True)
            x = _tfk_model_inputs(model, check_batch)
            expected = model(x, training=False)
            diff = max_abs_diff(expected, call_k3(reloaded, x))
            bound = tolerance_for(atol, expected)
            if not diff <= bound:
                raise ModelError(
                    f"the Keras 3 file written for {model.name} differs from the tf_keras model by {diff:.3g} on "
                    f"random inputs (tolerance {bound:.3g})",
                    hint="export it as .tflite or tf_keras .h5 instead, and report the model",
                )
            os.replace(tmp, path)
            task.advance(status=f"outputs agree within {diff:.2g}")
        finally:
            if tmp.exists():
                tmp.unlink()
    return {"max_abs_diff": diff, "tolerance": bound, "atol": float(atol), "keras_version": keras.__version__,
            "path": str(path)}

"""Export to .tflite, and verification of every export before anything is reported: it loads and
runs in the default LiteRT interpreter (XNNPACK), its accuracy is measured through the
interpreter, its top-1 agreement with the baseline is counted, and a float32 export must match
the Keras outputs within FLOAT32_ATOL x max(1, |output|)."""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass, field

import numpy as np

from edgeprune import progress
from edgeprune._native import quiet_native_stderr
from edgeprune.errors import DataError, InternalError, RecipeError

MODES = ("float32", "float16", "dynamic", "int8", "qat")  # qat: a quantize-aware model -> int8
FLOAT32_ATOL = 1e-4


def convert(model, mode: str = "float32", representative: np.ndarray | None = None,
            sparse: bool = False) -> bytes:
    """Converts a tf_keras model to a .tflite flatbuffer. `mode`: float32, float16, dynamic (range),
    int8 (full integer, float I/O; needs `representative`), qat (a quantize-aware model).
    `sparse` adds Optimize.EXPERIMENTAL_SPARSITY (sparse tensor encoding)."""
    from edgeprune._tf import tf

    if mode not in MODES:
        raise RecipeError(f"unknown export mode {mode!r}", f"use one of: {', '.join(MODES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # Converting the traced function directly skips a SavedModel round trip that took about half
    # the conversion time (measured: MobileNetV2 0.35 at 32x32, 34.6 s -> 16.3 s on 2 cores).
    converter.experimental_lower_to_saved_model = False
    optimizations = []
    if mode in ("float16", "dynamic", "int8", "qat"):
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative is None or len(representative) == 0:
            raise DataError("int8 export needs representative data for calibration",
                            "give the recipe a [data] table (the int8 set is drawn from its training split)")
        reps = np.asarray(representative, dtype=np.float32)

        def gen():
            for i in range(len(reps)):
                yield [reps[i:i + 1]]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with progress.task(f"convert ({mode}{', sparse' if sparse else ''})", None), quiet_native_stderr(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter's notes on calibration statistics, not for users
            return converter.convert()
    except Exception as e:  # the converter raises many unrelated types; keep the cause in the message
        raise InternalError(f"the TFLite converter failed for mode {mode}: {type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]}", "report this with the model") from e


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


class TFLiteModel:
    """A loaded .tflite model that runs batches, quantizing int8/uint8 I/O as its parameters say."""

    def __init__(self, content: bytes, num_threads: int = 2, use_xnnpack: bool = True):
        from ai_edge_litert import interpreter as litert

        kwargs = {"model_content": content, "num_threads": num_threads}
        if not use_xnnpack:
            kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with quiet_native_stderr():
            self.interpreter = litert.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = 1

    def _resize(self, batch: int) -> None:
        if batch != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.batch = batch

    def predict(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            self._resize(len(chunk))
            dtype = self.input["dtype"]
            if dtype in (np.int8, np.uint8):
                scale, zero = self.input["quantization"]
                info = np.iinfo(dtype)
                chunk = np.clip(np.round(chunk / scale + zero), info.min, info.max).astype(dtype)
            else:
                chunk = chunk.astype(dtype)
            self.interpreter.set_tensor(self.input["index"], chunk)
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output["index"])
            if self.output["dtype"] in (np.int8, np.uint8):
                scale, zero = self.output["quantization"]
                out = (out.astype(np.float32) - zero) * scale
            outs.append(out.astype(np.float32))
        return np.concatenate(outs)


@dataclass
class Verification:
    ok: bool
    runs_in_default_interpreter: bool
    accuracy: float | None = None
    agreement: float | None = None
    max_abs_diff_vs_keras: float | None = None
    tolerance: float | None = None
    failures: list[str] = field(default_factory=list)
    samples: int = 0

    def to_dict(self) -> dict:
        return {"ok": self.ok, "runs_in_default_interpreter": self.runs_in_default_interpreter,
                "accuracy": self.accuracy, "agreement": self.agreement,
                "max_abs_diff_vs_keras": self.max_abs_diff_vs_keras, "tolerance": self.tolerance,
                "failures": list(self.failures), "samples": self.samples}


def verify(content: bytes, x_test: np.ndarray, y_test: np.ndarray, baseline_top1: np.ndarray | None = None,
           keras_model=None, float32: bool = False, threads: int = 2) -> Verification:
    """Runs every check on one export. Never raises for a failing export: the failure is recorded."""
    failures = []
    try:
        model = TFLiteModel(content, num_threads=threads)
        probe = model.predict(x_test[:1])
        if not np.all(np.isfinite(probe)):
            failures.append("the default interpreter returned non-finite outputs")
    except (ValueError, RuntimeError) as e:
        return Verification(False, False, failures=[f"does not run in the default LiteRT interpreter (XNNPACK): "
                                                    f"{' '.join(str(e).split())[:200]}"])
    with progress.task("verify through LiteRT", None):
        probs = model.predict(x_test)
    top1 = np.argmax(probs, axis=-1)
    result = Verification(True, True, accuracy=float(np.mean(top1 == y_test)), samples=int(len(x_test)))
    if baseline_top1 is not None:
        result.agreement = float(np.mean(top1 == baseline_top1))
    if float32 and keras_model is not None:
        n = min(len(x_test), 256)
        ref = keras_model(x_test[:n], training=False).numpy()
        diff = float(np.max(np.abs(ref - probs[:n])))
        # relative to the outputs' scale: logits of magnitude 50 carry float32 rounding above 1e-4
        tol = FLOAT32_ATOL * max(1.0, float(np.max(np.abs(ref))))
        result.max_abs_diff_vs_keras, result.tolerance = diff, tol
        if diff > tol:
            failures.append(f"float32 outputs differ from Keras by {diff:.2e} (> {tol:.1e})")
    result.failures = failures
    result.ok = not failures
    return result

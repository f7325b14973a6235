"""Reads a .tflite flatbuffer without TensorFlow: tensors (dtype, shape, bytes, zero fraction,
quantization, sparse encoding), operators, inputs and outputs. Used by `edgeprune inspect` and by
the checks on every export."""

from __future__ import annotations

from dataclasses import dataclass, field
import struct
from pathlib import Path

import numpy as np

from edgeprune.errors import InputFileError

_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8,
             "INT64": np.int64, "INT16": np.int16, "INT8": np.int8, "FLOAT64": np.float64, "BOOL": np.bool_,
             "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: list[int]
    bytes: int
    is_constant: bool
    zero_fraction: float | None
    sparse: bool
    quantization: dict | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TFLiteInfo:
    path: str
    size_bytes: int
    version: int
    ops: list[str]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def has_sparse_tensors(self) -> bool:
        return any(t.sparse for t in self.tensors)

    @property
    def has_densify(self) -> bool:
        return "DENSIFY" in self.op_counts

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def constant_zero_fraction(self, min_size: int = 64) -> float:
        """Zero fraction over constant tensors with at least `min_size` elements (the weights)."""
        total = zeros = 0
        for t in self.tensors:
            if t.is_constant and t.zero_fraction is not None:
                n = int(np.prod(t.shape)) if t.shape else 1
                if n >= min_size:
                    total += n
                    zeros += int(round(t.zero_fraction * n))
        return zeros / total if total else 0.0

    def to_dict(self) -> dict:
        return {"path": self.path, "size_bytes": self.size_bytes, "version": self.version,
                "op_counts": self.op_counts, "has_sparse_tensors": self.has_sparse_tensors,
                "has_densify": self.has_densify, "inputs": [self.tensors[i].to_dict() for i in self.inputs],
                "outputs": [self.tensors[i].to_dict() for i in self.outputs],
                "tensors": [t.to_dict() for t in self.tensors]}


def read(path_or_bytes: Path | str | bytes, name: str | None = None) -> TFLiteInfo:
    from ai_edge_litert import schema_py_generated as schema

    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, label = bytes(path_or_bytes), name or "<bytes>"
    else:
        p = Path(path_or_bytes)
        if not p.is_file():
            raise InputFileError(f"file not found: {p}", "check the path of the .tflite file")
        data, label = p.read_bytes(), str(p)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputFileError(f"{label} is not a TFLite flatbuffer (no TFL3 identifier)",
                             "give a .tflite file written by the TFLite converter")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as e:
        raise InputFileError(f"{label} is corrupt or truncated ({type(e).__name__})",
                             "export it again") from None
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    if not model.subgraphs:
        raise InputFileError(f"{label} has no subgraph", "export it again")
    sub = model.subgraphs[0]
    opcodes = []
    for oc in model.operatorCodes or []:
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        opcodes.append(oc.customCode.decode() if oc.customCode else op_names.get(code, str(code)))
    ops = [opcodes[op.opcodeIndex] for op in (sub.operators or [])]
    counts: dict[str, int] = {}
    for o in ops:
        counts[o] = counts.get(o, 0) + 1
    tensors = []
    for i, t in enumerate(sub.tensors or []):
        dtype = type_names.get(t.type, str(t.type))
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        raw = None
        if buf is not None and buf.data is not None and len(buf.data):
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif buf is not None and getattr(buf, "offset", 0) and buf.size:
            raw = data[buf.offset:buf.offset + buf.size]
        zero_fraction = None
        if raw is not None and dtype in _NP_TYPES:
            arr = np.frombuffer(raw, dtype=_NP_TYPES[dtype]) if len(raw) % np.dtype(_NP_TYPES[dtype]).itemsize == 0 \
                else None
            if arr is not None and arr.size:
                zp = None
                if t.quantization is not None and t.quantization.zeroPoint is not None and \
                        len(t.quantization.zeroPoint) == 1 and dtype in ("INT8", "UINT8"):
                    zp = int(t.quantization.zeroPoint[0])
                zero_fraction = float(np.mean(arr == (zp if zp is not None else 0)))
        if t.sparsity is not None and raw is not None and dtype in _NP_TYPES:
            # A sparse tensor stores only its non-zero values: the zero fraction follows from counts.
            stored = len(raw) // np.dtype(_NP_TYPES[dtype]).itemsize
            dense = int(np.prod(t.shape)) if t.shape is not None and len(t.shape) else 0
            zero_fraction = 1.0 - stored / dense if dense else None
        q = None
        if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale):
            scales = np.asarray(t.quantization.scale, dtype=np.float64)
            zps = np.asarray(t.quantization.zeroPoint if t.quantization.zeroPoint is not None else [0])
            q = {"channels": int(scales.size), "scale_min": float(scales.min()), "scale_max": float(scales.max()),
                 "zero_point_min": int(zps.min()), "zero_point_max": int(zps.max()),
                 "axis": int(t.quantization.quantizedDimension or 0)}
        shape = [int(v) for v in (t.shape if t.shape is not None else [])]
        tname = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        tensors.append(TensorInfo(i, tname, dtype, shape, len(raw) if raw is not None else 0, raw is not None,
                                  zero_fraction, t.sparsity is not None, q))
    return TFLiteInfo(label, len(data), int(model.version), ops, tensors, [int(v) for v in sub.inputs],
                      [int(v) for v in sub.outputs], counts)

"""Reads a .tflite flatbuffer without TensorFlow: tensors (dtype, shape, bytes, zero fraction,
quantization, sparse encoding), operators, inputs and outputs. Used by `edgeprune inspect` and by
the checks on every export.

A damaged file is refused with an InputFileError that says what is wrong, never another error:
the reader checks what the LiteRT interpreter trusts (indices in range, buffers inside the file,
constant data the size of its tensor) before anything hands the file to it, and `check_runs`
loads and runs it once in a child process, so that a file that crashes the interpreter is
refused by its own path instead of taking the caller down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import InputFileError, InternalError

_AGAIN = "export it again, or copy it again if a transfer cut it short"
# A tensor over 2 GiB is taken for a damaged shape: a flatbuffer holds at most 2 GiB, an activation
# that size is far beyond the phones and boards edgeprune targets, and trusting the shape would
# make the interpreter (or `eval`'s data preparation) try to allocate it.
MAX_TENSOR_BYTES = 2**31
# The child that runs a file once gets this much address space, then fails instead of swapping.
RUN_CHECK_MEMORY = 4 << 30
RUN_CHECK_TIMEOUT_S = 120.0

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
    """Reads and checks a .tflite file (or its bytes; `name` labels them in messages). Raises
    InputFileError, and nothing else, for a missing, unreadable, damaged or truncated file."""
    from ai_edge_litert import schema_py_generated as schema

    data, label = _load(path_or_bytes, name)
    model = _unpack(data, label)
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    _validate(model, data, label, type_names)
    sub = model.subgraphs[0]
    opcodes = []
    for oc in model.operatorCodes or []:
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        opcodes.append(oc.customCode.decode() if oc.customCode else op_names.get(code, str(code)))
    ops = [opcodes[int(op.opcodeIndex or 0)] for op in (sub.operators or [])]
    counts: dict[str, int] = {}
    for o in ops:
        counts[o] = counts.get(o, 0) + 1
    tensors = []
    for i, t in enumerate(sub.tensors or []):
        dtype = type_names[t.type]
        buf = model.buffers[t.buffer] if model.buffers else None
        raw = None
        if buf is not None and buf.data is not None and len(buf.data):
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif buf is not None and int(buf.offset or 0) > 1 and buf.size:
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
            zps = np.asarray(t.quantization.zeroPoint if t.quantization.zeroPoint is not None and
                             len(t.quantization.zeroPoint) else [0])
            q = {"channels": int(scales.size), "scale_min": float(scales.min()), "scale_max": float(scales.max()),
                 "zero_point_min": int(zps.min()), "zero_point_max": int(zps.max()),
                 "axis": int(t.quantization.quantizedDimension or 0)}
        name_text = t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")  # UTF-8: checked
        tensors.append(TensorInfo(i, name_text, dtype, _ints(t.shape), len(raw) if raw is not None else 0,
                                  raw is not None, zero_fraction, t.sparsity is not None, q))
    return TFLiteInfo(label, len(data), int(model.version or 0), ops, tensors, _ints(sub.inputs),
                      _ints(sub.outputs), counts)


def read_bytes(path: Path | str) -> bytes:
    """The bytes of a .tflite file; InputFileError for a path that is missing, a folder or unreadable."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{p} is a folder, not a .tflite file",
                             "give the path of a .tflite file (a run folder keeps its exports in tflite/)")
    if not p.exists():
        raise InputFileError(f"file not found: {p}", "check the path of the .tflite file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise InputFileError(f"cannot read {p}: {e.strerror or e}",
                             "check that the file is readable") from None


def _load(path_or_bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), name or "<bytes>"
    return read_bytes(path_or_bytes), name or str(path_or_bytes)


def _unpack(data: bytes, label: str):
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputFileError(f"{label} is not a TFLite flatbuffer (no TFL3 identifier)",
                             "give a .tflite file written by the TFLite converter")
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception:  # generated decoding code on damaged bytes fails in many ways, all meaning this
        raise InputFileError(f"{label} is corrupt or truncated: its tables and vectors point outside its "
                             f"{len(data):,} bytes", _AGAIN) from None


class _Corrupt:
    """Raises the one error every failed structural check gives: the file, what is wrong, the fix."""

    def __init__(self, label: str):
        self.label = label

    def __call__(self, what: str) -> InputFileError:
        return InputFileError(f"{self.label} is corrupt or truncated: {what}", _AGAIN)


def _text(value, what: str, corrupt: _Corrupt) -> str:
    if value is None:
        return ""
    try:
        return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
    except UnicodeDecodeError:
        raise corrupt(f"{what} is not UTF-8 text") from None


def _ints(values) -> list[int]:
    return [int(v) for v in (values if values is not None else [])]


def _validate(model, data: bytes, label: str, type_names: dict[int, str]) -> None:
    """What the interpreter trusts and a damaged file breaks: every index points at something
    that exists, every buffer lies inside the file, constant data fits its tensor's shape, a shape
    agrees with its signature (the same dimensions, -1 where the size is free), names are text."""
    corrupt = _Corrupt(label)
    if not model.subgraphs:
        raise corrupt("it has no subgraph")
    buffers = model.buffers or []
    for b, buf in enumerate(buffers):
        offset, size = int(buf.offset or 0), int(buf.size or 0)
        if offset > 1 and offset + size > len(data):
            raise corrupt(f"buffer {b} lies at bytes {offset:,}-{offset + size:,}, past the end of its "
                          f"{len(data):,} bytes")
    for c, oc in enumerate(model.operatorCodes or []):
        _text(oc.customCode, f"the name of custom opcode {c}", corrupt)
    for s, sub in enumerate(model.subgraphs):
        where = f"subgraph {s}" if len(model.subgraphs) > 1 else "the graph"
        _check_indices(sub, where, len(model.operatorCodes or []), s == 0, corrupt)
        for i, t in enumerate(sub.tensors or []):
            _check_tensor(t, f"tensor {i} of {where}", buffers, type_names, corrupt)


def _check_indices(sub, where: str, n_opcodes: int, main: bool, corrupt: _Corrupt) -> None:
    n = len(sub.tensors or [])
    for kind in ("inputs", "outputs"):
        idx = _ints(getattr(sub, kind))
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise corrupt(f"{where} lists tensor {bad[0]} among its {kind}, but it has {n} tensors")
        if main and not idx:
            raise corrupt(f"{where} has no {kind}")
    for k, op in enumerate(sub.operators or []):
        if not 0 <= int(op.opcodeIndex or 0) < n_opcodes:
            raise corrupt(f"operator {k} of {where} uses opcode {op.opcodeIndex}, but the file defines "
                          f"{n_opcodes} opcodes")
        for kind in ("inputs", "outputs", "intermediates"):
            bad = [i for i in _ints(getattr(op, kind)) if not -1 <= i < n]  # -1: an optional tensor left out
            if bad:
                raise corrupt(f"operator {k} of {where} lists tensor {bad[0]} among its {kind}, but {where} "
                              f"has {n} tensors")


def _check_tensor(t, what: str, buffers: list, type_names: dict[int, str], corrupt: _Corrupt) -> None:
    _text(t.name, f"the name of {what}", corrupt)
    dtype = type_names.get(t.type)
    if dtype is None:
        raise corrupt(f"{what} has the unknown type code {t.type}")
    shape = _ints(t.shape)
    if any(d < 0 for d in shape):
        raise corrupt(f"{what} has the shape {shape}, with a negative size")
    signature = _ints(t.shapeSignature) if t.shapeSignature is not None else None
    if signature is not None and (len(signature) != len(shape) or
                                  any(g not in (-1, d) for g, d in zip(signature, shape))):
        raise corrupt(f"{what} has the shape {shape} but the shape signature {signature}")
    size = _dense_bytes(dtype, shape)
    if size is not None and size > MAX_TENSOR_BYTES:
        raise corrupt(f"{what} has the shape {shape}, {size:,} bytes: more than a tensor can hold "
                      f"({MAX_TENSOR_BYTES >> 30} GiB)")
    if not 0 <= int(t.buffer or 0) < max(len(buffers), 1):
        raise corrupt(f"{what} uses buffer {t.buffer}, but the file has {len(buffers)} buffers")
    stored = _stored_bytes(buffers[t.buffer] if buffers else None)
    if t.sparsity is not None:
        _check_sparsity(t.sparsity, len(shape), what, corrupt)
    elif stored and size is not None and size != stored:
        raise corrupt(f"{what} ({dtype} {'x'.join(map(str, shape)) or 'scalar'}) needs {size:,} bytes of "
                      f"data, but its buffer {t.buffer} holds {stored:,}")
    if t.quantization is not None:
        _check_quantization(t.quantization, shape, what, corrupt)


_ITEM_BITS = {"FLOAT32": 32, "FLOAT16": 16, "BFLOAT16": 16, "INT32": 32, "UINT8": 8, "INT64": 64, "BOOL": 8,
              "INT16": 16, "COMPLEX64": 64, "INT8": 8, "FLOAT64": 64, "COMPLEX128": 128, "UINT64": 64,
              "UINT32": 32, "UINT16": 16, "INT4": 4, "UINT4": 4, "INT2": 2, "FLOAT8_E4M3FN": 8,
              "FLOAT8_E5M2": 8}


def _dense_bytes(dtype: str, shape: list[int]) -> int | None:
    """Bytes of a dense constant of this type and shape (sub-byte types packed); None when the
    type has no fixed size (STRING, RESOURCE, VARIANT)."""
    bits = _ITEM_BITS.get(dtype)
    if bits is None:
        return None
    count = 1
    for d in shape:
        count *= d
    return (count * bits + 7) // 8


def _stored_bytes(buf) -> int:
    if buf is None:
        return 0
    if buf.data is not None and len(buf.data):
        return len(buf.data)
    return int(buf.size or 0) if int(buf.offset or 0) > 1 else 0


def _check_sparsity(sp, rank: int, what: str, corrupt: _Corrupt) -> None:
    order, block_map, dims = _ints(sp.traversalOrder), _ints(sp.blockMap), sp.dimMetadata or []
    n = rank + len(block_map)
    if sorted(order) != list(range(n)) or len(dims) != n or any(not 0 <= b < rank for b in block_map):
        raise corrupt(f"the sparse encoding of {what} does not fit its {rank} dimensions")


def _check_quantization(q, shape: list[int], what: str, corrupt: _Corrupt) -> None:
    scales = q.scale if q.scale is not None else []
    zero_points = q.zeroPoint if q.zeroPoint is not None else []
    if not len(scales):
        return
    if len(zero_points) and len(zero_points) != len(scales):
        raise corrupt(f"{what} has {len(scales)} quantization scales but {len(zero_points)} zero points")
    if not np.all(np.isfinite(np.asarray(scales, dtype=np.float64))):
        raise corrupt(f"{what} has a quantization scale that is not a finite number")
    if len(scales) > 1:
        axis = int(q.quantizedDimension or 0)
        if not 0 <= axis < len(shape) or shape[axis] != len(scales):
            raise corrupt(f"{what} (shape {shape}) has {len(scales)} per-channel scales along "
                          f"dimension {axis}")


# Runs in the child: load, allocate, one invoke on zeros. A Python-level refusal comes back as JSON
# (exit 3); a native crash is the child's death by a signal; a missing runtime is exit 4.
_RUN_ONCE = r"""
import json, sys
path, xnnpack, limit = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except (ImportError, ValueError, OSError):
    pass  # no address-space limit here: the timeout still bounds the check
try:
    import numpy as np
    from ai_edge_litert import interpreter as litert
except ImportError as e:
    print(json.dumps({"setup": str(e)}))
    sys.exit(4)
kwargs = {"model_path": path, "num_threads": 1}
if not xnnpack:
    kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
try:
    interpreter = litert.Interpreter(**kwargs)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        if np.dtype(d["dtype"]).kind in "biuf":
            interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interpreter.invoke()
except MemoryError:
    print(json.dumps({"error": f"it needs more than {limit >> 30} GiB of memory"}))
    sys.exit(3)
except Exception as e:
    print(json.dumps({"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}))
    sys.exit(3)
"""


def check_runs(path: Path | str, use_xnnpack: bool = True, timeout: float = RUN_CHECK_TIMEOUT_S,
               hint: str = "check it with `edgeprune inspect`, and export it again") -> None:
    """Loads the file in the LiteRT interpreter and runs it once on zeros, in a child process with
    bounded memory and time, so that a file the interpreter crashes on (a damaged index it does not
    check) becomes an InputFileError naming `path` instead of the caller's death. Read the file
    with read() first: this check is for what the structure cannot show. `hint` ends every refusal."""
    label = str(path)
    argv = [sys.executable, "-c", _RUN_ONCE, str(Path(path).resolve()), "1" if use_xnnpack else "0",
            str(RUN_CHECK_MEMORY)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InputFileError(f"{label} did not load and run once in LiteRT within {timeout:g} s",
                             hint) from None
    if r.returncode == 0:
        return
    if r.returncode < 0:
        try:
            how = signal.Signals(-r.returncode).name
        except ValueError:
            how = f"signal {-r.returncode}"
        raise InputFileError(f"{label} crashes the LiteRT interpreter ({how}) when loaded and run once", hint)
    reply = _last_json(r.stdout)
    if r.returncode == 3 and "error" in reply:
        how = "LiteRT with XNNPACK" if use_xnnpack else "LiteRT without XNNPACK"
        raise InputFileError(f"{label} does not load and run in {how}: {reply['error']}", hint)
    detail = (reply.get("setup") or " ".join((r.stderr or r.stdout).split())[-300:]
              or f"exit code {r.returncode}")
    raise InternalError(f"could not run {label} in LiteRT to check it: {detail}",
                        "check that ai-edge-litert is installed for " + sys.executable)


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}

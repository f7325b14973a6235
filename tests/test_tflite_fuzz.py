"""Damaged .tflite files never crash the reader or the commands that take one: seeded mutants (byte
and bit flips, truncations, indices, lengths and offsets put out of range) of two real flatbuffers,
a float32 and an int8 export of a tiny tf_keras CNN, each also laid out with its weights after the
flatbuffer (buffer offsets, as files over 2 GB are). `tflite_file.read` takes every mutant in
process; `inspect`, `eval` and `bench --target local` take a sample each, through the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_bench_failures import snapshot

SEED = 20261202
COUNTS = {"float32": 200, "int8": 200, "float32 offsets": 100, "int8 offsets": 100}
SAMPLE = 40  # mutants per command through the CLI
BENCH_QUICK = ["--runs", "1", "--warmup", "0", "--min-secs", "0"]
RESULT_FILES = ["bench.csv", "bench.json", "bench.md", "report.html"]
DAMAGE = ("opcode", "operator input", "graph output", "no input", "tensor buffer", "data size", "huge shape",
          "signature", "name", "buffer offset", "cut")  # one file each, see the `damaged` fixture


def with_offset_buffers(data: bytes) -> bytes:
    """The same model with its constant data after the flatbuffer, reached by buffer offset and
    size, as the converter lays out files over 2 GB."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    blobs = []
    for b in m.buffers:
        if b.data is not None and len(b.data):
            blobs.append((b, np.asarray(b.data, np.uint8).tobytes()))
            b.data, b.offset, b.size = None, 1, 1  # placeholders as wide as the real values

    def pack() -> bytes:
        fb = flatbuffers.Builder(0)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    pos = (len(pack()) + 15) // 16 * 16
    for b, blob in blobs:
        b.offset, b.size = pos, len(blob)
        pos += (len(blob) + 15) // 16 * 16
    out = bytearray(pack())
    for b, blob in blobs:
        out += bytes(b.offset - len(out)) + blob
    return bytes(out)


def _slot(tab, slot: int) -> int | None:
    o = tab.Offset(slot)
    return tab.Pos + o if o else None


def _vector(tab, slot: int) -> tuple[int | None, int]:
    o = tab.Offset(slot)
    return (tab.Vector(o), tab.VectorLen(o)) if o else (None, 0)


def fields(data: bytes) -> list[tuple[str, int, int]]:
    """(what, byte position, width) of every index, length and offset the schema puts in the file."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(bytearray(data), 0)
    out = [("root offset", 0, 4)]
    for slot, what in ((6, "opcodes"), (8, "subgraphs"), (12, "buffers")):
        if (p := _slot(m._tab, slot)) is not None:
            out.append((f"{what} vector offset", p, 4))
            out.append((f"{what} vector length", _vector(m._tab, slot)[0] - 4, 4))
    for s in range(m.SubgraphsLength()):
        sub = m.Subgraphs(s)
        for slot, what in ((4, "tensors"), (6, "graph input"), (8, "graph output"), (10, "operators")):
            start, n = _vector(sub._tab, slot)
            if start is not None:
                out.append((f"{what} vector length", start - 4, 4))
                if what.startswith("graph"):
                    out += [(what, start + 4 * k, 4) for k in range(n)]
        for k in range(sub.OperatorsLength()):
            op = sub.Operators(k)
            if (p := _slot(op._tab, 4)) is not None:
                out.append(("opcode index", p, 4))
            for slot, what in ((6, "operator input"), (8, "operator output")):
                start, n = _vector(op._tab, slot)
                out += [(what, start + 4 * j, 4) for j in range(n)] if start is not None else []
        for k in range(sub.TensorsLength()):
            t = sub.Tensors(k)
            if (p := _slot(t._tab, 8)) is not None:
                out.append(("tensor buffer", p, 4))
            if (p := _slot(t._tab, 6)) is not None:
                out.append(("tensor type", p, 1))
            if (p := _slot(t._tab, 10)) is not None:
                out.append(("tensor name", t._tab.Indirect(p) + 4, 1))  # its first character
            start, n = _vector(t._tab, 4)
            if start is not None:
                out.append(("tensor shape length", start - 4, 4))
                out += [("tensor shape", start + 4 * j, 4) for j in range(n)]
    for b in range(m.BuffersLength()):
        buf = m.Buffers(b)
        start, _ = _vector(buf._tab, 4)
        if start is not None:
            out.append(("buffer data length", start - 4, 4))
        for slot, what in ((6, "buffer offset"), (8, "buffer size")):
            if (p := _slot(buf._tab, slot)) is not None:
                out.append((what, p, 8))
    return out


def mutants(data: bytes, count: int, seed: int, label: str) -> list[tuple[str, bytes]]:
    """`count` damaged copies of `data` as (description, bytes): about 45 % change one byte, 10 %
    flip a few bits, 17 % cut the file short and 28 % set an index, length or offset to a large,
    negative-as-unsigned or just-too-big value."""
    rng = random.Random(seed)
    spots = fields(data)
    out = []
    for i in range(count):
        b = bytearray(data)
        kind = rng.choices(("byte", "bits", "cut", "field"), (0.45, 0.10, 0.17, 0.28))[0]
        if kind == "byte":
            p = rng.randrange(len(b))
            b[p] = rng.choice([v for v in range(256) if v != b[p]])
            what = f"byte {p} set to {b[p]}"
        elif kind == "bits":
            ps = sorted(rng.randrange(len(b)) for _ in range(rng.randint(2, 8)))
            for p in ps:
                b[p] ^= 1 << rng.randrange(8)
            what = f"bits flipped at {ps}"
        elif kind == "cut":
            n = rng.randrange(8, len(b))
            b = b[:n]
            what = f"cut to {n} bytes"
        else:
            name, p, width = rng.choice(spots)
            if width == 1:
                v = b[p] = rng.choice([v for v in range(256) if v != b[p]])
            else:
                fmt, mask = ("<I", 0xFFFFFFFF) if width == 4 else ("<Q", 2**64 - 1)
                cur = struct.unpack_from(fmt, b, p)[0]
                values = [mask, mask >> 1, mask ^ (mask >> 1), 0x10000, 1 << 24]  # -1, max, min, large
                values += [len(data) + rng.randint(0, 64), cur + rng.randint(1, 64), cur - rng.randint(1, 64)]
                v = rng.choice(values) & mask
                struct.pack_into(fmt, b, p, v)
            what = f"{name} at byte {p} set to {v}"
        out.append((f"{label} #{i}: {what}", bytes(b)))
    return out


@pytest.fixture(scope="session")
def clean_files() -> dict[str, bytes]:
    """float32 and int8 exports of the tiny CNN (random weights: the bytes matter, not accuracy),
    and both with their weights after the flatbuffer."""
    import core_fixtures
    from edgeprune.export import convert

    model = core_fixtures.build_tiny()
    reps = np.random.default_rng(0).random((8, *core_fixtures.INPUT), dtype=np.float32)
    files = {"float32": convert(model, "float32"), "int8": convert(model, "int8", representative=reps)}
    files.update({f"{k} offsets": with_offset_buffers(v) for k, v in list(files.items())})
    return files


@pytest.fixture(scope="session")
def all_mutants(clean_files) -> list[tuple[str, bytes]]:
    out = [m for i, (k, n) in enumerate(COUNTS.items()) for m in mutants(clean_files[k], n, SEED + i, k)]
    assert len(out) >= 500
    return out


def sample(all_mutants, command: str) -> list[tuple[str, bytes]]:
    return random.Random(f"{SEED} {command}").sample(all_mutants, SAMPLE)


def test_the_clean_files_read_and_run_in_both_layouts(clean_files, tmp_path):
    from edgeprune import tflite_file

    for name, data in clean_files.items():
        p = tmp_path / f"{name.replace(' ', '_')}.tflite"
        p.write_bytes(data)
        info = tflite_file.read(p)
        assert info.inputs == [0] and info.tensors[0].shape == [1, 16, 16, 1], name
        tflite_file.check_runs(p)
    a, b = (tflite_file.read(clean_files[k]) for k in ("int8", "int8 offsets"))
    same = [(t.name, t.bytes, t.zero_fraction) for t in a.tensors]
    assert same == [(t.name, t.bytes, t.zero_fraction) for t in b.tensors]  # the data read through offsets


def damage(data: bytes, what: str, value: int, nth: int = 0) -> bytes:
    """`data` with the `nth` field called `what` (see fields) set to `value`."""
    _, p, width = [f for f in fields(data) if f[0] == what][nth]
    b = bytearray(data)
    struct.pack_into({1: "<B", 4: "<I", 8: "<Q"}[width], b, p, value & ((1 << (8 * width)) - 1))
    return bytes(b)


@pytest.fixture(scope="session")
def damaged(clean_files) -> dict[str, tuple[bytes, str]]:
    """One file per kind of damage the reader names, with the exact reason it gives."""
    from ai_edge_litert import schema_py_generated as schema

    f32, offsets = clean_files["float32"], clean_files["float32 offsets"]
    m = schema.ModelT.InitFromPackedBuf(bytearray(f32), 0)
    tensors, n_buffers, n_opcodes = m.subgraphs[0].tensors, len(m.buffers), len(m.operatorCodes)
    w = next(i for i, t in enumerate(tensors) if len(t.shape) == 4 and m.buffers[t.buffer].data is not None)
    dims = [int(d) for d in tensors[w].shape]
    stored = len(m.buffers[tensors[w].buffer].data)
    wide = [2 * dims[0], *dims[1:]]
    huge = [1 << 24, *dims[1:]]
    first = next(b for b in m.buffers if b.data is not None and len(b.data))
    first_index = m.buffers.index(first)
    n = len(tensors)
    coded = next(k for k, op in enumerate(m.subgraphs[0].operators) if op.opcodeIndex)
    cases = {
        "opcode": (
            damage(f32, "opcode index", 999),  # the first operator whose opcode index is not 0 (the default)
            f"operator {coded} of the graph uses opcode 999, but the file defines {n_opcodes} opcodes",
        ),
        "operator input": (
            damage(f32, "operator input", 999),
            f"operator 0 of the graph lists tensor 999 among its inputs, but the graph has {n} tensors",
        ),
        "graph output": (
            damage(f32, "graph output", n),
            f"the graph lists tensor {n} among its outputs, but it has {n} tensors",
        ),
        "no input": (damage(f32, "graph input vector length", 0), "the graph has no inputs"),
        "tensor buffer": (
            damage(f32, "tensor buffer", 999),
            f"tensor 0 of the graph uses buffer 999, but the file has {n_buffers} buffers",
        ),
        "data size": (
            damage(f32, "tensor shape", wide[0], nth=4 * w),
            f"tensor {w} of the graph (FLOAT32 {'x'.join(map(str, wide))}) needs {4 * np.prod(wide):,} "
            f"bytes of data, but its buffer {tensors[w].buffer} holds {stored:,}",
        ),
        "huge shape": (
            damage(f32, "tensor shape", huge[0], nth=4 * w),
            f"tensor {w} of the graph has the shape {huge}, {4 * int(np.prod(huge)):,} bytes: more "
            f"than a tensor can hold (2 GiB)",
        ),
        "signature": (
            damage(f32, "tensor shape", 17, nth=2),
            "tensor 0 of the graph has the shape [1, 16, 17, 1] but the shape signature [-1, 16, 16, 1]",
        ),
        "name": (damage(f32, "tensor name", 0xFF), "the name of tensor 0 of the graph is not UTF-8 text"),
        "buffer offset": (
            damage(offsets, "buffer offset", len(offsets) + 100),
            f"buffer {first_index} lies at bytes {len(offsets) + 100:,}-"
            f"{len(offsets) + 100 + len(first.data):,}, past the end of its {len(offsets):,} bytes",
        ),
        "cut": (f32[: len(f32) // 2], f"its tables and vectors point outside its {len(f32) // 2:,} bytes"),
    }
    assert tuple(cases) == DAMAGE
    fix = "export it again, or copy it again if a transfer cut it short"
    return {k: (data, f"m.tflite is corrupt or truncated: {why}; {fix}.") for k, (data, why) in cases.items()}


@pytest.mark.parametrize("kind", DAMAGE)
def test_each_kind_of_damage_is_named(damaged, kind):
    from edgeprune import tflite_file
    from edgeprune.errors import InputFileError

    data, expected = damaged[kind]
    with pytest.raises(InputFileError) as e:
        tflite_file.read(data, name="m.tflite")
    assert e.value.one_line() == expected


def test_the_reader_reads_or_refuses_every_mutant_with_one_line(all_mutants):
    from edgeprune import tflite_file
    from edgeprune.errors import InputFileError

    refused = 0
    for desc, data in all_mutants:
        try:
            tflite_file.read(data, name="m.tflite")
        except InputFileError as e:
            refused += 1
            line = e.one_line()
            assert re.fullmatch(
                r"m\.tflite (is corrupt or truncated: |is not a TFLite flatbuffer ).+\.", line
            ), (desc, line)
            assert "\n" not in line, desc
        except Exception as e:  # noqa: BLE001 - the point: nothing but InputFileError
            pytest.fail(f"{desc}: {type(e).__name__}: {e}")
    # the mutants do damage, and not all of it is structural
    assert 0.4 * len(all_mutants) < refused < 0.8 * len(all_mutants), refused


def _in_process(argv: list[str]) -> tuple[int, str, str]:
    from edgeprune.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _written(folder: Path, all_mutants, damaged, command: str) -> list[tuple[str, Path, str | None]]:
    """The command's sample of mutants and every damaged file, written to `folder`, as
    (description, path, the exact error line expected or None for a mutant)."""
    items = [(desc, data, None) for desc, data in sample(all_mutants, command)]
    items += [(f"damaged: {k}", data, why) for k, (data, why) in damaged.items()]
    out = []
    for i, (desc, data, why) in enumerate(items):
        p = folder / f"m{i}.tflite"
        p.write_bytes(data)
        out.append((desc, p, None if why is None else "error: " + why.replace("m.tflite", str(p), 1)))
    return out


def _check_outcome(desc: str, path: Path, expected: str | None, result, ok_stdout: str) -> None:
    """0 with `ok_stdout` (a regex) on stdout, or 2 with one `error:` line naming the file (or
    what was not measured; exactly `expected` when given) and nothing on stdout; never a
    traceback, never a crash."""
    code, out, err = result
    assert code != "crashed", f"{desc}: the process died ({out}): {err}"
    assert "Traceback" not in out + err, (desc, err)
    if code == 0 and expected is None:
        assert re.match(ok_stdout, out), (desc, out, err)
        assert not [ln for ln in err.splitlines() if ln.startswith("error:")], (desc, err)
        return
    assert code == 2, (desc, code, out, err)
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert out == "" and len(errors) == 1 and lines[-1] == errors[0], (desc, out, err)
    assert errors[0].startswith(
        (f"error: {path} ", f"error: model {path} ", "error: nothing was measured")
    ), (desc, errors[0])
    assert expected is None or errors[0] == expected, (desc, errors[0], expected)


def test_inspect_exits_0_or_2_on_sampled_mutants(all_mutants, damaged, tmp_path):
    files = _written(tmp_path, all_mutants, damaged, "inspect")
    before = snapshot(tmp_path)
    codes = []
    for desc, p, expected in files:
        code, out, err = _in_process(["inspect", str(p)])
        _check_outcome(desc, p, expected, (code, out, err), rf"{re.escape(str(p))}: [\d,]+ bytes")
        assert code != 0 or err == "", (desc, err)
        codes.append(code)
    assert snapshot(tmp_path) == before
    assert set(codes) == {0, 2}


# Runs edgeprune's CLI on job after job in one process (its libraries imported once), printing a
# JSON line as each job starts and ends: a job that kills the process (a native crash) is the one
# that started and never ended. Its address space is bounded, so that a damaged shape the checks
# missed fails an allocation instead of taking the memory of a machine that others share.
_WORKER = r"""
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))
from edgeprune.cli import main
jobs = json.load(open(sys.argv[1]))
for k in range(int(sys.argv[2]), len(jobs)):
    print(json.dumps({"start": k}), flush=True)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(jobs[k])
        except SystemExit as e:
            code = e.code
    print(json.dumps({"end": k, "code": code, "out": out.getvalue(), "err": err.getvalue()}), flush=True)
"""


def run_jobs(jobs: list[list[str]], folder: Path, env: dict | None = None, timeout: float = 600) -> list:
    """(exit code, stdout, stderr) of each CLI job, or ("crashed", signal, worker stderr) for a job
    the worker died in; the worker then carries on with the next job."""
    spec = folder / "jobs.json"
    spec.write_text(json.dumps(jobs))
    results: list = [None] * len(jobs)
    start = 0
    while start < len(jobs):
        r = subprocess.run(
            [sys.executable, "-c", _WORKER, str(spec), str(start)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=folder,
        )
        running = None
        for line in r.stdout.splitlines():
            msg = json.loads(line)
            if "start" in msg:
                running = msg["start"]
            else:
                results[msg["end"]] = (msg["code"], msg["out"], msg["err"])
                running = None
        if r.returncode == 0 and running is None:
            break
        assert running is not None, (
            f"the worker failed outside a job (exit {r.returncode}): {r.stderr[-2000:]}"
        )
        results[running] = ("crashed", r.returncode, r.stderr[-2000:])
        start = running + 1
    spec.unlink()
    return results


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> Path:
    """A few 16x16 grey images in 10 classes: eval needs data, not good data."""
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("evaldata") / "tiny.npz"
    np.savez(
        p,
        x_train=rng.integers(0, 255, (10, 16, 16), dtype=np.uint8),
        y_train=np.arange(10),
        x_test=rng.integers(0, 255, (20, 16, 16), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )
    return p


def test_eval_exits_0_or_2_on_sampled_mutants(all_mutants, damaged, eval_data, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    files = _written(work, all_mutants, damaged, "eval")
    before = snapshot(work)
    results = run_jobs([["eval", str(p), "--data", str(eval_data), "--quiet"] for _, p, _ in files], tmp_path)
    for (desc, p, expected), result in zip(files, results, strict=True):
        _check_outcome(desc, p, expected, result, rf"{re.escape(str(p))}: accuracy through LiteRT")
    assert snapshot(work) == before
    assert {r[0] for r in results} == {0, 2}


def test_bench_local_exits_0_or_2_on_sampled_mutants(all_mutants, damaged, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    device_tmp = tmp_path / "device"  # the local device's work folder: the test's own
    device_tmp.mkdir()
    files = _written(work, all_mutants, damaged, "bench")
    before = snapshot(work)
    jobs = [
        ["bench", str(p), "--target", "local", *BENCH_QUICK, "--out", str(work / f"out{i}")]
        for i, (_, p, _) in enumerate(files)
    ]
    results = run_jobs(jobs, tmp_path, env={"TMPDIR": str(device_tmp)})
    made = set()
    for i, ((desc, p, expected), result) in enumerate(zip(files, results, strict=True)):
        _check_outcome(desc, p, expected, result, r"# edgeprune bench\n")
        out = work / f"out{i}"
        if result[0] == 0:
            assert sorted(x.name for x in out.iterdir()) == RESULT_FILES, desc
            made.add(str(out))
        else:
            assert not out.exists(), desc
    after = snapshot(work)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # besides the folder itself (it gained the output folders), only the output folders of successes
    unexpected = [k for k in changed if k != str(work) and k not in made and str(Path(k).parent) not in made]
    assert not unexpected, unexpected
    assert {r[0] for r in results} == {0, 2}


def test_report_renders_a_bench_folder_whose_models_are_damaged(all_mutants, damaged, tmp_path):
    """A bench run reads its .tflite files again for the zeros per weight tensor; a damaged one is
    left out of them, and the report renders."""
    import dataclasses

    from report_builders import PIXEL, bench_run

    files = _written(tmp_path, all_mutants, damaged, "report")
    run = bench_run((PIXEL,), tuple(f"m{i}" for i in range(len(files))), (1,), n=20)
    paths = [str(p) for _, p, _ in files]
    run.models = [dataclasses.replace(m, path=p) for m, p in zip(run.models, paths, strict=True)]
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "bench.json").write_text(json.dumps(run.to_dict()))
    before = snapshot(tmp_path)
    code, out, err = _in_process(["report", str(folder), "-f", "csv"])
    assert code == 0 and err == "" and len(out.splitlines()) == 1 + len(files), (code, err)
    assert snapshot(tmp_path) == before


def test_eval_refuses_a_model_that_crashes_the_interpreter(clean_files, eval_data, tmp_path):
    from test_bench_failures import fully_connected_without_weights

    clean = tmp_path / "clean.tflite"
    clean.write_bytes(clean_files["float32"])
    bad = fully_connected_without_weights(clean, tmp_path / "no_weights.tflite")
    ((code, out, err),) = run_jobs([["eval", str(bad), "--data", str(eval_data), "--quiet"]], tmp_path)
    assert code == 2 and out == "" and err.startswith(f"error: {bad} "), (code, out, err)

"""`edgeprune bench` and `devices` when things go wrong: every device failing, an --out folder that
is not ours, a damaged model. Each case is one `error:` line that names the problem and the fix,
exit code 2, nothing else on stdout, and no file created or changed."""

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest

from conftest import require_tool

FIX = Path(__file__).parent / "fixtures"
TINY = FIX / "bench_tiny.tflite"
QUICK = ["--runs", "3", "--warmup", "0", "--min-secs", "0.01"]
REFUSED = "ssh:127.0.0.1:1"  # nothing listens on port 1: connection refused at once
REFUSED_WHY = f"{REFUSED}: connection refused; is sshd running on the device, and is the port right?"


def snapshot(*roots: Path) -> dict[str, tuple[int, str | None]]:
    """Every file and folder under `roots` (and the roots): mtime in ns and, for files, the
    sha256 of the contents. Equal snapshots: nothing was created, removed or changed."""
    out = {}
    for root in roots:
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            out[str(p)] = (st.st_mtime_ns, digest)
    return out


def assert_refused(r, error: str | re.Pattern, progress: str | None = None) -> None:
    """Exit code 2, nothing on stdout, and stderr exactly the line `error` (a string, or a
    compiled regex the whole line must match), after progress lines that each match the regex
    `progress`, if given. Only one line starts with `error:`."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", r.stdout
    lines = r.stderr.splitlines()
    assert lines, "nothing on stderr"
    if isinstance(error, re.Pattern):
        assert error.fullmatch(lines[-1]), r.stderr
    else:
        assert lines[-1] == error, r.stderr
    assert all(progress and re.fullmatch(progress, ln) for ln in lines[:-1]), r.stderr
    assert lines[-1].startswith("error: ") and sum(ln.startswith("error:") for ln in lines) == 1, r.stderr


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def fully_connected_without_weights(src: Path, dst: Path) -> Path:
    """`src` with the weights input of its FULLY_CONNECTED operator set to -1 (an optional tensor
    left out): well formed for the flatbuffer, and LiteRT's XNNPACK delegate dereferences it."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(src.read_bytes())
    m = schema.Model.GetRootAs(data, 0)
    sub = m.Subgraphs(0)
    for k in range(sub.OperatorsLength()):
        op = sub.Operators(k)
        if m.OperatorCodes(op.OpcodeIndex()).BuiltinCode() == schema.BuiltinOperator.FULLY_CONNECTED:
            struct.pack_into("<i", data, op._tab.Vector(op._tab.Offset(6)) + 4, -1)
            dst.write_bytes(bytes(data))
            return dst
    raise AssertionError(f"{src} has no FULLY_CONNECTED operator")


@pytest.fixture
def isolated_adb():
    """An adb server of the test's own, with no device: `adb:NOSUCH123` is simply not there."""
    from adb_emulator import AdbServer

    with AdbServer(None, adb=require_tool("adb")) as srv:
        yield {"ANDROID_ADB_SERVER_PORT": str(srv.port)}


def test_bench_where_every_device_fails_writes_nothing_and_says_why(cli_run, tmp_path, isolated_adb):
    require_tool("ssh")
    before = snapshot(tmp_path, TINY)
    targets = ["--target", REFUSED, "--target", "adb:NOSUCH123"]
    r = cli_run("bench", TINY, *targets, *QUICK, "--out", tmp_path / "out", env=isolated_adb)
    assert_refused(
        r,
        f"error: nothing was measured, so nothing was written: {REFUSED_WHY} adb:NOSUCH123: no such device; "
        "`adb devices` lists: none; plug the phone in with USB debugging on, or `adb connect HOST:PORT` for "
        "Wi-Fi.",
        progress=r"\[(ssh:127\.0\.0\.1:1|adb:NOSUCH123)\] 0/1 (probing|failed) \(\d+ s\)",
    )
    steps = sorted(ln.rsplit(" (", 1)[0] for ln in r.stderr.splitlines()[:-1])  # devices run in parallel
    assert steps == [f"[{t}] 0/1 {s}" for t in ("adb:NOSUCH123", REFUSED) for s in ("failed", "probing")]
    assert snapshot(tmp_path, TINY) == before

    r = cli_run("bench", TINY, "--target", REFUSED, *QUICK)  # the default --out, runs/bench-DATE-TIME
    assert_refused(
        r,
        f"error: nothing was measured, so nothing was written: {REFUSED_WHY}",
        progress=r"\[ssh:127\.0\.0\.1:1\] 0/1 (probing|failed) \(\d+ s\)",
    )
    assert snapshot(tmp_path, TINY) == before  # no runs/ folder either


def test_a_device_that_fails_beside_one_that_works_keeps_the_results(cli_run, tmp_path):
    require_tool("ssh")
    own = tmp_path / "tmpdir"
    own.mkdir()
    out = tmp_path / "out"
    targets = ["--target", "local", "--target", REFUSED]
    r = cli_run("bench", TINY, *targets, *QUICK, "--out", out, env={"TMPDIR": str(own)})
    assert r.returncode == 2, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last == f"error: 1 failure(s); first: {REFUSED_WHY}; the other results are in {out}."
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.json", "bench.md", "report.html"]
    assert f"wrote {out / 'bench.json'}, bench.md, bench.csv" in r.stdout


def test_devices_exits_2_when_a_target_is_unavailable_and_still_prints_the_table(cli_run, tmp_path):
    require_tool("ssh")
    before = snapshot(tmp_path)
    error = f"error: 1 of 1 device(s) unavailable: {REFUSED_WHY}"
    r = cli_run("devices", "--target", REFUSED)
    assert r.returncode == 2, r.stderr
    assert r.stdout == f"{REFUSED:<34} UNAVAILABLE  {REFUSED_WHY}\n"
    progress = rf"\[{re.escape(REFUSED)}: probing\] failed \(\d+ s\)\n"
    assert re.fullmatch(progress + re.escape(error) + "\n", r.stderr), r.stderr

    r = cli_run("devices", "--target", REFUSED, "--json")
    assert r.returncode == 2 and re.fullmatch(progress + re.escape(error) + "\n", r.stderr), r.stderr
    (info,) = json.loads(r.stdout)
    assert not info["reachable"] and info["error"] == REFUSED_WHY
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("force", [False, True])
def test_an_out_folder_of_other_files_is_never_written_into(cli_run, tmp_path, force):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    before = snapshot(tmp_path, TINY)
    r = cli_run("bench", TINY, "--target", "local", *QUICK, "--out", mine, *(["--force"] if force else []))
    assert_refused(
        r,
        f"error: the output folder {mine} holds files that are not bench results (notes.txt); "
        "choose an empty or new folder with --out.",
    )
    assert snapshot(tmp_path, TINY) == before


def test_a_pipeline_run_folder_is_not_replaced_by_bench_results_even_with_force(cli_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text('{"keep": true}\n')
    before = snapshot(tmp_path, TINY)
    r = cli_run("bench", TINY, "--target", "local", *QUICK, "--out", run, "--force")
    assert_refused(
        r,
        f"error: the output folder {run} holds files that are not bench results (report.json); "
        "choose an empty or new folder with --out.",
    )
    assert snapshot(tmp_path, TINY) == before


def test_a_bench_folder_that_holds_an_input_is_not_replaced(cli_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text("{}\n")
    model = out / "model.tflite"
    model.write_bytes(TINY.read_bytes())
    before = snapshot(tmp_path)
    r = cli_run("bench", model, "--target", "local", *QUICK, "--out", out, "--force")
    assert_refused(
        r,
        f"error: the output folder {out} holds the input {model}, and writing the results replaces the "
        "folder; give another --out folder.",
    )
    assert snapshot(tmp_path) == before


def test_bench_results_are_replaced_whole_with_force(cli_run, tmp_path):
    own = tmp_path / "tmpdir"
    own.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    for name in ("bench.json", "bench.md", "bench.csv", "report.html"):
        (out / name).write_text("old\n")
    r = cli_run("bench", TINY, "--target", "local", *QUICK, "--out", out, "--force", env={"TMPDIR": str(own)})
    assert r.returncode == 0, r.stderr
    names = ["bench.csv", "bench.json", "bench.md", "report.html"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert all((out / n).read_text() != "old\n" for n in names)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp folder left


def test_a_truncated_model_is_refused_by_its_own_path_before_any_device(cli_run, tmp_path):
    """The file keeps its TFL3 identifier: it used to reach the device and fail there, under the
    device's temp path."""
    bad = cut(TINY, tmp_path / "cut.tflite", 0.7)
    before = snapshot(tmp_path)
    r = cli_run("bench", bad, "--target", "local", *QUICK, "--out", tmp_path / "out")
    assert_refused(
        r,
        f"error: {bad} is corrupt or truncated: its tables and vectors point outside its "
        f"{bad.stat().st_size:,} bytes; export it again, or copy it again if a transfer cut it short.",
    )
    assert snapshot(tmp_path) == before


def test_a_model_that_crashes_the_interpreter_is_refused_before_any_device(cli_run, tmp_path):
    """It used to fail on the device, named by its temp path there. Which of the two ways the
    interpreter fails on it (a crash, or an error) depends on what memory the delegate reads."""
    bad = fully_connected_without_weights(TINY, tmp_path / "no_weights.tflite")
    before = snapshot(tmp_path)
    r = cli_run("bench", bad, "--target", "local", *QUICK, "--out", tmp_path / "out")
    how = (
        r"crashes the LiteRT interpreter \(SIGSEGV\) when loaded and run once"
        r"|does not load and run in LiteRT with XNNPACK: .+"
    )
    fix = (
        "; check it with `edgeprune inspect` and export it again; if XNNPACK cannot run it (sparse int8), "
        "bench with --no-xnnpack."
    )
    assert_refused(r, re.compile(f"error: {re.escape(str(bad))} ({how}){re.escape(fix)}"))
    assert snapshot(tmp_path) == before


def test_bench_takes_o_for_out_like_prune(cli_run, tmp_path):
    r = cli_run("bench", "missing.tflite", "-o", tmp_path / "out")
    assert_refused(r, "error: model missing.tflite does not exist; give the path of a .tflite file.")

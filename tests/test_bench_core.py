"""Statistics, saved values, inventory parsing, the rc marker and quoting (through the real
/bin/sh of the local transport), thermal parsing and affinity masks."""

import json
import statistics

import numpy as np
import pytest

from edgeprune.bench.device import cpu_mask, parse_cpu_list, parse_thermal
from edgeprune.bench.inventory import load_inventory, parse_target, resolve_targets
from edgeprune.bench.local import LocalTransport
from edgeprune.bench.proc import CommandTimeout, run_command
from edgeprune.bench.results import BenchRun, BenchSettings, CpuCore, ModelFile
from edgeprune.bench.stats import summarize
from edgeprune.bench.transport import split_rc, wrap_with_rc
from edgeprune.errors import DeviceError, EdgepruneError, InputFileError, SchemaError


def test_summarize_matches_numpy_and_statistics():
    xs = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 100.0]
    s = summarize(xs)
    assert s.median_us == pytest.approx(np.median(xs))
    assert s.p90_us == pytest.approx(np.percentile(xs, 90))
    assert s.p95_us == pytest.approx(np.percentile(xs, 95))
    assert s.std_us == pytest.approx(statistics.stdev(xs))
    assert s.cv == pytest.approx(statistics.stdev(xs) / statistics.mean(xs))
    assert (s.min_us, s.max_us, s.count) == (1.0, 100.0, 8)
    one = summarize([4.0])
    assert one.std_us == 0 and one.median_us == 4.0


def test_bench_run_round_trip_and_refuses_unknown_versions():
    run = BenchRun(
        created="now",
        settings=BenchSettings(threads=[1, 4]),
        models=[ModelFile("m.tflite", "/x/m.tflite", "ab" * 32, 10, 9)],
    )
    d = json.loads(json.dumps(run.to_dict()))
    assert d["schema"] == "edgeprune-bench" and d["schema_version"] == 2
    assert BenchRun.from_dict(d) == run
    d["schema_version"] = 99
    with pytest.raises(SchemaError, match="99"):
        BenchRun.from_dict(d)
    d["schema_version"] = 2
    d["settings"]["thredas"] = [1]
    with pytest.raises(SchemaError, match="thredas"):
        BenchRun.from_dict(d)


def test_settings_refuse_bad_values():
    with pytest.raises(EdgepruneError, match="threads"):
        BenchSettings(threads=[0])
    with pytest.raises(EdgepruneError, match="max-secs"):
        BenchSettings(min_secs=5, max_secs=1)


def test_targets_parse_and_refuse_garbage():
    assert parse_target("local").kind == "local"
    t = parse_target("ssh:pi@board.local:2222")
    assert (t.kind, t.address) == ("ssh", "pi@board.local:2222")
    assert parse_target("adb:192.168.1.5:5555").address == "192.168.1.5:5555"
    for bad in ("usb:1", "ssh:", "adb:-x", "ssh:-oProxyCommand=x", "ssh:a@b:99999"):
        with pytest.raises(DeviceError):
            parse_target(bad)
    with pytest.raises(DeviceError, match="unknown target"):
        resolve_targets(["pixel"], None)


def test_inventory_full_entry_and_closest_key(tmp_path):
    inv = tmp_path / "devices.toml"
    inv.write_text(
        '[[device]]\nname = "pi5"\ntarget = "ssh:pi@pi5.local"\nrunner = "python"\nthreads = [1, 4]\n'
        'affinity = "f0"\nenv = { A = "1" }\nworkdir = "/home/pi/ep"\npython = "/home/pi/venv/bin/python"\n'
        'benchmark_model = { aarch64 = "bm" }\nidentity_file = "key"\nssh_options = ["Port=22"]\n'
        '[[device]]\nname = "phone"\nkind = "adb"\naddress = "R58M"\n'
    )
    devices = load_inventory(inv).devices
    pi = devices[0]
    assert (pi.kind, pi.address, pi.threads, pi.affinity, pi.env) == (
        "ssh",
        "pi@pi5.local",
        (1, 4),
        "f0",
        (("A", "1"),),
    )
    assert pi.binary_for("aarch64") == str(tmp_path / "bm") and pi.binary_for("x86_64") is None
    assert pi.identity_file == str(tmp_path / "key")
    assert devices[1].target == "adb:R58M"
    assert [s.name for s in resolve_targets(["phone", "pi5"], load_inventory(inv))] == ["phone", "pi5"]
    inv.write_text('[[device]]\nname = "x"\ntarget = "local"\nthread = [1]\n')
    with pytest.raises(InputFileError, match="did you mean 'threads'"):
        load_inventory(inv)
    inv.write_text('[[device]]\nname = "x"\ntarget = "local"\nworkdir = "/tmp/a\\"b"\n')
    with pytest.raises(InputFileError, match="workdir"):
        load_inventory(inv)
    with pytest.raises(InputFileError, match="does not exist"):
        load_inventory(tmp_path / "nope.toml")


def test_rc_marker_and_crlf_split():
    assert split_rc("out\r\n\r\n__EDGEPRUNE_RC_5d1c__=3\r\n") == ("out\n", 3)
    assert split_rc("partial output, then the connection dropped") == (
        "partial output, then the connection dropped",
        None,
    )
    assert "exit 4" in wrap_with_rc("exit 4")


def test_local_shell_exit_codes_and_quoting(tmp_path):
    t = LocalTransport()
    r = t.shell("echo out; echo err >&2; exit 7", 10)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert t.shell("printf 'no newline'", 10).stdout == "no newline"
    evil = tmp_path / "a b;touch pwned;'$(reboot)`x`.tflite"
    evil.write_text("x")
    r = t.run(["cat", str(evil)], 10)
    assert r.returncode == 0 and r.stdout == "x"
    assert not (tmp_path / "pwned").exists() and not any(p.name == "pwned" for p in tmp_path.iterdir())


def test_run_command_timeout_kills_the_group():
    with pytest.raises(CommandTimeout, match="did not finish"):
        run_command(["/bin/sh", "-c", "sleep 30 & sleep 30"], 0.5)
    with pytest.raises(DeviceError, match="not installed"):
        run_command(["/nonexistent/adb-client"], 5)


def test_thermal_parsing_and_throttle_reasons():
    text = (
        "zone thermal_zone0 cpu-thermal 81234\nzone thermal_zone1 battery 31\ngov 0 schedutil 1800000\n"
        "gov 4 performance 2400000\nvc throttled=0x50005\nThermal Status: 2\n"
    )
    th = parse_thermal(text)
    assert th.temps_c == {"thermal_zone0:cpu-thermal": pytest.approx(81.234), "thermal_zone1:battery": 31.0}
    assert th.governors == {"cpu0": "schedutil", "cpu4": "performance"}
    assert th.cur_freq_khz["cpu4"] == 2400000
    assert th.throttled_bits == 0x50005 and th.thermal_status == 2
    reasons = " ".join(th.throttle_reasons())
    assert (
        "under-voltage" in reasons
        and "throttled" in reasons
        and "status 2" in reasons
        and "81.2 C" in reasons
    )


def test_affinity_masks_from_max_frequencies():
    cores = [CpuCore(i, 1800000) for i in range(4)] + [CpuCore(i, 2400000) for i in range(4, 8)]
    assert cpu_mask(cores, "big") == ("f0", [4, 5, 6, 7])
    assert cpu_mask(cores, "little") == ("f", [0, 1, 2, 3])
    assert cpu_mask(cores, "all")[0] == "ff"
    assert cpu_mask(cores, "30") == ("30", [4, 5])
    assert cpu_mask([CpuCore(0), CpuCore(1)], "big") == ("3", [0, 1])  # no frequencies: every CPU
    tri = (
        [CpuCore(i, 1800000) for i in range(4)]
        + [CpuCore(i, 2400000) for i in range(4, 7)]
        + [CpuCore(7, 3000000)]
    )
    assert (
        cpu_mask(tri, "big")[0] == "f0"
        and cpu_mask(tri, "prime")[0] == "80"
        and cpu_mask(tri, "little")[0] == "f"
    )
    with pytest.raises(DeviceError, match="selects none"):
        cpu_mask(cores, "100")
    assert parse_cpu_list("0-2,5") == [0, 1, 2, 5]


def test_runtime_hint_knows_where_ai_edge_litert_has_wheels():
    from edgeprune.bench.runners import _runtime_hint

    assert "32-bit ARM" in _runtime_hint("python3", "armv7l", "3.11.2")
    assert "3.10-3.13" in _runtime_hint("python3", "aarch64", "3.9.2")
    assert "pip install ai-edge-litert" in _runtime_hint("/venv/bin/python", "aarch64", "3.11.2")


def test_a_shell_that_prints_a_banner_first_does_not_confuse_the_session(tmp_path):
    """Over ssh a login shell's rc file may echo before every command; the session parses only its
    own tagged lines and sections."""
    import dataclasses
    from pathlib import Path

    from edgeprune.bench.device import DeviceSession
    from edgeprune.bench.inventory import DeviceSpec

    class BannerShell(LocalTransport):
        def shell(self, script, timeout, *, during_cancel=False):
            r = super().shell(script, timeout, during_cancel=during_cancel)
            return dataclasses.replace(r, stdout="Welcome to the board! 1 2 3\n" + r.stdout)

    model = Path(__file__).parent / "fixtures" / "bench_tiny.tflite"
    with DeviceSession(DeviceSpec(name="b", kind="local", workdir=str(tmp_path / "w"))) as s:
        s.transport = BannerShell()
        info = s.probe()
        assert info.cores and info.runtimes
        s.open_folders(model_dirs=1)
        assert s.run_dir.startswith(str(tmp_path / "w") + "/run-")
        s.push_checked(model, f"{s.run_dir}/m0/x.tflite")
        remote, sha = s.cached(model)
        assert s.cached(model) == (remote, sha)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["cache"]

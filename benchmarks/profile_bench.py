"""Per-device latency tables (edgeprune.latency_profile): how well they predict pruned models, what
they cost, and latency-aware pruning with them. Writes the latency-table section of BENCHMARKS.md
to benchmarks/results/profile.md and the numbers to benchmarks/results/profile.json.

    python benchmarks/profile_bench.py                  # everything (about 25 minutes on 2 cores)
    python benchmarks/profile_bench.py --skip-prune     # the prediction tables only
    python benchmarks/profile_bench.py --render-only    # profile.md again from profile.json

1. For 1 and 2 threads: MobileNetV2 0.35 at 224x224x3 (untrained: latency does not depend on the
   weights) is profiled on this host from an empty cache (float32), then five variants pruned by
   edgeprune.channels.prune_channels at different ratios and allocations (no fine-tuning), and one
   with five residual blocks removed, are predicted from the table and measured through the
   harness in a later call, side by side with the full model.
2. `edgeprune prune --method channels --latency-ms T` with T half the float32 latency at 1 thread,
   from an empty cache and again with the cache filled; its result is measured in the mode the
   command prunes for (ChannelConfig's default, int8, 1 thread).
3. The same target through the library in float32 (ChannelConfig(latency_mode="float32")).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _shared import cpu_flags  # noqa: E402  (benchmarks/ is on sys.path when a script runs)
from edgeprune import progress  # noqa: E402
from edgeprune.channels import ChannelConfig, ChannelGraph, prune_channels  # noqa: E402
from edgeprune.latency_profile import HarnessProbe, build_table  # noqa: E402
from edgeprune.models import build_builtin  # noqa: E402
from edgeprune.runfolder import write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = [  # name, ChannelConfig keywords
    ("uniform 30%", dict(ratio=0.3)),
    ("uniform 65%", dict(ratio=0.65)),
    ("global L2 40%", dict(ratio=0.4, allocation="global")),
    ("global L1 70%", dict(ratio=0.7, allocation="global", criterion="l1")),
    ("MACs 45%, uniform", dict(macs_target=0.45)),
]


class StderrReporter(progress.Reporter):
    def log(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow", "tf-keras", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def mobilenet():
    return build_builtin("mobilenet_v2", (224, 224, 3), classes=10, alpha=0.35)


def variants(model) -> list[dict]:
    """The five pruned variants, with each group's kept width (from the plan)."""
    graph = ChannelGraph(model)
    out = []
    for name, kw in VARIANTS:
        result = prune_channels(model, ChannelConfig(**kw))
        kept = result.plan.kept_for(graph)
        out.append({"name": name, "config": kw, "model": result.model, "macs": result.macs_after,
                    "widths": {g.key: int(len(kept[g.root])) for g in graph.groups}})
    from edgeprune.channels.blocks import remove_blocks
    from edgeprune.channels.count import Counter

    blocks = ["block_2", "block_5", "block_8", "block_12", "block_15"]
    removed = remove_blocks(model, blocks)
    out.append({"name": f"{len(blocks)} blocks removed", "config": {"blocks": blocks}, "model": removed,
                "macs": Counter(ChannelGraph(removed)).count().macs, "widths": None})
    return out


def validate(model, probe: HarnessProbe, threads: int, cache: Path, pruned: list[dict], calls: int) -> dict:
    """Profiles `model` at `threads` from an empty cache, then predicts the variants and measures them
    in `calls` later calls, each with the full model side by side."""
    probe.threads = threads
    conversions = probe.conversions
    t0 = time.monotonic()
    table = build_table(model, probe, cache_directory=cache)
    profile_s = time.monotonic() - t0
    profile_conversions = probe.conversions - conversions
    rows = []
    offset = table.full_ms - table.layers_ms  # the plain fixed cost, without the calibration's scale
    for v in pruned:
        by_model = table.predict_model(v["model"])  # widths from the model's layers (blocks: the only way)
        if v["widths"] is not None:
            units = table.units_ms(v["widths"])
        else:
            units = (by_model - table.fixed_ms) / table.scale
        rows.append({"name": v["name"], "config": v["config"], "widths": v["widths"], "macs": v["macs"],
                     "predicted_ms": table.predict(v["widths"]) if v["widths"] is not None else by_model,
                     "predicted_model_ms": by_model, "fixed_only_ms": units + offset, "measured_ms": []})
    full = []
    t0 = time.monotonic()
    for _ in range(calls):
        names = ["full"] + [f"v{i}" for i in range(len(pruned))]
        measured = probe.measure_many([model] + [v["model"] for v in pruned], names=names, label="variants")
        full.append(measured[0])
        for row, ms in zip(rows, measured[1:]):
            row["measured_ms"].append(ms)
    measure_s = time.monotonic() - t0
    for row in rows:
        ms = statistics.median(row["measured_ms"])
        row["median_ms"] = ms
        row["errors"] = [row["predicted_ms"] / x - 1 for x in row["measured_ms"]]
        row["error"] = row["predicted_ms"] / ms - 1
        row["fixed_only_error"] = row["fixed_only_ms"] / ms - 1
    return {"threads": threads, "profile_s": profile_s, "profile_conversions": profile_conversions,
            "measure_s": measure_s, "calls": calls, "full_measured_ms": full,
            "table": {k: v for k, v in table.to_dict().items() if k != "units"}, "variants": rows}


def run_prune_cli(model_path: Path, target_ms: float, cache: Path, out_dir: Path) -> dict:
    out = out_dir / f"pruned-{len(list(out_dir.glob('pruned-*.keras')))}.keras"
    cmd = [sys.executable, "-m", "edgeprune", "prune", str(model_path), "--method", "channels",
           "--latency-ms", f"{target_ms:.6f}", "--epochs", "0", "--train-limit", "64", "--test-limit", "64",
           "--out", str(out), "-q"]
    print("+", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True,
                       env={**os.environ, "EDGEPRUNE_CACHE_DIR": str(cache)})
    wall = time.monotonic() - t0
    row = {"command": "edgeprune " + " ".join(cmd[3:]), "wall_s": wall, "exit_code": r.returncode,
           "stdout": r.stdout.strip()[-600:], "stderr": r.stderr.strip()[-600:]}
    plan = out.with_suffix(".plan.json")
    if r.returncode == 0 and plan.is_file():
        steps = json.loads(plan.read_text())["notes"]["steps"]
        table = steps[0]["table"]
        keys = ("full_ms", "layers_ms", "scale", "fixed_ms", "measured_shapes", "cached_shapes", "mode",
                "threads")
        row.update(out=str(out), confirms=[s for s in steps if s["kind"] == "confirm"],
                   prune_steps=sum(s["kind"] == "prune" for s in steps), table={k: table[k] for k in keys})
    return row


def measure_result(pruned_path: Path, original, mode: str) -> tuple[float, float]:
    """(original, pruned) medians in `mode` at 1 thread, measured side by side through the harness."""
    from edgeprune.models import load_model

    pruned = load_model(pruned_path)[0]
    probe = HarnessProbe("local", mode, 1)
    a, b = probe.measure_many([original, pruned], names=["original", "pruned"], label=f"result ({mode})")
    return a, b


def library_float32(model, target_ms: float, cache: Path) -> dict:
    os.environ["EDGEPRUNE_CACHE_DIR"] = str(cache)
    t0 = time.monotonic()
    try:
        result = prune_channels(model, ChannelConfig(latency_ms=target_ms, latency_mode="float32"))
    except Exception as e:  # a missed target is a result to report
        return {"wall_s": time.monotonic() - t0, "error": str(e)}
    wall = time.monotonic() - t0
    confirms = [s for s in result.steps if s["kind"] == "confirm"]
    table = result.steps[0]["table"]
    return {"wall_s": wall, "before_ms": result.latency_ms_before, "after_ms": result.latency_ms_after,
            "confirms": confirms, "prune_steps": sum(s["kind"] == "prune" for s in result.steps),
            "macs_kept": result.macs_after / result.macs_before, "cached_shapes": table["cached_shapes"],
            "measured_shapes": table["measured_shapes"]}


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _header(res: dict) -> list[str]:
    m, v = res["machine"], res["versions"]
    return [
        "## Latency tables and latency-aware pruning (edgeprune profile)", "",
        f"`python benchmarks/profile_bench.py` ({res['date']}). Machine: {m['cpu']}, {m['cores']} cores "
        f"({m['flags']}), shared with other jobs: load average {m['load_before']} before and "
        f"{m['load_after']} after. TensorFlow {v['tensorflow']}, tf-keras {v['tf-keras']}, ai-edge-litert "
        f"{v['ai-edge-litert']} (XNNPACK), Python {v['python']}. Target `local` through the harness's Python "
        "runner; every call times its models side by side (paired: 300 invokes of each, in blocks of 10, "
        "shuffled), medians.", "",
        "Model: MobileNetV2 alpha 0.35 at 224x224x3, 10 classes, untrained (latency does not depend on "
        "the weights). The table: every conv, depthwise and dense layer with its folded batch norm, "
        "activation and padding, at the allowed channel counts nearest 25/50/75/100 % of each group and the "
        "smallest (round_to 8, max_ratio 0.9): 272 unit shapes, float32, profiled from an empty cache. "
        "Prediction = scale x units + fixed cost, calibrated on the full model and its uniform 50 % variant "
        "measured in the table's call. The variants below are five channel-pruned ones "
        "(edgeprune.channels.prune_channels, no fine-tuning) and one with five residual blocks removed "
        "(edgeprune.channels.blocks.remove_blocks; predicted from the layers it still has, its removed Adds "
        "still in the fixed cost), each measured in later calls side by side with the full model; `measured` "
        "is the median over those calls, `error` is against it, and the last column is the plain fixed cost "
        "(scale 1) for comparison.", ""]


def _validation(val: dict) -> list[str]:
    t = val["table"]
    how = (f"{val['profile_conversions']} exports" if val["profile_conversions"]
           else "reusing the exports of the run above: the same files, measured again")
    untabled = ", ".join(f"{k} x{n}" for k, n in t["untabled_ops"].items())
    full = ", ".join(f"{x:.3f}" for x in val["full_measured_ms"])
    lines = [f"### {val['threads']} thread(s): table built in {val['profile_s']:.0f} s ({how})", "",
             f"Units at full width {t['layers_ms']:.3f} ms, full model {t['full_ms']:.3f} ms in the table's "
             "call; "
             f"scale {t['scale']:.3f}, fixed cost {t['fixed_ms']:.3f} ms ({untabled} and the invoke). In the "
             f"{val['calls']} later calls the full model measured {full} ms.", "",
             "| variant | MACs | predicted (ms) | measured (ms), per call | error | errors per call | "
             "error, fixed cost only |", "|---|---:|---:|---|---:|---|---:|"]
    for r in val["variants"]:
        per = ", ".join(f"{x:.3f}" for x in r["measured_ms"])
        errs = ", ".join(pct(e) for e in r["errors"])
        lines.append(f"| {r['name']} | {r['macs']:,} | {r['predicted_ms']:.3f} | {r['median_ms']:.3f} "
                     f"({per}) | {pct(r['error'])} | {errs} | {pct(r['fixed_only_error'])} |")
    worst = max(abs(r["error"]) for r in val["variants"] if r["widths"] is not None)
    checks = " ".join(f"{c['name']}: {pct(c['error'])}." for c in t["checks"])
    lines += ["", f"Largest error of the five channel-pruned variants {100 * worst:.1f} % (target: within "
                  f"10 %): **{'met' if worst <= 0.10 else 'not met'}**. The table's own checks: {checks}", ""]
    return lines


def _prune(p: dict) -> list[str]:
    lines = ["### prune --method channels --latency-ms", "",
             f"T = half the float32 latency at 1 thread = {p['target_ms']:.3f} ms. The command prunes for "
             "ChannelConfig's default latency mode, int8 at 1 thread, on this host (the CLI has no "
             "option for the mode, threads or target); no fine-tuning (`--epochs 0`). Its result is "
             "measured in int8 side by side with the original.", "",
             "| run | wall (s) | unit shapes measured / cached | prune steps | confirmations (predicted -> "
             "measured ms) | result, int8 (ms) | <= 1.05 T |", "|---|---:|---:|---:|---|---:|---|"]
    runs = [("empty cache", p.get("cold")), ("cache filled", p.get("warm"))]
    for label, r in runs:
        if not r:
            continue
        if r["exit_code"] != 0:
            lines.append(f"| {label} | {r['wall_s']:.0f} | - | - | failed: {r['stderr'][-200:]} | - | no |")
            continue
        conf = "; ".join(f"{c['predicted_ms']:.3f} -> {c['measured_ms']:.3f}" for c in r["confirms"])
        ok = r["result_ms"] <= 1.05 * p["target_ms"]
        lines.append(f"| {label} | {r['wall_s']:.0f} | {r['table']['measured_shapes']} / "
                     f"{r['table']['cached_shapes']} | {r['prune_steps']} | {conf} | {r['result_ms']:.3f} "
                     f"(original {r['original_ms']:.3f}) | {'yes' if ok else 'no'} |")
    done = [r for _, r in runs if r and r["exit_code"] == 0]
    met = len(done) == 2 and all(r["wall_s"] < 300 and r["result_ms"] <= 1.05 * p["target_ms"] for r in done)
    lines += ["", f"Target (under 5 minutes, result at most 1.05 T): **{'met' if met else 'not met'}**.", ""]
    lib = p.get("library_float32")
    if lib and "error" in lib:
        lines += [f"The same T in float32 through the library failed after {lib['wall_s']:.0f} s: "
                  f"{lib['error']}", ""]
    elif lib:
        conf = "; ".join(f"{c['predicted_ms']:.3f} -> {c['measured_ms']:.3f}" for c in lib["confirms"])
        within = "within" if lib["after_ms"] <= 1.05 * p["target_ms"] else "above"
        lines += ["The same T in float32 through the library (`ChannelConfig(latency_ms=T, "
                  f"latency_mode=\"float32\")`, the 1-thread table above cached): {lib['wall_s']:.0f} s, "
                  f"{lib['prune_steps']} steps, confirmations {conf} ms (a miss corrects the fixed cost and "
                  f"pruning goes on), MACs kept {100 * lib['macs_kept']:.0f} %; {within} 1.05 T.", ""]
    return lines


def render(res: dict) -> str:
    lines = _header(res)
    for val in res.get("validation", []):
        lines += _validation(val)
    if res.get("prune"):
        lines += _prune(res["prune"])
    return "\n".join(lines).rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--skip-validation", action="store_true")
    ap.add_argument("--skip-prune", action="store_true")
    ap.add_argument("--calls", type=int, default=3, help="later calls that measure the variants")
    ap.add_argument("--render-only", action="store_true", help="rewrite profile.md from profile.json")
    args = ap.parse_args()
    if args.render_only:
        write_text_atomic(RESULTS / "profile.md", render(json.loads((RESULTS / "profile.json").read_text())))
        return
    progress.set_reporter(StderrReporter())
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(),
                       "load_before": [round(x, 2) for x in os.getloadavg()]}}
    model = mobilenet()
    work = Path(tempfile.mkdtemp(prefix="edgeprune-profile-bench-"))
    caches = work / "caches"
    if not args.skip_validation:
        probe = HarnessProbe("local", "float32", 1, keep_models=16)
        pruned = variants(model)
        res["validation"] = []
        for t in args.threads.split(","):
            cache = caches / "validation" / "latency-tables"
            res["validation"].append(validate(model, probe, int(t), cache, pruned, args.calls))
            res["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
            save(res)  # what is measured is kept if a later part fails
    if not args.skip_prune:
        first = (res.get("validation") or [{}])[0]
        base = (statistics.median(first["full_measured_ms"]) if first.get("threads") == 1
                else HarnessProbe("local", "float32", 1)(model))
        p = {"float32_ms": base, "target_ms": base / 2}
        model_path = work / "mobilenet_v2_035_224.keras"
        model.save(model_path)
        for label in ("cold", "warm"):
            row = run_prune_cli(model_path, p["target_ms"], caches / "prune", work)
            if row["exit_code"] == 0:
                row["original_ms"], row["result_ms"] = measure_result(Path(row["out"]), model, "int8")
            p[label] = row
            res["prune"] = p
            res["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
            save(res)
        p["library_float32"] = library_float32(model, p["target_ms"], caches / "validation")
        res["prune"] = p
    res["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    save(res)
    print(render(res))


def save(res: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "profile.json", res)
    write_text_atomic(RESULTS / "profile.md", render(res))


if __name__ == "__main__":
    main()

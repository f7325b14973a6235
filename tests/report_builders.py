"""Builders for the report tests (no tests here): synthetic run folders written through the real
producers: BenchRun and its dataclasses with edgeprune.report.bench_folder.write_run for bench.json; for
report.json the recipe, sparsity and ratio code the pipeline itself uses, written with
runfolder.write_json_atomic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgeprune.bench import BenchResult, BenchRun, BenchSettings, DeviceInfo, ModelFile
from edgeprune.report.bench_folder import write_run
from edgeprune.bench.results import CpuCore, MemoryUse, ThermalState
from edgeprune.bench.stats import summarize

PIXEL = dict(
    name="pixel7",
    target="adb:R5CT",
    kind="adb",
    model="Pixel 7",
    manufacturer="Google",
    soc="Google Tensor G2",
    abi="arm64-v8a",
    os="Android 14",
    android_sdk=34,
    freqs=[1800000] * 4 + [2350000] * 2 + [2850000] * 2,
)
PI = dict(
    name="pi5",
    target="ssh:pi@pi5",
    kind="ssh",
    model="Raspberry Pi 5 Model B Rev 1.0",
    manufacturer=None,
    soc="BCM2712",
    abi="aarch64",
    os="Debian GNU/Linux 12 (bookworm)",
    android_sdk=None,
    freqs=[2400000] * 4,
)
# median latency in ms per model at one thread on each device; more threads go faster
BASE_MS = {"baseline": 4.0, "int8": 2.0, "s60": 3.8, "ch30-int8": 1.4}
SIZES = {"baseline": 52_000, "int8": 15_000, "s60": 52_000, "ch30-int8": 9_800}
DEVICE_SPEED = {"pixel7": 1.0, "pi5": 2.5}


def device_info(d: dict, temp: float = 38.0) -> DeviceInfo:
    return DeviceInfo(
        name=d["name"],
        target=d["target"],
        kind=d["kind"],
        reachable=True,
        authorized=True,
        model=d["model"],
        manufacturer=d["manufacturer"],
        soc=d["soc"],
        abi=d["abi"],
        os=d["os"],
        android_sdk=d["android_sdk"],
        cores=[CpuCore(i, f) for i, f in enumerate(d["freqs"])],
        python="/usr/bin/python3",
        python_version="3.11.2",
        runtimes=["ai_edge_litert"],
        runners=["python"],
        thermal=ThermalState(temps_c={"cpu": temp}, thermal_status=0),
    )


def model_file(name: str) -> ModelFile:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return ModelFile(
        name=f"{name}.tflite",
        path=f"/models/{name}.tflite",
        sha256=sha,
        bytes=SIZES.get(name, 10_000),
        gzip_bytes=int(SIZES.get(name, 10_000) * 0.7),
    )


def bench_run(
    devices=(PIXEL,),
    models=("baseline", "int8"),
    threads=(1, 4),
    scale: float = 1.0,
    noise: float = 0.03,
    n: int = 200,
    seed: int = 0,
    hot: bool = False,
) -> BenchRun:
    """A BenchRun whose samples are lognormal around BASE_MS x device speed x `scale`, with
    relative spread `noise`."""
    rng = np.random.default_rng(seed)
    results = []
    for d in devices:
        for name in models:
            mf = model_file(name)
            for t in threads:
                median_us = 1000 * BASE_MS.get(name, 3.0) * DEVICE_SPEED.get(d["name"], 1.0) * scale / t**0.6
                samples = list(np.round(median_us * rng.lognormal(0.0, noise, n), 3))
                stats = summarize(samples)
                flags = (["high_cv"] if stats.cv > 0.1 else []) + (["throttled"] if hot else [])
                results.append(
                    BenchResult(
                        model=mf.name,
                        model_sha256=mf.sha256,
                        model_bytes=mf.bytes,
                        gzip_bytes=mf.gzip_bytes,
                        device=d["name"],
                        target=d["target"],
                        runner="python",
                        runner_detail={
                            "runner_version": "1",
                            "runner_sha256": "ab" * 32,
                            "runtime": "ai_edge_litert",
                            "runtime_version": "2.3.0",
                            "python": "3.11.2",
                            "machine": d["abi"],
                        },
                        threads=t,
                        affinity="big" if d["kind"] == "adb" else "all",
                        cpu_mask="f0",
                        xnnpack=True,
                        warmup=5,
                        runs_requested=n,
                        min_secs=1.0,
                        stats=stats,
                        samples_us=samples,
                        init_us=120_000.0,
                        first_us=median_us * 2,
                        memory=MemoryUse("peak_rss", 48.5, "peak RSS of the Python runner process"),
                        thermal_before=ThermalState(temps_c={"cpu": 38.0}, thermal_status=0),
                        thermal_after=ThermalState(
                            temps_c={"cpu": 86.0 if hot else 41.5}, thermal_status=2 if hot else 0
                        ),
                        flags=flags,
                        notes=["throttling: Android thermal status 2"] if hot else [],
                        wall_s=1.5,
                    )
                )
    return BenchRun(
        created="2026-11-20T10:00:00+00:00",
        settings=BenchSettings(threads=list(threads), runs=n, min_secs=1.0),
        models=[model_file(m) for m in models],
        devices=[device_info(d) for d in devices],
        results=results,
        host={"hostname": "ci", "platform": "Linux", "python": "3.11.7", "machine": "x86_64"},
        edgeprune_version="0.1.0",
        overhead_s={d["name"]: 0.5 for d in devices},
    )


def write_bench(folder: Path, run: BenchRun) -> Path:
    write_run(run, folder)
    return folder


def pipeline_report(scale: float = 1.0, threads=(1, 2), long_names: bool = False) -> dict:
    """A report.json dict of the pipeline's shape: recipe from the real Recipe dataclasses,
    sparsity from SparsityReport, ratios by the pipeline's own _add_ratios."""
    from edgeprune import pipeline
    from edgeprune.recipe import BenchSpec, DataSpec, ModelSpec, Recipe, TrainSpec, VariantSpec
    from edgeprune.sparsity import LayerSparsity, SparsityReport

    names = list(BASE_MS)
    if long_names:
        names = [n + "-with-a-rather-long-descriptive-name" if n != "baseline" else n for n in names]
    specs = {
        "baseline": VariantSpec("baseline", sparse_encoding="off"),
        names[1]: VariantSpec(names[1], quantize="int8"),
        names[2]: VariantSpec(names[2], prune="unstructured", target_sparsity=0.6),
        names[3]: VariantSpec(names[3], prune="channels", channels={"ratio": 0.3}, quantize="int8"),
    }
    recipe = Recipe(
        name="synthetic",
        model=ModelSpec(architecture="mobilenet_v2", alpha=0.35, input_shape=[32, 32, 1], classes=10),
        data=DataSpec(train_limit=1000, test_limit=300),
        baseline=TrainSpec(epochs=1),
        bench=BenchSpec(threads=list(threads), runs=10),
        variants=list(specs.values())[1:],
    )
    variants = []
    for i, (name, spec) in enumerate(specs.items()):
        key = list(BASE_MS)[i]
        pruned = spec.prune == "unstructured"
        sp = SparsityReport(
            "unstructured" if pruned else "none",
            0.6 if pruned else None,
            [
                LayerSparsity("stem", "Conv2D", 72, 0, False, "skipped: @first_conv"),
                LayerSparsity("conv_a", "Conv2D", 1152, 691 if pruned else 0, pruned),
                LayerSparsity("dw", "DepthwiseConv2D", 144, 0, False, "TF-MOT never prunes DepthwiseConv2D"),
                LayerSparsity("conv_b", "Conv2D", 512, 307 if pruned else 0, pruned),
                LayerSparsity("classifier", "Dense", 320, 0, False, "skipped: @classifier"),
            ],
        )
        lat = []
        for t in threads:
            med = BASE_MS[key] * scale / t**0.6
            lat.append(
                {
                    "target": "local",
                    "threads": t,
                    "runs": 50,
                    "median_ms": med,
                    "p5_ms": med * 0.95,
                    "p90_ms": med * 1.04,
                    "p95_ms": med * 1.06,
                    "mean_ms": med * 1.01,
                    "cv": 0.03,
                    "runtime": "ai_edge_litert 2.3.0",
                    "xnnpack": True,
                    "peak_rss_mb": 300.0,
                }
            )
        row = {
            "name": name,
            "spec": spec.__dict__.copy(),
            "status": "ok",
            "failures": [],
            "sparsity": sp.to_dict(),
            "params": 2000,
            "keras_accuracy": 0.8,
            "sparse_encoding": None,
            "tflite": f"tflite/{name}.tflite",
            "bytes": SIZES[key],
            "gzip_bytes": int(SIZES[key] * 0.6),
            "tflite_info": {
                "op_counts": {"CONV_2D": 3},
                "has_sparse_tensors": False,
                "has_densify": False,
                "weights_zero_fraction": 0.35 if pruned else 0.001,
                "input_dtype": "FLOAT32",
                "tensor_dtypes": ["FLOAT32"],
            },
            "verification": {
                "ok": True,
                "runs_in_default_interpreter": True,
                "accuracy": 0.8 - 0.02 * i,
                "agreement": 1.0 - 0.03 * i,
                "max_abs_diff_vs_keras": None,
                "tolerance": None,
                "failures": [],
                "samples": 300,
            },
            "accuracy": 0.8 - 0.02 * i,
            "agreement": 1.0 - 0.03 * i,
            "latency": lat,
            "seconds": 3.0,
        }
        if spec.prune == "channels":
            row["channels"] = {
                "layers": [
                    {"layer": "stem", "type": "Conv2D", "before": 8, "after": 8},
                    {"layer": "conv_a", "type": "Conv2D", "before": 16, "after": 12},
                    {"layer": "dw", "type": "DepthwiseConv2D", "before": 16, "after": 12},
                    {"layer": "conv_b", "type": "Conv2D", "before": 32, "after": 24},
                ],
                "params_before": 2200,
                "params_after": 1400,
                "macs_before": 90000,
                "macs_after": 60000,
                "config": {"ratio": 0.3},
            }
        variants.append(row)
    report = {
        "schema": pipeline.REPORT_SCHEMA,
        "version": 1,  # the version-1 shape: summary latency rows per variant (still read)
        "created": "2026-11-20T09:00:00Z",
        "seconds": 120.0,
        "recipe": recipe.to_dict(),
        "recipe_file": "/recipes/synthetic.toml",
        "model": {
            "kind": "builtin",
            "path": None,
            "architecture": "mobilenet_v2",
            "details": {},
            "params": 2200,
            "input_shape": [32, 32, 1],
        },
        "data": {
            "name": "fashion_mnist",
            "train": 1000,
            "test": 300,
            "image_shape": [32, 32, 1],
            "num_classes": 10,
        },
        "baseline": {"epochs": 1.0, "cached": False, "trained": True, "keras_accuracy": 0.8},
        "strategy": "default",
        "versions": pipeline.versions(),
        "machine": pipeline.machine(),
        "variants": variants,
    }
    return report


def write_pipeline(folder: Path, report: dict) -> Path:
    from edgeprune.runfolder import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "report.json", report)
    return folder


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(capsys, *args) -> CliResult:
    """The real `edgeprune` entry point (edgeprune.cli.main: parsing, rendering, errors to exit
    codes) in this process: the same path as the console script, without a second interpreter."""
    import pytest

    from edgeprune.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return CliResult(e.value.code or 0, out.out, out.err)

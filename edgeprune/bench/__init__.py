"""On-device benchmarks of .tflite files: size and latency on the host (`local`), Android phones
(`adb:SERIAL`) and Linux boards (`ssh:[user@]host[:port]`).

    from edgeprune.bench import BenchSettings, bench_models
    run = bench_models(["a.tflite"], ["local", "adb:R58M123"], BenchSettings(threads=[1, 4]))

It measures and records (a BenchRun); drawing the results is edgeprune.report's work
(edgeprune.report.bench_folder.write_run writes a bench run's folder). Importing this package
never imports TensorFlow."""

from edgeprune.bench.harness import bench_models, inspect_model, probe_devices
from edgeprune.bench.inventory import DeviceSpec, Inventory, load_inventory, parse_target
from edgeprune.bench.results import (
    BenchResult,
    BenchRun,
    BenchSettings,
    DeviceInfo,
    Failure,
    MemoryUse,
    ModelFile,
    PairedRatio,
    WeightTensor,
)
from edgeprune.bench.stats import LatencyStats

__all__ = [
    "bench_models",
    "probe_devices",
    "inspect_model",
    "load_inventory",
    "parse_target",
    "DeviceSpec",
    "Inventory",
    "BenchRun",
    "BenchResult",
    "BenchSettings",
    "DeviceInfo",
    "Failure",
    "MemoryUse",
    "ModelFile",
    "PairedRatio",
    "WeightTensor",
    "LatencyStats",
]

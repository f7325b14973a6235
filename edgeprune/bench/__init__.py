"""On-device benchmarks of .tflite files: size and latency on the host (`local`), Android phones
(`adb:SERIAL`) and Linux boards (`ssh:[user@]host[:port]`).

    from edgeprune.bench import BenchSettings, bench_models, write_run
    run = bench_models(["a.tflite"], ["local", "adb:R58M123"], BenchSettings(threads=[1, 4]))
    write_run(run, "runs/bench", force=False)

Importing this package never imports TensorFlow."""

from edgeprune.bench.harness import bench_models, inspect_model, probe_devices
from edgeprune.bench.inventory import DeviceSpec, Inventory, load_inventory, parse_target
from edgeprune.bench.report import write_run
from edgeprune.bench.results import (
    BenchResult,
    BenchRun,
    BenchSettings,
    DeviceInfo,
    Failure,
    MemoryUse,
    ModelFile,
)
from edgeprune.bench.stats import LatencyStats

__all__ = [
    "bench_models",
    "probe_devices",
    "inspect_model",
    "write_run",
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
    "LatencyStats",
]

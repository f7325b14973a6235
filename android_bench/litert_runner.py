#!/usr/bin/env python3
"""Self-contained TFLite latency runner: stdlib + numpy + a TFLite runtime.

Runtimes, in order: ai_edge_litert, tflite_runtime, tensorflow.lite. It warms up, then times every
invoke until it has at least --runs samples and --min-secs seconds (stopping at --max-secs), and
prints one JSON object on stdout. The same code measures host latency inside edgeprune and runs on
devices, copied there as a single file.

With --paired it loads every model given in one process and times them side by side: block after
block, each block runs every model in a new shuffled order (seeded), each model for at least
--block-runs invokes and --block-secs seconds, until every model has --runs samples and
--min-secs seconds of timed invokes (or the run reaches --max-secs per model). Every sample
carries the index of its block, so that models can be compared block by block: a change of
the machine's load during the run hits every model of a block alike.

    python3 litert_runner.py MODEL.tflite --threads 1 --runs 50 --warmup 5 --min-secs 1
    python3 litert_runner.py --paired A.tflite B.tflite --threads 1 --runs 50 --min-secs 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

RUNNER_VERSION = "2"


class RunnerError(Exception):
    """A problem the user can fix (no runtime, a model that does not load). `model` names the
    model at fault, where one is."""

    def __init__(self, message, model=None):
        super().__init__(message)
        self.model = model


def load_interpreter(model_path: str, num_threads: int, use_xnnpack: bool = True):
    """Returns (interpreter, runtime_name, runtime_version). Tries ai_edge_litert, then
    tflite_runtime, then tensorflow.lite."""
    errors = []
    try:
        from ai_edge_litert import interpreter as mod  # type: ignore

        name = "ai_edge_litert"
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("ai-edge-litert")
        except PackageNotFoundError:  # metadata may be missing in a copied install
            ver = "unknown"
    except ImportError as e:
        errors.append(f"ai_edge_litert: {e}")
        try:
            from tflite_runtime import interpreter as mod  # type: ignore

            name = "tflite_runtime"
            ver = getattr(__import__("tflite_runtime"), "__version__", "unknown")
        except ImportError as e2:
            errors.append(f"tflite_runtime: {e2}")
            try:
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                import tensorflow as tf  # type: ignore

                mod = tf.lite
                name = "tensorflow.lite"
                ver = tf.__version__
            except ImportError as e3:
                errors.append(f"tensorflow: {e3}")
                raise RunnerError(
                    "no TFLite runtime found on this machine (tried ai_edge_litert, tflite_runtime, "
                    "tensorflow); install one with: python3 -m pip install ai-edge-litert"
                ) from None
    kwargs = {"model_path": model_path, "num_threads": int(num_threads)}
    if not use_xnnpack and hasattr(mod, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = mod.Interpreter(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise RunnerError(
            f"{model_path} does not load in {name}: {' '.join(str(e).split())[:300]}", model_path
        ) from None
    return interp, name, ver


def _random_input(detail, rng):
    import numpy as np

    shape = [int(d) if d > 0 else 1 for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(dtype)


def _peak_rss_mb() -> float | None:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0
    except (ImportError, OSError):
        return None


def _memory(rss_before, rss_after):
    """Peak RSS of this process after the runs, and how much the runs added."""
    delta = rss_after - rss_before if rss_after is not None and rss_before is not None else None
    return {"kind": "peak_rss_mb", "peak_rss_mb": rss_after, "peak_rss_delta_mb": delta}


def summarize(samples_us):
    """Statistics over raw samples (microseconds). Percentiles by linear interpolation; std is the
    sample standard deviation (n-1)."""
    xs = sorted(float(x) for x in samples_us)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")

    def pct(p):
        if n == 1:
            return xs[0]
        k = (n - 1) * p / 100.0
        lo = math.floor(k)
        hi = min(lo + 1, n - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {
        "count": n,
        "min_us": xs[0],
        "max_us": xs[-1],
        "mean_us": mean,
        "median_us": pct(50),
        "p5_us": pct(5),
        "p90_us": pct(90),
        "p95_us": pct(95),
        "std_us": std,
        "cv": (std / mean) if mean > 0 else 0.0,
    }


def _prepared(model_path, threads, use_xnnpack, warmup, rng):
    """Loads one model, sets random inputs, times the first invoke and warms it up."""
    t0 = time.perf_counter()
    interp, runtime, runtime_version = load_interpreter(model_path, threads, use_xnnpack)
    init_us = (time.perf_counter() - t0) * 1e6
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], _random_input(detail, rng))
    t = time.perf_counter()
    try:
        interp.invoke()
    except (ValueError, RuntimeError) as e:
        raise RunnerError(f"{model_path} does not run: {' '.join(str(e).split())[:300]}", model_path) from None
    first_us = (time.perf_counter() - t) * 1e6
    for _ in range(max(0, int(warmup))):
        interp.invoke()
    return interp, runtime, runtime_version, init_us, first_us


def measure(model_path, threads=1, runs=50, warmup=5, min_secs=1.0, max_secs=150.0, use_xnnpack=True, seed=0):
    """Times invokes of one model. Returns a dict with raw samples (us) and their summary."""
    import numpy as np

    rss_before = _peak_rss_mb()
    interp, runtime, runtime_version, init_us, first_us = _prepared(
        model_path, threads, use_xnnpack, warmup, np.random.default_rng(seed)
    )
    samples = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        interp.invoke()
        now = time.perf_counter()
        samples.append((now - t) * 1e6)
        elapsed = now - start
        if (len(samples) >= runs and elapsed >= min_secs) or elapsed >= max_secs:
            break
    rss_after = _peak_rss_mb()
    return {
        "runner": "litert_runner",
        "runner_version": RUNNER_VERSION,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "model": os.path.basename(model_path),
        "model_bytes": os.path.getsize(model_path),
        "threads": int(threads),
        "xnnpack": bool(use_xnnpack),
        "warmup": int(warmup),
        "init_us": init_us,
        "first_us": first_us,
        "samples_us": samples,
        "summary": summarize(samples),
        "memory": _memory(rss_before, rss_after),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def measure_paired(
    model_paths,
    threads=1,
    runs=50,
    warmup=5,
    min_secs=1.0,
    max_secs=150.0,
    use_xnnpack=True,
    seed=0,
    block_runs=2,
    block_secs=0.01,
):
    """Times several models side by side in one process, in blocks. In each block every model
    runs, in a new order drawn by random.Random(seed), for at least `block_runs` invokes and
    `block_secs` seconds. It stops after the first whole block at which every model has `runs`
    samples and `min_secs` seconds of timed invokes, or once the run has lasted `max_secs` per
    model. Returns a dict whose "models" list holds, per model in the order given, its raw samples
    (us) and the block index of every sample."""
    import random

    import numpy as np

    if not model_paths:
        raise RunnerError("no model to measure")
    rss_before = _peak_rss_mb()
    rng = np.random.default_rng(seed)
    loaded = [_prepared(p, threads, use_xnnpack, warmup, rng) for p in model_paths]
    n = len(loaded)
    samples = [[] for _ in range(n)]
    blocks = [[] for _ in range(n)]
    timed_s = [0.0] * n
    order = list(range(n))
    shuffle = random.Random(seed)
    block = 0
    start = time.perf_counter()
    while True:
        shuffle.shuffle(order)
        for m in order:
            interp = loaded[m][0]
            part_start = time.perf_counter()
            k = 0
            while True:
                t = time.perf_counter()
                interp.invoke()
                now = time.perf_counter()
                samples[m].append((now - t) * 1e6)
                blocks[m].append(block)
                timed_s[m] += now - t
                k += 1
                if k >= block_runs and now - part_start >= block_secs:
                    break
        block += 1
        if all(len(samples[m]) >= runs and timed_s[m] >= min_secs for m in range(n)):
            break
        if time.perf_counter() - start >= max_secs * n:
            break
    wall_s = time.perf_counter() - start
    rss_after = _peak_rss_mb()
    return {
        "runner": "litert_runner",
        "runner_version": RUNNER_VERSION,
        "mode": "paired",
        "runtime": loaded[0][1],
        "runtime_version": loaded[0][2],
        "threads": int(threads),
        "xnnpack": bool(use_xnnpack),
        "warmup": int(warmup),
        "seed": int(seed),
        "block_runs": int(block_runs),
        "block_secs": float(block_secs),
        "blocks": block,
        "wall_s": wall_s,
        "models": [
            {
                "model": os.path.basename(p),
                "model_bytes": os.path.getsize(p),
                "init_us": loaded[i][3],
                "first_us": loaded[i][4],
                "samples_us": samples[i],
                "blocks": blocks[i],
                "summary": summarize(samples[i]),
            }
            for i, p in enumerate(model_paths)
        ],
        "memory": _memory(rss_before, rss_after),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="MODEL", help="one model; with --paired, one or more")
    p.add_argument("--paired", action="store_true", help="time every MODEL side by side in blocks")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-secs", type=float, default=1.0)
    p.add_argument("--max-secs", type=float, default=150.0)
    p.add_argument("--block-runs", type=int, default=2)
    p.add_argument("--block-secs", type=float, default=0.01)
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.paired and len(args.models) != 1:
        print(json.dumps({"error": f"{len(args.models)} models given: time several side by side with --paired"}))
        return 2
    if args.block_runs < 1 or args.block_secs < 0:
        print(json.dumps({"error": "--block-runs must be at least 1 and --block-secs 0 or more"}))
        return 2
    for model in args.models:
        if not os.path.isfile(model):
            print(json.dumps({"error": f"model file not found: {model}", "model": model}))
            return 2
    try:
        import numpy  # noqa: F401  (every runtime needs it; say so before a runtime fails on it)
    except ImportError:
        print(json.dumps({"error": "numpy is missing on this machine; install it with: "
                                   "python3 -m pip install ai-edge-litert (which brings numpy)"}))
        return 3
    try:
        if args.paired:
            result = measure_paired(args.models, args.threads, args.runs, args.warmup, args.min_secs,
                                    args.max_secs, not args.no_xnnpack, args.seed, args.block_runs,
                                    args.block_secs)
        else:
            result = measure(args.models[0], args.threads, args.runs, args.warmup, args.min_secs,
                             args.max_secs, not args.no_xnnpack, args.seed)
    except RunnerError as e:
        print(json.dumps({"error": str(e), **({"model": e.model} if e.model else {})}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Self-contained TFLite latency runner: stdlib + numpy + a TFLite runtime.

Runtimes, in order: ai_edge_litert, tflite_runtime, tensorflow.lite. It warms up, then times every
invoke until it has at least --runs samples and --min-secs seconds (stopping at --max-secs), and
prints one JSON object on stdout. The same code measures host latency inside edgeprune and runs on
devices, copied there as a single file.

    python3 litert_runner.py MODEL.tflite --threads 1 --runs 50 --warmup 5 --min-secs 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

RUNNER_VERSION = "1"


class RunnerError(Exception):
    """A problem the user can fix (no runtime, a model that does not load)."""


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
        raise RunnerError(f"{model_path} does not load in {name}: {' '.join(str(e).split())[:300]}") from None
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


def measure(model_path, threads=1, runs=50, warmup=5, min_secs=1.0, max_secs=150.0, use_xnnpack=True, seed=0):
    """Times invokes of one model. Returns a dict with raw samples (us) and their summary."""
    import numpy as np

    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    interp, runtime, runtime_version = load_interpreter(model_path, threads, use_xnnpack)
    init_us = (time.perf_counter() - t0) * 1e6
    rng = np.random.default_rng(seed)
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], _random_input(detail, rng))
    t = time.perf_counter()
    interp.invoke()
    first_us = (time.perf_counter() - t) * 1e6
    for _ in range(max(0, int(warmup))):
        interp.invoke()
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
        "memory": {
            "kind": "peak_rss_mb",
            "peak_rss_mb": rss_after,
            "peak_rss_delta_mb": (rss_after - rss_before) if rss_after is not None and rss_before is not None else None,
        },
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-secs", type=float, default=1.0)
    p.add_argument("--max-secs", type=float, default=150.0)
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not os.path.isfile(args.model):
        print(json.dumps({"error": f"model file not found: {args.model}"}))
        return 2
    try:
        import numpy  # noqa: F401  (every runtime needs it; say so before a runtime fails on it)
    except ImportError:
        print(json.dumps({"error": "numpy is missing on this machine; install it with: "
                                   "python3 -m pip install ai-edge-litert (which brings numpy)"}))
        return 3
    try:
        result = measure(args.model, args.threads, args.runs, args.warmup, args.min_secs, args.max_secs,
                         not args.no_xnnpack, args.seed)
    except RunnerError as e:
        print(json.dumps({"error": str(e)}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

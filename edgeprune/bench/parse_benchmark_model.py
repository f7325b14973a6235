"""Text -> numbers for the output of TFLite's `benchmark_model` and LiteRT's newer one. Pure:
no I/O. Tolerates the `INFO: ` prefix or none, logcat prefixes, iostream scientific notation,
the legacy "Average inference timings" line, count lines without percentiles, `count=1 curr=X`
and `(all same)`, the peak-memory line, delegate lines and LiteRT's millisecond lines."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from edgeprune.errors import DeviceError

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class BenchmarkOutputError(DeviceError):
    """benchmark_model ran but printed no timings we can read."""


@dataclass(frozen=True)
class CountStat:
    """One `count=... first=... curr=... min=... max=... avg=... std=... p5=... median=... p95=...` line
    (microseconds). Fields the build did not print are None."""

    count: int
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False


@dataclass(frozen=True)
class DelegateInfo:
    delegate: str
    replaced_nodes: int
    total_nodes: int
    partitions: int | None


@dataclass(frozen=True)
class BenchmarkModelOutput:
    """What one benchmark_model invocation reported. Times in microseconds, sizes in MB (1e6 bytes
    for the model size, as the tool prints it; memory in MiB as the tool computes it)."""

    format: str  # "tflite" | "tflite-legacy" | "litert"
    inference: CountStat | None
    warmup: CountStat | None
    init_us: float | None
    first_us: float | None
    warmup_avg_us: float | None
    inference_avg_us: float | None
    model_size_mb: float | None
    footprint_init_mb: float | None
    footprint_overall_mb: float | None
    peak_memory_mb: float | None
    delegates: list[DelegateInfo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median_us(self) -> float | None:
        if self.inference is not None:
            if self.inference.median_us is not None:
                return self.inference.median_us
            if self.inference.all_same:
                return self.inference.curr_us
        return None

    def to_dict(self) -> dict:
        return asdict(self)


_STRIP_PREFIXES = [
    # logcat: `07-08 15:34:26.202 I/tflite ( 5395): ...` or threadtime `07-08 15:34:26.202  5395  5395 I tflite  : ...`
    re.compile(
        r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+(?:\d+\s+\d+\s+)?[VDIWEF][/ ]\s*[\w.-]+\s*(?:\(\s*\d+\))?\s*:\s?"
    ),
    re.compile(r"^[VDIWEF]/[\w.-]+\s*\(\s*\d+\):\s?"),  # logcat brief format
    re.compile(
        r"^(?:INFO|WARNING|ERROR|VERBOSE):\s*(?:\[[^\]]*\]\s*)?"
    ),  # tflite / LiteRT severity + [file:line]
]

_COUNT = re.compile(r"\bcount=(\d+)((?:\s+\w+=" + _NUM + r")*)(\(all same\))?")
_KV = re.compile(r"(\w+)=(" + _NUM + r")")
_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*(?P<init>"
    + _NUM
    + r"),\s*First inference:\s*(?P<first>"
    + _NUM
    + r"),\s*Warmup \(avg\):\s*(?P<warm>"
    + _NUM
    + r"),\s*Inference \(avg\):\s*(?P<inf>"
    + _NUM
    + r")"
)
_LEGACY = re.compile(
    r"Average inference timings in us:\s*Warmup:\s*(?P<warm>"
    + _NUM
    + r"),\s*Init:\s*(?P<init>"
    + _NUM
    + r"),\s*(?:no stats:\s*)?Inference:\s*(?P<inf>"
    + _NUM
    + r")"
)
_SIZE = re.compile(r"The input model file size \(MB\):\s*(" + _NUM + r")")
_INIT_SESSION = re.compile(r"Initialized session in\s*(" + _NUM + r")\s*ms")
_FOOTPRINT = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\):\s*init=("
    + _NUM
    + r")\s+overall=("
    + _NUM
    + r")"
)
_PEAK = re.compile(r"[Pp]eak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUM + r")")
_DELEGATE = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\) node(?:, yielding (\d+) partitions)?"
)
# LiteRT's benchmark_litert_model (milliseconds)
_LRT = {
    "init": re.compile(r"Model initialization:\s*(" + _NUM + r")\s*ms"),
    "first": re.compile(r"Warmup \(first\):\s*(" + _NUM + r")\s*ms"),
    "warm": re.compile(r"Warmup \(avg\):\s*(" + _NUM + r")\s*ms\s*\((\d+) runs\)"),
    "avg": re.compile(r"Inference \(avg\):\s*(" + _NUM + r")\s*ms\s*\((\d+) runs\)"),
    "min": re.compile(r"Inference \(min\):\s*(" + _NUM + r")\s*ms"),
    "max": re.compile(r"Inference \(max\):\s*(" + _NUM + r")\s*ms"),
    "std": re.compile(r"Inference \(std\):\s*(" + _NUM + r")"),
    "init_fp": re.compile(r"Init footprint:\s*(" + _NUM + r")\s*MB"),
    "overall_fp": re.compile(r"Overall footprint:\s*(" + _NUM + r")\s*MB"),
    "peak": re.compile(r"Peak memory:\s*(" + _NUM + r")\s*MB"),
}
_ERROR = re.compile(r"^(?:ERROR:|E/tflite|Failed|.*\bfailed\b|.*[Ee]rror in|Aborted|Segmentation fault)")

_COUNT_KEYS = {
    "first": "first_us",
    "curr": "curr_us",
    "min": "min_us",
    "max": "max_us",
    "avg": "avg_us",
    "std": "std_us",
    "p5": "p5_us",
    "median": "median_us",
    "p95": "p95_us",
}


def strip_prefix(line: str) -> str:
    line = line.rstrip("\r\n")
    for rx in _STRIP_PREFIXES:
        m = rx.match(line)
        if m:
            line = line[m.end() :]
    return line.strip()


def _count_stat(m: re.Match) -> CountStat:
    values: dict[str, float] = {}
    for k, v in _KV.findall(m.group(2) or ""):
        if k in _COUNT_KEYS:
            values[_COUNT_KEYS[k]] = float(v)
    return CountStat(
        count=int(m.group(1)),
        all_same=m.group(3) is not None or ("curr_us" in values and len(values) == 1),
        **values,
    )


def parse(text: str) -> BenchmarkModelOutput:
    """Parses one invocation's combined stdout and stderr. Raises BenchmarkOutputError when no
    inference timing is found, quoting the error lines the tool printed."""
    counts: list[CountStat] = []
    found: dict[str, float] = {}
    runs: dict[str, int] = {}
    delegates: list[DelegateInfo] = []
    errors: list[str] = []
    fmt = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = strip_prefix(raw)
        if not line:
            continue
        m = _COUNT.search(line)
        if m and not line.startswith("Running"):
            counts.append(_count_stat(m))
            continue
        if m := _TIMINGS.search(line):
            fmt = "tflite"
            found.update(
                init=float(m["init"]), first=float(m["first"]), warm=float(m["warm"]), avg=float(m["inf"])
            )
            continue
        if m := _LEGACY.search(line):
            fmt = fmt or "tflite-legacy"
            found.update(init=float(m["init"]), warm=float(m["warm"]), avg=float(m["inf"]))
            continue
        if m := _SIZE.search(line):
            found["size"] = float(m.group(1))
        elif m := _INIT_SESSION.search(line):
            found.setdefault("init", float(m.group(1)) * 1000.0)
        elif m := _FOOTPRINT.search(line):
            found["init_fp"], found["overall_fp"] = float(m.group(1)), float(m.group(2))
        elif m := _PEAK.search(line):
            found["peak"] = float(m.group(1))
        elif m := _DELEGATE.search(line):
            delegates.append(
                DelegateInfo(
                    m.group(3), int(m.group(1)), int(m.group(2)), int(m.group(4)) if m.group(4) else None
                )
            )
        else:
            for key, rx in _LRT.items():
                if lm := rx.search(line):
                    fmt = "litert"
                    value = float(lm.group(1))
                    if key in ("init_fp", "overall_fp", "peak"):
                        found[key] = value
                    else:
                        found[key] = value * 1000.0  # ms -> us
                        if key in ("warm", "avg"):
                            runs[key] = int(lm.group(2))
                    break
            else:
                if _ERROR.match(line):
                    errors.append(line)
    inference = counts[-1] if counts else None
    warmup = counts[-2] if len(counts) >= 2 else None
    if fmt == "litert" and inference is None and "avg" in found:
        inference = CountStat(
            count=runs.get("avg", 0),
            min_us=found.get("min"),
            max_us=found.get("max"),
            avg_us=found["avg"],
            std_us=found.get("std"),
        )
    if inference is None and "avg" not in found:
        detail = "; ".join(errors[-3:]) or " ".join(text.split())[-300:] or "no output at all"
        raise BenchmarkOutputError(f"benchmark_model printed no inference timings: {detail}")
    if fmt is None:
        fmt = "tflite"
    return BenchmarkModelOutput(
        format=fmt,
        inference=inference,
        warmup=warmup,
        init_us=found.get("init"),
        first_us=found.get("first"),
        warmup_avg_us=found.get("warm"),
        inference_avg_us=found.get("avg", inference.avg_us if inference else None),
        model_size_mb=found.get("size"),
        footprint_init_mb=found.get("init_fp"),
        footprint_overall_mb=found.get("overall_fp"),
        peak_memory_mb=found.get("peak"),
        delegates=delegates,
        errors=errors,
    )

"""`edgeprune devices` and `edgeprune bench`: thin wrappers over edgeprune.bench. Progress is drawn
on stderr, one line per device step; results go to stdout and the run folder."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import click

from edgeprune import progress
from edgeprune.errors import DeviceError


class _LineTask(progress.Task):
    def __init__(self, reporter: "DeviceLineReporter", label: str, total: int | None):
        super().__init__(label, total)
        self.reporter = reporter
        self.start = time.monotonic()

    def advance(self, n: int = 1, status: str | None = None) -> None:
        super().advance(n, status)
        if status:
            count = f" {self.done}/{self.total}" if self.total else ""
            self.reporter.line(f"[{self.label}]{count} {status} ({time.monotonic() - self.start:.0f} s)")


class DeviceLineReporter(progress.Reporter):
    """One stderr line per device step, thread-safe: devices report from their own worker
    threads at the same time, which a single redrawn bar cannot show. Install it around
    bench_models() whenever several devices run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        with self.lock:
            click.echo(text, err=True)

    def task(self, label: str, total: int | None) -> progress.Task:
        return _LineTask(self, label, total)

    def log(self, message: str) -> None:
        self.line(message)


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (a CI job cancelled, `kill`) cleans up the devices the way Ctrl-C does."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _threads(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        threads = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers, e.g. 1,4") from None
    if not threads or any(t < 1 for t in threads):
        raise click.BadParameter(f"'{value}': thread counts must be 1 or more")
    return threads


def _binaries(values: tuple[str, ...]) -> dict[str, str]:
    table = {}
    for v in values:
        abi, sep, path = v.partition("=")
        if not sep:
            abi, path = "*", v
        if not Path(path).is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="--benchmark-model")
        table[abi] = path
    return table


_target_opt = click.option(
    "--target",
    "-t",
    "targets",
    multiple=True,
    metavar="TARGET",
    help="local, adb:SERIAL, ssh:[user@]host[:port] or an inventory name; repeatable.",
)
_inventory_opt = click.option(
    "--inventory", type=click.Path(dir_okay=False), help="TOML file with [[device]] tables."
)
_binary_opt = click.option(
    "--benchmark-model",
    "binaries",
    multiple=True,
    metavar="[ABI=]PATH",
    help="benchmark_model binary, per ABI (arm64-v8a, aarch64, x86_64...); repeatable.",
)


@click.command()
@_target_opt
@_inventory_opt
@_binary_opt
@click.option("--json", "as_json", is_flag=True, help="Print the DeviceInfo list as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def devices(targets, inventory, binaries, as_json, quiet):
    """Probe targets: reachable and authorized, identity, ABI, cores, OS, runners, temperature.

    Without --target: this host, every adb device `adb devices` lists, and every inventory device.
    Exits 0 when every probed device is available, 2 (after the table) when any is not."""
    import json

    from edgeprune.bench import load_inventory, probe_devices
    from edgeprune.bench.adb import list_devices

    inv = load_inventory(inventory) if inventory else None
    targets = list(targets)
    if not targets:
        targets = ["local"] + ([d.name for d in inv.devices] if inv else [])
        try:
            listed = list_devices()
        except DeviceError:
            listed = {}  # no adb here: only the host and the inventory
        known = {d.target for d in inv.devices} if inv else set()
        targets += [f"adb:{s}" for s in listed if f"adb:{s}" not in known]
    progress.set_reporter(progress.Reporter() if quiet else DeviceLineReporter())
    infos = probe_devices(targets, inv, _binaries(binaries))
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=1))
    else:
        _print_devices(infos)
    down = [i for i in infos if not (i.reachable and i.authorized)]
    if down:
        reasons = [
            i.error if (i.error or "").startswith(i.target) else f"{i.name}: {i.error or 'unavailable'}"
            for i in down
        ]
        raise DeviceError(f"{len(down)} of {len(infos)} device(s) unavailable: " + " ".join(reasons))
    return 0


def _print_devices(infos) -> None:
    for i in infos:
        label = i.target if i.name == i.target else f"{i.name} ({i.target})"
        if not (i.reachable and i.authorized):
            click.echo(f"{label:<34} UNAVAILABLE  {i.error}")
            continue
        freqs = sorted({c.max_freq_khz for c in i.cores if c.max_freq_khz})
        clusters = "+".join(f"{sum(c.max_freq_khz == f for c in i.cores)}x{f / 1e6:.2f}" for f in freqs)
        cores = f"{len(i.cores)} cores" + (f" ({clusters} GHz)" if freqs else "")
        temp = i.thermal.max_temp_c if i.thermal else None
        ident = " ".join(x for x in (i.manufacturer, i.model) if x) or "?"
        click.echo(
            f"{label:<34} ok  {ident} | SoC {i.soc or '?'} | {i.abi or '?'} | {cores} | "
            f"{i.os or '?'} | runners: {', '.join(i.runners) or 'none'}"
            f"{' (' + ', '.join(i.runtimes) + ')' if i.runtimes else ''} | "
            f"temp {'?' if temp is None else f'{temp:.1f} C'}"
        )


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@_target_opt
@click.option(
    "--threads", callback=_threads, metavar="N[,N...]", help="Thread counts, e.g. 1,4 [inventory, else 1]."
)
@click.option(
    "--runs", default=50, show_default=True, type=click.IntRange(min=1), help="At least this many timed runs."
)
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0), help="Warm-up runs.")
@click.option(
    "--min-secs", default=1.0, show_default=True, type=click.FloatRange(min=0), help="And at least this long."
)
@click.option(
    "--max-secs",
    default=150.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Stop timing after this long.",
)
@click.option(
    "--cooldown",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds of rest between runs on a device.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    help="Rounds over all models and thread counts, in turn [3 for benchmark_model, whose spread comes "
    "from them; 1 for python].",
)
@click.option("--runner", type=click.Choice(["python", "benchmark_model"]), help="[inventory, else python]")
@click.option(
    "--paired",
    is_flag=True,
    help="Measure the models side by side and report each one's speed-up against the first, with a 95% "
    "interval: the Python runner interleaves them in one process, benchmark_model alternates whole runs.",
)
@click.option(
    "--block-runs",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --paired: invokes of each model per block (the Python runner).",
)
@click.option(
    "--affinity",
    metavar="big|little|prime|all|MASK",
    help="CPU affinity [inventory, else big on Android, all].",
)
@click.option(
    "--cool-to",
    type=click.FloatRange(min=1, max=149),
    metavar="C",
    help="Before each run, wait (up to 300 s) until the hottest thermal zone is at most C degrees.",
)
@click.option("--no-xnnpack", is_flag=True, help="Run without the XNNPACK delegate.")
@click.option(
    "--peak-memory",
    is_flag=True,
    help="benchmark_model: also sample peak memory (a monitoring thread that can skew latency).",
)
@click.option(
    "--max-cv",
    default=0.10,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Flag results whose coefficient of variation is above this.",
)
@_inventory_opt
@_binary_opt
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Run folder [runs/bench-DATE-TIME].")
@click.option("--force", is_flag=True, help="Replace an existing folder of bench results.")
@click.option("--quiet", "-q", is_flag=True, help="No per-device progress on stderr.")
def bench(
    models,
    targets,
    threads,
    runs,
    warmup,
    min_secs,
    max_secs,
    cooldown,
    repeats,
    runner,
    paired,
    block_runs,
    affinity,
    cool_to,
    no_xnnpack,
    peak_memory,
    max_cv,
    inventory,
    binaries,
    out,
    force,
    quiet,
):
    """Measure size and latency of .tflite MODELS on one or more devices.

    \b
    edgeprune bench a.tflite b.tflite --target local --target adb:R58M123 --threads 1,4
    edgeprune bench a.tflite --inventory devices.toml --runs 100 --min-secs 5 --cooldown 10
    edgeprune bench base.tflite pruned.tflite int8.tflite --paired --target adb:R58M123
    """
    from edgeprune.bench import BenchSettings, bench_models, load_inventory
    from edgeprune.report.bench_folder import check_out_dir, render_md, write_run

    if affinity is not None:
        import re

        if not re.fullmatch(r"big|little|prime|all|(0x)?[0-9a-fA-F]+", affinity):
            raise click.BadParameter(
                f"'{affinity}' is not big, little, prime, all or a hex mask", param_hint="--affinity"
            )
    if paired and len(models) < 2:
        raise click.BadParameter(
            "--paired compares models with the first one: give two or more", param_hint="MODELS"
        )
    settings = BenchSettings(
        paired=paired,
        block_runs=block_runs,
        threads=threads,
        runs=runs,
        warmup=warmup,
        min_secs=min_secs,
        max_secs=max_secs,
        cooldown_s=cooldown,
        repeats=repeats,
        use_xnnpack=not no_xnnpack,
        max_cv=max_cv,
        runner=runner,
        affinity=affinity,
        peak_memory=peak_memory,
        cool_to_c=cool_to,
    )
    out_dir = Path(out) if out else Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    check_out_dir(out_dir, force, [Path(m) for m in models])  # fail before any device is touched
    inv = load_inventory(inventory) if inventory else None
    progress.set_reporter(progress.Reporter() if quiet else DeviceLineReporter())
    _terminate_like_ctrl_c()
    run = bench_models(list(models), list(targets), settings, inv, _binaries(binaries))
    if not run.results:  # every device failed: a folder of empty tables would only mislead
        raise DeviceError("nothing was measured, so nothing was written: " + " ".join(_reasons(run.failures)))
    paths = write_run(run, out_dir, force)
    click.echo(render_md(run))
    for line in paired_lines(run):
        click.echo(line)
    click.echo(f"wrote {paths['bench.json']}, {paths['bench.md'].name}, {paths['bench.csv'].name}")
    if run.failures:
        raise DeviceError(
            f"{len(run.failures)} failure(s); first: {_reasons(run.failures[:1])[0].rstrip('.')}",
            f"the other results are in {out_dir}",
        )
    return 0


def paired_lines(run) -> list[str]:
    """One line per paired ratio: the model's speed-up against the reference (1 / ratio) with its
    95 % interval, where and how it was measured."""
    if not run.ratios:
        return []
    lines = ["", "Paired speed-ups (reference time / model time, 95 % interval from resampled blocks):"]
    for q in run.ratios:
        lo, hi = q.speedup_interval
        than = f"{q.ratio:.2f}x slower" if q.ratio >= 1 else f"{q.speedup:.2f}x faster"
        lines.append(
            f"  {q.model} vs {q.reference} on {q.device} x{q.threads}: speed-up {q.speedup:.3f}x "
            f"[{lo:.3f}-{hi:.3f}] ({than}), {q.method}, {q.blocks} block(s)"
            + (
                f"; UNSTABLE: {1 / q.halves[0]:.3f}x in the first half of the blocks, {1 / q.halves[1]:.3f}x "
                "in the second"
                if "unstable_ratio" in q.flags
                else ""
            )
        )
    return lines


def _reasons(failures) -> list[str]:
    """Each distinct failure as one sentence: `[MODEL xN on ]DEVICE: what failed; the fix.`"""
    out = []
    for f in failures:
        reason = f.reason if f.reason.startswith(f.target) else f"{f.device}: {f.reason}"
        reason = (f"{f.model} x{f.threads} on " if f.model else "") + reason
        out.append(reason if reason.endswith((".", "?", "!")) else reason + ".")
    return list(dict.fromkeys(out))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(bench())

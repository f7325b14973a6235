"""The `edgeprune` command line. Thin: parse, call the library, render. Subcommands load lazily so
that `edgeprune --help` (and `bench` of a ready .tflite on a device) never imports TensorFlow.
Errors become exit codes here, and only here: 0 ok, 1 internal failure, 2 bad input or usage,
3 a regression found by `compare`.

The command line (`main()` without arguments: the console script and `python -m edgeprune`) runs
the command in a child process, so that a crash in native code (TensorFlow, oneDNN, LiteRT) ends
with one `error:` line saying what crashed and what to try, instead of a bare "Segmentation
fault". `main(args)` runs in this process."""

from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import click

from edgeprune.errors import EdgepruneError

# name -> (module, attribute), imported when the command runs.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edgeprune.cli.pipeline", "run"),
    "prune": ("edgeprune.cli.pipeline", "prune"),
    "quantize": ("edgeprune.cli.pipeline", "quantize"),
    "export": ("edgeprune.cli.pipeline", "export"),
    "eval": ("edgeprune.cli.pipeline", "eval_"),
    "inspect": ("edgeprune.cli.inspect_cmd", "inspect"),
    "devices": ("edgeprune.cli.bench", "devices"),
    "bench": ("edgeprune.cli.bench", "bench"),
    "report": ("edgeprune.cli.report", "report"),
    "compare": ("edgeprune.cli.report", "compare"),
    "profile": ("edgeprune.cli.profile", "profile"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(LAZY_COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[name]
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="edgeprune")
def cli() -> None:
    """Prune, quantize and export Keras models to TFLite, and measure what each step buys.

    \b
    Start with:  edgeprune run models/mobilenet_v2_fashion.toml
    Then:        edgeprune bench runs/NAME/tflite/*.tflite --target local --target adb:SERIAL
    """


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# Set in the guarded child: the file where faulthandler writes the Python stack of a native crash.
FAULT_LOG_ENV = "_EDGEPRUNE_FAULT_LOG"
_FATAL_SIGNALS = {signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "abort, e.g. glibc's \"double free or "
                  "corruption\"", signal.SIGBUS: "bus error", signal.SIGILL: "illegal instruction",
                  signal.SIGFPE: "arithmetic fault"}
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def enable_fault_log() -> None:
    """In a child started by `run_guarded`: write the Python stack of a native crash to the file
    the parent reads, and end with the parent (a parent killed on a timeout leaves no orphan)."""
    path = os.environ.pop(FAULT_LOG_ENV, None)
    if not path:
        return
    faulthandler.enable(open(path, "w"), all_threads=True)  # noqa: SIM115 (open until the process ends)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _installed_package(parts: tuple[str, ...]) -> str | None:
    return parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else None


def _crash_site(log: str) -> str:
    """' in tensorflow, called from edgeprune/train.py:170 (fit)' from a faulthandler dump: the
    installed package of the crashing thread's innermost frame, and the innermost edgeprune frame.
    A crash in a thread without Python frames (a TensorFlow worker) is told by the next thread."""
    frames = []
    for line in log.splitlines():
        line = line.strip()
        if line.startswith(("Current thread", "Thread")) and frames:
            break
        if line.startswith('File "'):
            path, _, rest = line[6:].partition('", line ')
            number, _, func = rest.partition(" in ")
            frames.append((Path(path).parts, number, func))
    site = []
    if frames and _installed_package(frames[0][0]) not in (None, "edgeprune"):
        site.append(f"in {_installed_package(frames[0][0])}")
    ours = next((f for f in frames if "edgeprune" in f[0][:-1] and _installed_package(f[0]) in (None, "edgeprune")),
                None)
    if ours is not None:
        parts = ours[0]
        rel = "/".join(parts[len(parts) - 1 - parts[::-1].index("edgeprune"):])
        site.append(f"{'called from' if site else 'in'} {rel}:{ours[1]} ({ours[2]})")
    return (" " + ", ".join(site)) if site else ""


def _crash_message(returncode: int, log: str) -> str:
    sig = -returncode
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    if sig == signal.SIGKILL:
        return (f"the command was killed ({name}), most often by the kernel's out-of-memory killer; use a smaller "
                "--batch-size or --train-limit, or free memory")
    what = _FATAL_SIGNALS.get(sig, "a fatal signal")
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0").strip().lower() not in ("0", "false")
    hint = ("TensorFlow's oneDNN kernels were on: rerun with TF_ENABLE_ONEDNN_OPTS=0 (edgeprune's default), which "
            "avoids the known oneDNN crashes" if onednn else
            "oneDNN was off (TF_ENABLE_ONEDNN_OPTS=0); rerun with EDGEPRUNE_DEBUG=1 to see the Python stack of the "
            "crash, and report it with the model")
    return (f"native code crashed ({name}, {what}){_crash_site(log)}: a bug in TensorFlow or LiteRT, not in your "
            f"input; {hint}")


def run_guarded(command: list[str]) -> int:
    """Runs `command` (a Python process that calls `enable_fault_log`) as a child, its stdin,
    stdout and stderr those of this process, and returns its exit code; a child killed by a
    signal is reported as one `error:` line on stderr and returns 1. The child runs in its own
    process group, so Ctrl-C at the terminal (or SIGINT, SIGTERM, SIGHUP sent to this process)
    reaches it exactly once, passed on from here; its own exit code tells what happened."""
    with tempfile.NamedTemporaryFile("r", prefix="edgeprune-fault-", suffix=".log") as log:
        env = {**os.environ, FAULT_LOG_ENV: log.name}
        received: list[int] = []
        children: list[subprocess.Popen] = []

        def forward(signum, frame):
            received.append(signum)
            for child in children:
                child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in _FORWARDED}
        try:
            # its own process group: a Ctrl-C at the terminal reaches this process alone, which passes
            # it on once, so the child sees exactly one SIGINT whoever sent it (a terminal or `kill`)
            proc = subprocess.Popen(command, env=env, process_group=0)
        except BaseException:
            for s, handler in previous.items():
                signal.signal(s, handler)
            raise
        children.append(proc)
        if received:  # a signal that came while the child was being started
            proc.send_signal(received[-1])
        try:
            returncode = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        dump = log.read()
    if returncode >= 0:
        return returncode
    if -returncode in received or -returncode == signal.SIGINT:
        click.echo(f"error: {'interrupted' if -returncode == signal.SIGINT else 'terminated'} "
                   f"({signal.Signals(-returncode).name})", err=True)
        return 128 - returncode
    if os.environ.get("EDGEPRUNE_DEBUG") and dump:
        click.echo(dump.rstrip(), err=True)
    click.echo(f"error: {_crash_message(returncode, dump)}.", err=True)
    return 1


def _guarded_command(argv: list[str]) -> list[str]:
    """This interpreter running this copy of edgeprune's CLI on `argv` (sys.path[0], the current
    folder under `-c`, is replaced by the folder holding this package)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path[0] = {package_parent!r}; from edgeprune.cli import main; main()"
    return [sys.executable, "-c", code, *argv]


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        if FAULT_LOG_ENV not in os.environ:
            sys.exit(run_guarded(_guarded_command(sys.argv[1:])))
        enable_fault_log()
    try:
        rv = cli.main(args=argv, prog_name="edgeprune", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help())
        sys.exit(2)
    except click.UsageError as e:
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _fail(" ".join(e.format_message().split()) + where, e.exit_code)
    except click.ClickException as e:
        _fail(" ".join(e.format_message().split()), e.exit_code)
    except EdgepruneError as e:
        if os.environ.get("EDGEPRUNE_DEBUG"):
            raise
        _fail(e.one_line(), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:  # an internal failure: say what, keep the traceback for those who ask
        if os.environ.get("EDGEPRUNE_DEBUG"):
            raise
        _fail(f"internal failure: {type(e).__name__}: {e} (rerun with EDGEPRUNE_DEBUG=1 for the traceback)", 1)
    sys.exit(rv if isinstance(rv, int) else 0)

"""The `edgeprune` command line. Thin: parse, call the library, render. Subcommands load lazily so
that `edgeprune --help` (and `bench` of a ready .tflite on a device) never imports TensorFlow.
Errors become exit codes here, and only here: 0 ok, 1 internal failure, 2 bad input or usage,
3 a regression found by `compare`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import NoReturn

import click

from edgeprune.errors import EdgepruneError

# name -> (module, attribute). A module that does not exist yet is left out of the listing.
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
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [n for n, (mod, _) in LAZY_COMMANDS.items() if importlib.util.find_spec(mod) is not None]
        return sorted(set(names) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[name]
            if importlib.util.find_spec(module_name) is None:
                return None
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


def main(argv: list[str] | None = None) -> None:
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

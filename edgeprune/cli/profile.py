"""`edgeprune profile MODEL --target T`: a per-device latency table of MODEL's layers at the widths
channel pruning can give them, measured through the harness, cached per device, printed as a
table; the whole table as JSON with --out."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgeprune.cli._progress import install as install_progress


def _floats(ctx, param, value):
    try:
        out = sorted({float(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of fractions, e.g. 0.25,0.5,1") \
            from None
    if not out or any(not 0 < v <= 1 for v in out):
        raise click.BadParameter(f"{value!r}: fractions of the channels kept are in (0, 1], e.g. 0.5,1")
    return tuple(out)


def _shape(ctx, param, value):
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        out = ()
    if len(out) != 3 or any(v < 1 for v in out):
        raise click.BadParameter(f"{value!r} is not H,W,C, e.g. 224,224,3")
    return out


def _ratio(ctx, param, value):
    if value is not None and not 0 <= value < 1:
        raise click.BadParameter(f"{value} is not a fraction in [0, 1); 0 turns it off")
    return value or None


_DEFAULTS = re.compile(r" (d1(x1)*|g1|m1|nobias|linear)(?= |$)")


def short_signature(signature: str) -> str:
    """A unit's signature without the fields at their usual values (dilation 1, one group, depth
    multiplier 1, no bias, linear activation)."""
    return _DEFAULTS.sub("", signature)


def _ms(x: float) -> str:
    return f"{x:.3f}" if x >= 0.01 else f"{x:.4f}"


def _text_table(header: list[str], rows: list[list[str]], left: tuple[int, ...]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def render(table, target: str) -> str:
    """The table for the terminal: every unit's latency with every group at each profiled fraction
    of its channels, then the fixed cost, the calibration and the checks."""
    fractions = list(table.settings.get("fractions") or [1.0])
    per = [table.uniform_widths(f) for f in fractions]
    rows = []
    for u in table.units:
        spatial = "x".join(map(str, u.spatial))
        cin, cout = u.inp.size, (u.out.size if u.out is not None else u.inp.size)
        shape = f"{spatial + 'x' if spatial else ''}{cin}->{cout}"
        rows.append([u.layer, short_signature(u.signature), shape, *[_ms(u.at_widths(w)) for w in per]])
    head = ["layer", "unit", "input->out"] + [f"{f:.0%}" for f in fractions]
    ctx = table.context or {}
    dev = ctx.get("device", {})
    detail = ctx.get("runner_detail", {})
    runtime = " ".join(str(x) for x in (detail.get("runtime"), detail.get("runtime_version")) if x) or \
        (f"benchmark_model {detail.get('binary_sha256', '')[:12]}" if detail.get("binary_sha256") else "?")
    ident = " ".join(str(x) for x in (dev.get("manufacturer"), dev.get("model"), dev.get("soc")) if x) or "?"
    lines = [f"latency table of {table.model} {tuple(table.input_shape)} on {target}: {ident}, {runtime}, "
             f"{table.mode}, {table.threads} thread(s)",
             "ms per unit with every group at each fraction of its channels (rounded as pruning rounds):",
             "", _text_table(head, rows, left=(0, 1, 2)), ""]
    lines.append(f"units at full width {_ms(table.layers_ms)} ms; full model {_ms(table.full_ms)} ms; "
                 f"prediction = {table.scale:.3f} x units + fixed cost {_ms(table.fixed_ms)} ms")
    if table.calibration:
        c = table.calibration
        lines.append(f"calibrated on {c['name']}: measured {_ms(c['measured_ms'])} ms, "
                     f"units {_ms(c['units_ms'])} ms")
    if table.untabled_ops:
        lines.append("in the fixed cost: " + ", ".join(f"{k} x{v}" for k, v in table.untabled_ops.items()))
    for c in table.checks:
        err = "" if c["error"] is None else f" (error {c['error']:+.1%})"
        lines.append(f"{c['name']}: predicted {_ms(c['predicted_ms'])} ms, "
                     f"measured {_ms(c['measured_ms'])} ms{err}")
    where = f" ({table.cache_file})" if table.cache_file else " (not cached)"
    lines.append(f"unit shapes: {table.measured_shapes} measured now, {table.cached_shapes} from the "
                 f"cache{where}")
    return "\n".join(lines)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="local", show_default=True, metavar="TARGET",
              help="local, adb:SERIAL, ssh:[user@]host[:port] or an inventory name.")
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), help="Device inventory (TOML).")
@click.option("--benchmark-model", "binaries", multiple=True, metavar="[ABI=]PATH",
              help="benchmark_model binary, per ABI; repeatable.")
@click.option("--runner", type=click.Choice(["python", "benchmark_model"]), help="[inventory, else python]")
@click.option("--affinity", metavar="big|little|prime|all|MASK",
              help="CPU affinity [inventory, else big/all].")
@click.option("--mode", type=click.Choice(["float32", "int8"]), default="float32", show_default=True,
              help="Export mode of every measured model (int8: random calibration data).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--input-shape", callback=_shape, metavar="H,W,C",
              help="Profile the same network at another input size [the model's own].")
@click.option("--fractions", default="0.25,0.5,0.75,1", show_default=True, callback=_floats,
              help="Fractions of each group's channels to profile (the smallest allowed count is added).")
@click.option("--round-to", type=click.IntRange(min=1), default=8, show_default=True,
              help="Channel counts are multiples of this, as in `prune --round-to`.")
@click.option("--max-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9,
              show_default=True, help="No group loses more than this fraction, as in channel pruning.")
@click.option("--protect", multiple=True,
              help="Regex of layers whose channels are kept, as in `prune --protect`.")
@click.option("--runs", type=click.IntRange(min=1), default=300, show_default=True,
              help="Timed invokes of every model (all measured side by side, in blocks).")
@click.option("--block-runs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Invokes of each model per block.")
@click.option("--calibrate-ratio", type=float, default=0.5, show_default=True, callback=_ratio,
              help="Calibrate on the model uniformly pruned by this ratio (0: fixed cost only).")
@click.option("--check-ratio", type=float, default=0.5, show_default=True, callback=_ratio,
              help="Check the table on the model pruned by global L2 ranking at this ratio (0: no check).")
@click.option("--no-cache", is_flag=True,
              help="Measure every unit shape, ignoring (and not filling) the cache.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the table as JSON.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def profile(model, target, inventory, binaries, runner, affinity, mode, threads, input_shape, fractions,
            round_to, max_ratio, protect, runs, block_runs, calibrate_ratio, check_ratio, no_cache, out,
            force, quiet):
    """Measure a latency table of MODEL's layers on a device, for latency-aware pruning.

    Every conv, depthwise and dense layer (with the padding, batch norm and activation the
    converter folds into it) is exported alone at the channel counts pruning can give it and timed
    on TARGET through the harness, all side by side; the full model gives the fixed cost. Unit
    latencies are cached per device, runtime version, threads and mode in
    $EDGEPRUNE_CACHE_DIR/latency-tables (default ~/.cache/edgeprune/latency-tables).

    \b
    edgeprune profile model.keras --target local --threads 2 -o table.json
    edgeprune profile model.keras --target adb:R58M123 --mode int8 --input-shape 224,224,3
    """
    install_progress(quiet)
    from edgeprune.bench import load_inventory
    from edgeprune.bench.inventory import resolve_targets
    from edgeprune.models import detect_format
    from edgeprune.runfolder import check_output_file

    if out is not None:
        check_output_file(out, [model], force)
        if out.suffix.lower() != ".json":
            from edgeprune.errors import OutputError

            raise OutputError(f"--out {out} must end in .json: it is the table as JSON",
                              f"name it {out.with_suffix('.json')}")
    detect_format(model)  # a missing file or one that is no model, before TensorFlow loads
    if affinity is not None and not re.fullmatch(r"big|little|prime|all|(0x)?[0-9a-fA-F]+", affinity):
        raise click.BadParameter(f"'{affinity}' is not big, little, prime, all or a hex mask",
                                 param_hint="--affinity")
    inv = load_inventory(inventory) if inventory else None
    (spec,) = resolve_targets([target], inv)  # an unknown target fails here, before any work
    binary_table = {}
    for v in binaries:
        abi, sep, path = v.partition("=")
        abi, path = (abi, path) if sep else ("*", v)
        if not Path(path).is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="--benchmark-model")
        binary_table[abi] = path

    from edgeprune.latency_profile import HarnessProbe, build_table
    from edgeprune.models import load_model

    keras_model = load_model(model)[0]
    if input_shape is not None:
        from edgeprune.channels.blocks import with_input_shape

        keras_model = with_input_shape(keras_model, input_shape)
    probe = HarnessProbe(spec, mode, threads, runs=runs, block_runs=block_runs, runner=runner,
                         affinity=affinity, inventory=inv, benchmark_model=binary_table or None)
    table = build_table(keras_model, probe, fractions=fractions, round_to=round_to, max_ratio=max_ratio,
                        protect=tuple(protect), use_cache=not no_cache, calibrate_ratio=calibrate_ratio,
                        check_ratio=check_ratio)
    click.echo(render(table, spec.name))
    if out is not None:
        from edgeprune.runfolder import write_json_atomic

        write_json_atomic(out, table.to_dict())
        click.echo(f"wrote {out}")
    return 0

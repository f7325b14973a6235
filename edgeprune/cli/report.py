"""`edgeprune report` and `edgeprune compare`: thin wrappers over edgeprune.report."""

from __future__ import annotations

from pathlib import Path

import click

FORMATS = ("html", "md", "csv", "json")
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "-f", "fmt", type=click.Choice(FORMATS), help="Output format [from the -o suffix, else md]."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (and print a summary) instead of stdout.",
)
@click.option("--variant", help="Variant whose layers the HTML shows [the most pruned].")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def report(runs, fmt, out, variant, force):
    """Render one or several run folders (pipeline and bench runs, merged) as a self-contained
    HTML page, markdown, CSV (one row per measurement) or JSON.

    \b
    edgeprune report runs/demo -o demo.html
    edgeprune report runs/demo runs/bench-pixel runs/bench-pi -o all.html
    edgeprune report runs/bench-pixel --format csv > pixel.csv
    """
    from edgeprune.errors import OutputError
    from edgeprune import results
    from edgeprune.report import tables
    from edgeprune.runfolder import check_output_file, write_text_atomic

    if out is not None:  # the file's suffix names its format: no HTML in a .pdf
        suffix = out.suffix.lower()
        named = SUFFIXES.get(suffix)
        if fmt is None and named is None:
            has = f"the suffix {suffix}" if suffix else "no suffix"
            raise OutputError(
                f"-o {out} has {has}, which names no report format", "name the file .html, .md, .csv or .json"
            )
        if fmt is not None and named != fmt:
            fix = f"name the file {out.with_suffix('.' + fmt)}"
            raise OutputError(f"-o {out} does not match --format {fmt}",
                              fix + (f", or pass --format {named}" if named else ""))
        fmt = named
    fmt = fmt or "md"
    inputs = [f for r in runs for f in results.result_files(r)]
    if out is not None:
        check_output_file(out, inputs, force)
    model = results.load(list(runs))
    if fmt == "html":
        from edgeprune.report import html

        text = html.render(model, variant)
    elif fmt == "md":
        from edgeprune.report.markdown import render_markdown

        text = render_markdown(model)
    elif fmt == "csv":
        text = tables.render_csv(model)
    else:
        text = tables.render_json(model)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return 0
    write_text_atomic(out, text)
    click.echo(tables.terminal_summary(model))
    click.echo(f"\nwrote {out} ({fmt}, {len(model.sources)} source(s))")
    return 0


@click.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    default=0.10,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Flag B as a regression when significantly slower by more than this fraction.",
)
@click.option(
    "--alpha",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Significance level of the Mann-Whitney U test.",
)
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["text", "md"]),
    default="text",
    show_default=True,
    help="text for a terminal (80 columns), md for a pull request comment.",
)
def compare(a, b, threshold, alpha, fmt):
    """Compare run B with run A: per model x device x threads, the ratio of medians, whether the
    difference is significant, and regressions above --threshold (exit code 3).

    \b
    edgeprune compare runs/bench-monday runs/bench-today --threshold 0.05
    """
    from edgeprune.errors import RegressionFound
    from edgeprune import results
    from edgeprune.report.compare import compare as compare_reports
    from edgeprune.report.compare import ratio_text, render_markdown, render_text

    la, lb = results.source_labels([a, b])
    ra, rb = results.load([a], [la]), results.load([b], [lb])
    res = compare_reports(ra, rb, threshold, alpha, la, lb)
    click.echo((render_text if fmt == "text" else render_markdown)(res, ra, rb), nl=fmt == "text")
    if res.regressions:
        c = res.regressions[0]
        raise RegressionFound(
            f"{len(res.regressions)} regression(s) above {threshold:.0%}; first: {c.variant} on {c.device} "
            f"x{c.threads} {ratio_text(c.ratio)}"
        )
    return 0

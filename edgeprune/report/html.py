"""The HTML report: one self-contained page that opens offline. Inline CSS, plots as inline SVG
(edgeprune.report.plots), no script, no font, no image or link that leaves the file.

    render_run(report_dict)    a pipeline run (what pipeline.run() writes as report.html)
    render_bench(bench_run)    a bench run (BenchRun or its dict)
    render(report, variant)    any merged Report (edgeprune.results.load)"""

from __future__ import annotations

import html

from edgeprune.report import plots
from edgeprune.results.model import Report, Variant
from edgeprune.results.readers import from_bench_run, from_run_dict, to_toml
from edgeprune.report.plots import fmt_ms

CSS = """
:root { --fg:#1d2330; --muted:#5b6577; --line:#dde2ea; --bg:#fff; --soft:#f5f7fa; --bad:#b42318;
        --warn:#a15c00; --good:#067647; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; }
.sub, .legend, .note { color: var(--muted); }
.legend { font-size: 12.5px; margin: 6px 0 0; }
nav { margin: 10px 0 0; font-size: 13px; }
nav a { color: #1f5fbf; margin-right: 14px; text-decoration: none; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td small { color: var(--muted); display: block; font-size: 11px; }
tr.failed td { color: var(--bad); }
.scroll { overflow-x: auto; }
figure.plot { margin: 8px 0 4px; }
figure.plot svg { max-width: 100%; height: auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: var(--soft); }
.card dl { display: grid; grid-template-columns: 140px 1fr; gap: 2px 10px; margin: 0; font-size: 13px; }
.card dt { color: var(--muted); }
.card dd { margin: 0; }
.flag { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 11.5px; margin: 1px 2px 1px 0;
        background: #fff4e5; color: var(--warn); border: 1px solid #f3d19e; }
.flag.bad { background: #fdecea; color: var(--bad); border-color: #f5c2bd; }
.ok { color: var(--good); }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      font-size: 12px; overflow-x: auto; }
details summary { cursor: pointer; color: #1f5fbf; margin: 6px 0; }
ul.plain { padding-left: 18px; margin: 4px 0; }
"""

_e = html.escape


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _kb(n) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def _flags(flags, bad=("throttled",)) -> str:
    return "".join(f'<span class="flag{" bad" if f in bad else ""}">{_e(f)}</span>' for f in flags)


def _figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f'<p class="note">{_e(missing)}</p>'
    return f'<figure class="plot">{svg}<figcaption class="legend">{_e(caption)}</figcaption></figure>'


def _variants_table(r: Report) -> str:
    cols = r.columns()
    multi_dev = len({d for d, _ in cols}) > 1
    head = ["variant", "prune / quantize", "KB", "gzip KB", "x base", "zeros", "accuracy", "agreement"]
    ths = "".join(f"<th{' class=num' if i >= 2 else ''}>{_e(h)}</th>" for i, h in enumerate(head))
    for d, t in cols:
        where = _e(d) + " " if multi_dev or d != "local" else ""
        ths += f'<th class="num">{where}{t} thr<br><small>ms</small></th>'
    rows = []
    base = r.baseline()
    for v in r.variants:
        how = " / ".join(x for x in (v.prune, v.quantize) if x) or "-"
        ratio = r.ratio(v)
        cells = [
            f"<td><b>{_e(v.name)}</b>{'<small>baseline</small>' if v is base else ''}</td>",
            f"<td>{_e(how)}</td>",
            f'<td class="num">{_kb(v.bytes)}</td>',
            f'<td class="num">{_kb(v.gzip_bytes)}</td>',
            f'<td class="num">{"-" if ratio is None else f"{ratio:.2f}"}</td>',
            f'<td class="num">{_pct(v.zeros)}</td>',
            f'<td class="num">{_pct(v.accuracy)}</td>',
            f'<td class="num">{_pct(v.agreement)}</td>',
        ]
        if v.status != "ok":
            cells.append(f'<td colspan="{len(cols) or 1}">FAILED: {_e("; ".join(v.failures))}</td>')
            rows.append(f'<tr class="failed">{"".join(cells)}</tr>')
            continue
        for d, t in cols:
            m = r.measurement(v.name, d, t)
            if m is None:
                cells.append('<td class="num">-</td>')
                continue
            sp = r.speedup(v, d, t)
            speed = "" if sp is None else f" ({sp[0]:.2f}x)"
            interval = "" if sp is None or sp[1] is None else f"<small>paired {sp[1]:.2f}-{sp[2]:.2f}x</small>"
            spread = f"{fmt_ms(m.p5_ms)}-{fmt_ms(m.p95_ms if m.p95_ms is not None else m.p90_ms)}"
            cells.append(
                f'<td class="num">{fmt_ms(m.median_ms)}{_e(speed)}{interval}<small>{spread}</small>'
                f"{_flags(m.flags)}</td>"
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="variants"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _layers_section(r: Report, v: Variant | None) -> str:
    if v is None:
        return (
            '<p class="note">No per-layer data: bench runs record files, and these files are not on '
            "this machine; give the pipeline run folder too to see sparsity or channels per layer.</p>"
        )
    svg = plots.layer_plot(v)
    out = [_figure(svg, "Chosen with --variant; by default the most pruned variant.", "no per-layer data")]
    if v.channel_layers:
        body = "".join(
            f"<tr><td>{_e(str(c['layer']))}</td><td>{_e(str(c['type']))}</td>"
            f'<td class="num">{c["before"]}</td><td class="num">{c["after"]}</td>'
            f'<td class="num">{_pct(c["after"] / c["before"] if c["before"] else None)}</td></tr>'
            for c in v.channel_layers
        )
        out.append(
            "<details><summary>Channels per layer (table)</summary><table><tr><th>layer</th><th>type</th>"
            f'<th class="num">before</th><th class="num">after</th><th class="num">kept</th></tr>{body}'
            "</table></details>"
        )
    if v.sparsity_layers and v.sparsity_method not in (None, "none"):
        body = "".join(
            f"<tr><td>{_e(s['name'])}</td><td>{_e(s['kind'])}</td><td class='num'>{s['weights']:,}</td>"
            f"<td class='num'>{_pct(s['sparsity'])}</td><td>{_e(s.get('reason') or '')}</td></tr>"
            for s in v.sparsity_layers
        )
        out.append(
            "<details><summary>Sparsity per layer (table)</summary><table><tr><th>layer</th><th>kind</th>"
            f'<th class="num">weights</th><th class="num">zeros</th><th>note</th></tr>{body}</table>'
            "</details>"
        )
    return "".join(out)


def _device_cards(r: Report) -> str:
    cards = []
    for d in r.devices:
        if d.temp_before_c is None and d.temp_after_c is None:
            temp = "not recorded"
        else:
            before = "?" if d.temp_before_c is None else f"{d.temp_before_c:.1f} C"
            after = "?" if d.temp_after_c is None else f"{d.temp_after_c:.1f} C"
            temp = f"{before} -> {after} (hottest zone)"
        n = sum(1 for m in r.measurements if m.device == d.name)
        flags = "".join(
            _flags([f]) + f"<small style='display:inline'>x{c}</small> " for f, c in d.flags.items()
        )
        rows = [
            ("target", d.target),
            ("model", " ".join(x for x in (d.manufacturer, d.model) if x) or "-"),
            ("SoC", d.soc or "-"),
            ("ABI", d.abi or "-"),
            ("cores", f"{d.cores or '-'}{' (' + d.clusters + ')' if d.clusters else ''}"),
            ("OS", d.os or "-"),
            ("runner", "; ".join(d.runners) or "-"),
            ("thermal before/after", temp),
            ("measurements", str(n)),
            ("source", d.source),
        ]
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(str(v))}</dd>" for k, v in rows)
        dl += f"<dt>flags</dt><dd>{flags or '<span class=ok>none</span>'}</dd>"
        notes = "".join(f"<li>{_e(x)}</li>" for x in d.notes)
        err = f'<p class="flag bad">{_e(d.error)}</p>' if d.error else ""
        cards.append(
            f'<div class="card device"><h3>{_e(d.name)}</h3>{err}<dl>{dl}</dl>'
            f"{f'<ul class=plain>{notes}</ul>' if notes else ''}</div>"
        )
    if not cards:
        return '<p class="note">No device measured anything.</p>'
    return (
        f'<div class="cards">{"".join(cards)}</div>'
        '<p class="legend">Flags: high_cv = coefficient of variation above the run\'s limit; '
        "throttled = the device reported thermal throttling before or after the "
        "measurement; oversubscribed = more threads than CPUs in the affinity mask; unstable_median = the "
        "medians of the measurement's rounds disagree. Numbers from different "
        "devices are never one population.</p>"
    )


def _provenance(r: Report) -> str:
    out = []
    for s in r.sources:
        out.append(f"<h3>{_e(s.label)}: {_e(s.title)}</h3>")
        out.append(
            f'<p class="sub">{_e(s.path or "(in memory)")} - schema {_e(s.schema)} version {s.version}, '
            f"created {_e(s.created)}</p>"
        )
        ver = {k: v for k, v in s.versions.items() if v}
        host = {k: v for k, v in s.host.items() if v}
        if ver or host:
            out.append(
                "<table>"
                + "".join(
                    f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>"
                    for k, v in {**ver, **{f"host {k}": v for k, v in host.items()}}.items()
                )
                + "</table>"
            )
        if s.recipe_text:
            out.append(f"<details open><summary>Recipe</summary><pre>{_e(s.recipe_text)}</pre></details>")
        if s.settings:
            out.append(
                "<details open><summary>Bench settings</summary>"
                f"<pre>{_e(to_toml(s.settings))}</pre></details>"
            )
    return "".join(out)


def render(report: Report, variant: str | None = None) -> str:
    """The whole page. `variant` names the variant whose layers are shown (default: the most pruned)."""
    from edgeprune.errors import EdgepruneError

    if variant is not None:
        chosen = report.variant(variant)
        if chosen is None:
            raise EdgepruneError(
                f"no variant named {variant!r} in the report",
                f"choose one of: {', '.join(v.name for v in report.variants)}",
            )
    else:
        chosen = report.most_pruned()
    title = " + ".join(dict.fromkeys(s.title for s in report.sources))
    src = ", ".join(
        f"{s.label} ({'pipeline run' if s.kind == 'run' else 'bench run'}, {s.created})"
        for s in report.sources
    )
    sections = [
        (
            "variants",
            "Variants",
            _variants_table(report)
            + '<p class="legend">KB: .tflite size; gzip KB: gzip -9 size; x base: size ratio to the '
            "baseline; zeros: zero weights in the file; accuracy: top-1 through LiteRT; agreement: top-1 "
            "agreement with the baseline. "
            "Latency cells: median ms (speed-up vs the baseline) and p5-p95 below.</p>",
        ),
        (
            "size",
            "Size",
            _figure(plots.size_bars(report), "Bars: .tflite and gzip -9 size.", "No sizes recorded."),
        ),
        (
            "latency",
            "Latency per device",
            _figure(
                plots.latency_bars(report),
                "Median latency; error bars span p5 to p95 (a p95 beyond the axis is written at its top).",
                "No latency measured.",
            ),
        ),
        (
            "tradeoff",
            "Accuracy vs latency",
            _figure(
                plots.accuracy_scatter(report),
                "Point area shows bytes; the red line joins the Pareto front "
                "(no other variant is both faster and more accurate).",
                "No latency measured for the variants with an accuracy."
                if any(v.accuracy is not None for v in report.variants)
                else "No accuracy: bench runs measure files only. Give the pipeline run folder too "
                "(edgeprune report RUN BENCH) to see the trade-off.",
            ),
        ),
        ("layers", f"Per layer{': ' + chosen.name if chosen else ''}", _layers_section(report, chosen)),
        ("devices", "Devices", _device_cards(report)),
    ]
    if report.failures or report.notes:
        items = "".join(f"<li>{_e(x)}</li>" for x in report.failures + report.notes)
        sections.append(("notes", "Failures and notes", f"<ul>{items}</ul>"))
    sections.append(("provenance", "Recipe and versions", _provenance(report)))
    nav = "".join(f'<a href="#{k}">{_e(t.split(":")[0])}</a>' for k, t, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{_e(t)}</h2>{c}</section>' for k, t, c in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><h1>{_e(title)}</h1><p class="sub">{_e(src)}</p><nav>{nav}</nav></header>{body}'
        '<footer class="legend"><p>Written by edgeprune. The page is self-contained: it opens offline.</p>'
        "</footer></main></body></html>\n"
    )


def render_run(report: dict) -> str:
    """The HTML page of one pipeline run's report dict."""
    return render(from_run_dict(report))


def render_bench(run) -> str:
    """The HTML page of one bench run (a BenchRun or its dict)."""
    return render(from_bench_run(run))

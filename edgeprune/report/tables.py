"""Text views of a merged Report: the terminal summary (never wider than 80 columns), markdown,
CSV (one row per measurement) and JSON."""

from __future__ import annotations

import csv
import io
import json

from edgeprune.report.merge import Report
from edgeprune.report.plots import fmt_ms
from edgeprune.report.run import table

WIDTH = 80


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _kb(n) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def size_rows(r: Report, name_w: int = 20) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "KB", "gz KB", "x base", "acc", "agree", "zeros"]
    rows = []
    for v in r.variants:
        ratio = r.ratio(v)
        rows.append(
            [
                _cut(v.name, name_w),
                _kb(v.bytes),
                _kb(v.gzip_bytes),
                "-" if ratio is None else f"{ratio:.2f}",
                _pct(v.accuracy),
                _pct(v.agreement),
                _pct(v.zeros),
            ]
            if v.status == "ok"
            else [_cut(v.name, name_w), "FAILED", "", "", "", "", ""]
        )
    return header, rows


def latency_tables(
    r: Report, width: int = WIDTH, name_w: int = 20
) -> list[tuple[list[str], list[list[str]]]]:
    """Median ms per variant x (device, threads), split into tables that fit `width` columns."""
    cols = r.columns()
    if not cols:
        return []
    names = [_cut(v.name, name_w) for v in r.variants]
    cells = {
        c: [fmt_ms(m.median_ms) if (m := r.measurement(v.name, *c)) else "-" for v in r.variants]
        for c in cols
    }
    heads = {c: _cut(f"{c[0]} x{c[1]}", 16) for c in cols}
    first_w = max(len("variant"), *(len(n) for n in names))
    chunks, cur, used = [], [], first_w
    for c in cols:
        w = max(len(heads[c]), *(len(x) for x in cells[c])) + 2
        if cur and used + w > width:
            chunks.append(cur)
            cur, used = [], first_w
        cur.append(c)
        used += w
    chunks.append(cur)
    return [
        (
            ["variant"] + [heads[c] for c in chunk],
            [[n] + [cells[c][i] for c in chunk] for i, n in enumerate(names)],
        )
        for chunk in chunks
    ]


def terminal_summary(r: Report) -> str:
    out = [table(*size_rows(r))]
    for header, rows in latency_tables(r):
        out += ["", "median ms per device x threads:", table(header, rows)]
    out.append(
        "KB: .tflite size; gz KB: gzip -9 size; x base: size ratio to the baseline;\n"
        "acc: top-1 through LiteRT; agree: top-1 agreement with the baseline;\n"
        "zeros: zero weights in the file."
    )
    for f in r.failures:
        out.append(_cut(f"FAILED {f}", WIDTH))
    return "\n".join(out)


def render_markdown(r: Report) -> str:
    lines = ["# edgeprune report", ""]
    for s in r.sources:
        kind = "pipeline run" if s.kind == "run" else "bench run"
        lines.append(
            f"- **{s.label}**: {kind} `{s.path}`, {s.schema} version {s.version}, created {s.created}"
        )
    lines += ["", "## Variants", ""]
    header, rows = size_rows(r, name_w=60)
    lines += [table(header, rows, markdown=True), ""]
    cols = r.columns()
    if cols:
        lines += ["## Latency", "", "Median ms, p5-p95 in brackets, per device and thread count.", ""]
        header = ["variant"] + [f"{d} x{t}" for d, t in cols]
        rows = []
        for v in r.variants:
            row = [v.name]
            for c in cols:
                m = r.measurement(v.name, *c)
                row.append(
                    "-"
                    if m is None
                    else f"{fmt_ms(m.median_ms)} ({fmt_ms(m.p5_ms)}-"
                    f"{fmt_ms(m.p95_ms if m.p95_ms is not None else m.p90_ms)})"
                    + (f" {', '.join(m.flags)}" if m.flags else "")
                )
            rows.append(row)
        lines += [table(header, rows, markdown=True), ""]
    if r.devices:
        lines += [
            "## Devices",
            "",
            "| device | target | model | SoC | ABI | cores | runner | temp C before -> after | flags |",
            "|---|---|---|---|---|---:|---|---|---|",
        ]
        for d in r.devices:
            temp = (
                "-"
                if d.temp_before_c is None and d.temp_after_c is None
                else f"{d.temp_before_c if d.temp_before_c is not None else '?'} -> "
                f"{d.temp_after_c if d.temp_after_c is not None else '?'}"
            )
            lines.append(
                f"| {d.name} | {d.target} | {' '.join(x for x in (d.manufacturer, d.model) if x) or '-'} | "
                f"{d.soc or '-'} | {d.abi or '-'} | {d.cores or '-'} | {'; '.join(d.runners) or '-'} | "
                f"{temp} | {', '.join(f'{k} x{n}' for k, n in d.flags.items()) or '-'} |"
            )
        lines.append("")
    if r.failures or r.notes:
        lines += ["## Failures and notes", ""] + [f"- {x}" for x in r.failures + r.notes] + [""]
    for s in r.sources:
        if s.recipe_text:
            lines += [f"## Recipe of {s.label}", "", "```toml", s.recipe_text.rstrip(), "```", ""]
        if s.versions:
            lines += [
                f"Versions ({s.label}): " + ", ".join(f"{k} {v}" for k, v in s.versions.items() if v),
                "",
            ]
    return "\n".join(lines)


CSV_COLUMNS = [
    "source",
    "variant",
    "device",
    "target",
    "threads",
    "median_ms",
    "p5_ms",
    "p90_ms",
    "p95_ms",
    "mean_ms",
    "cv",
    "count",
    "stats_source",
    "runner",
    "flags",
    "temp_before_c",
    "temp_after_c",
    "bytes",
    "gzip_bytes",
    "ratio_bytes",
    "accuracy",
    "agreement",
    "zeros",
    "prune",
    "quantize",
    "status",
    "sha256",
]


def render_csv(r: Report) -> str:
    """One row per measurement (variant x device x threads), with the variant's size and accuracy
    repeated on each; a variant measured nowhere gets one row with the latency cells empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def num(x, f="{:.6g}"):
        return "" if x is None else f.format(x)

    for v in r.variants:
        tail = [
            num(v.bytes, "{}"),
            num(v.gzip_bytes, "{}"),
            num(r.ratio(v), "{:.4f}"),
            num(v.accuracy, "{:.4f}"),
            num(v.agreement, "{:.4f}"),
            num(v.zeros, "{:.6f}"),
            v.prune or "",
            v.quantize or "",
            v.status,
            v.sha256 or "",
        ]
        ms = [m for m in r.measurements if m.variant == v.name]
        for m in ms:
            w.writerow(
                [
                    m.source,
                    v.name,
                    m.device,
                    m.target,
                    m.threads,
                    num(m.median_ms),
                    num(m.p5_ms),
                    num(m.p90_ms),
                    num(m.p95_ms),
                    num(m.mean_ms),
                    num(m.cv, "{:.4f}"),
                    m.count,
                    m.stats_source,
                    m.runner,
                    ";".join(m.flags),
                    num(m.temp_before_c, "{:.1f}"),
                    num(m.temp_after_c, "{:.1f}"),
                    *tail,
                ]
            )
        if not ms:
            w.writerow([v.source, v.name, "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", *tail])
    return buf.getvalue()


def render_json(r: Report) -> str:
    return json.dumps(r.to_dict(), indent=1) + "\n"

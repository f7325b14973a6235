"""Text views of a Report (edgeprune.results): the terminal summary (never wider than 80 columns),
CSV (one row per measurement) and JSON. The markdown document is in report/markdown.py; both use
the cells defined here, so a number prints the same everywhere."""

from __future__ import annotations

import csv
import io
import json

from edgeprune.report.plots import fmt_ms as ms
from edgeprune.results.model import Report, Variant

WIDTH = 80


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def kb(n) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def speedup_text(sp, interval: bool = True, unit: str = "") -> str:
    """'2.37' or, for a paired ratio, '2.37 [2.31-2.42]' (its 95 % interval); `unit` follows the
    number, e.g. 'x'."""
    if sp is None:
        return "-"
    x, lo, hi = sp
    if not interval or lo is None:
        return f"{x:.2f}{unit}"
    return f"{x:.2f}{unit} [{lo:.2f}-{hi:.2f}]"


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def table(header: list[str], rows: list[list[str]], markdown: bool = False, left: tuple[int, ...] = (0,)) -> str:
    """A plain-text (or markdown) table; columns in `left` are left-aligned, the rest right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    if markdown:
        line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(header), sep, *map(line, rows)])
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def primary(r: Report) -> tuple[str | None, list[int]]:
    """The device the summary's latency columns show (the first measured, the host when it was) and
    its thread counts."""
    cols = r.columns()
    if not cols:
        return None, []
    dev = "local" if any(d == "local" for d, _ in cols) else cols[0][0]
    return dev, [t for d, t in cols if d == dev]


def summary_rows(r: Report, interval: bool = False, name_w: int = 60) -> tuple[list[str], list[list[str]]]:
    """One row per variant: size, accuracy, the primary device's median per thread count, the
    speed-up over the baseline at the first thread count (paired when measured side by side) and
    the same at every other input size the variants were re-exported at."""
    dev, threads = primary(r)
    shapes = r.input_shapes()
    header = ["variant", "KB", "gz KB", "acc", "agree", "zeros"] + [f"ms@{t}t" for t in threads]
    header += ["x"] if threads else []
    for s in shapes:
        header += [f"ms@{s[0]}", f"x@{s[0]}"]
    rows = []
    for v in r.main_variants():
        if v.status != "ok":
            rows.append([cut(v.name, name_w), "FAILED"] + [""] * (len(header) - 2))
            continue
        row = [cut(v.name, name_w), kb(v.bytes), kb(v.gzip_bytes), pct(v.accuracy), pct(v.agreement), pct(v.zeros)]
        row += [ms(m.median_ms) if (m := r.measurement(v.name, dev, t)) else "-" for t in threads]
        if threads:
            row.append(speedup_text(r.speedup(v, dev, threads[0]), interval))
        for s in shapes:
            big = r.resized(v.name, s)
            m = r.measurement(big.name, dev, threads[0]) if big is not None and threads else None
            row += [ms(m.median_ms) if m else "-",
                    speedup_text(r.speedup(big, dev, threads[0]), interval) if m else "-"]
        rows.append(row)
    return header, rows


def latency_cells(r: Report, v: Variant, col: tuple[str, int]) -> str:
    m = r.measurement(v.name, *col)
    if m is None:
        return "-"
    sp = r.speedup(v, *col)
    return ms(m.median_ms) + (f" ({sp[0]:.2f}x)" if sp is not None else "")


def latency_tables(r: Report, width: int = WIDTH, name_w: int = 20) -> list[tuple[list[str], list[list[str]]]]:
    """Median ms (and speed-up over the baseline) per variant x (device, threads), split into tables
    that fit `width` columns."""
    cols = r.columns()
    if not cols:
        return []
    variants = [v for v in r.variants if any(m.variant == v.name for m in r.measurements)]
    names = [cut(v.name, name_w) for v in variants]
    cells = {c: [latency_cells(r, v, c) for v in variants] for c in cols}
    heads = {c: cut(f"{c[0]} x{c[1]}", 16) for c in cols}
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
    return [(["variant"] + [heads[c] for c in chunk], [[n] + [cells[c][i] for c in chunk] for i, n in enumerate(names)])
            for chunk in chunks]


def legend(r: Report) -> str:
    dev, threads = primary(r)
    paired = any(m.paired for m in r.measurements)
    text = ("KB: .tflite size; gz KB: gzip -9 size; acc: top-1 through LiteRT;\n"
            "agree: top-1 agreement with the baseline; zeros: zero weights in the file.")
    if dev is not None:
        text += (f"\nms@Nt: median ms on {dev}, N threads; x: speed-up over the baseline ({threads[0]} thread"
                 f"{'s' if threads[0] > 1 else ''}),\n"
                 + ("measured side by side (paired; 95 % intervals in report.md)." if paired
                    else "the ratio of two medians measured apart."))
    if r.input_shapes():
        text += "\nms@S, x@S: the same network at an S x S input."
    return text


def terminal_summary(r: Report, width: int = WIDTH) -> str:
    header, rows = summary_rows(r)
    rest = len(table(header[1:], [x[1:] for x in rows]).splitlines()[0]) + 2
    name_w = max(8, width - rest)  # long variant names are cut so the table fits `width` columns
    rows = [[cut(x[0], name_w), *x[1:]] for x in rows]
    out = [table(header, rows)]
    dev, _ = primary(r)
    others = [c for c in r.columns() if c[0] != dev]
    if others:
        sub = Report(sources=r.sources, variants=r.variants, measurements=[m for m in r.measurements if m.device != dev],
                     devices=r.devices, ratios=r.ratios)
        for head, body in latency_tables(sub, width):
            out += ["", "median ms (speed-up over the baseline) on the other devices:", table(head, body)]
    out.append(legend(r))
    for s in r.run_sources():
        if (s.baseline or {}).get("convergence"):
            out.append(s.baseline["convergence"])
    for f in r.failures:
        out.append(cut(f"FAILED {f}", width))
    return "\n".join(out)


CSV_COLUMNS = [
    "source", "variant", "device", "target", "threads", "median_ms", "p5_ms", "p90_ms", "p95_ms", "mean_ms", "cv",
    "count", "stats_source", "runner", "affinity", "cpu_mask", "memory_mb", "memory_kind", "flags", "temp_before_c",
    "temp_after_c", "speedup", "speedup_low", "speedup_high", "speedup_method", "bytes", "gzip_bytes", "ratio_bytes",
    "accuracy", "agreement", "zeros", "prune", "quantize", "of", "input_shape", "status", "sha256",
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
        tail = [num(v.bytes, "{}"), num(v.gzip_bytes, "{}"), num(r.ratio(v), "{:.4f}"), num(v.accuracy, "{:.4f}"),
                num(v.agreement, "{:.4f}"), num(v.zeros, "{:.6f}"), v.prune or "", v.quantize or "", v.of or "",
                "x".join(map(str, v.input_shape)) if v.input_shape else "", v.status, v.sha256 or ""]
        rows = [m for m in r.measurements if m.variant == v.name]
        for m in rows:
            sp = r.speedup(v, m.device, m.threads)
            pr = r.paired(v.name, m.device, m.threads)
            w.writerow([m.source, v.name, m.device, m.target, m.threads, num(m.median_ms), num(m.p5_ms), num(m.p90_ms),
                        num(m.p95_ms), num(m.mean_ms), num(m.cv, "{:.4f}"), m.count, m.stats_source, m.runner,
                        m.affinity or "", m.cpu_mask or "", num(m.memory_mb, "{:.2f}"), m.memory_label or "",
                        ";".join(m.flags), num(m.temp_before_c, "{:.1f}"), num(m.temp_after_c, "{:.1f}"),
                        num(sp[0] if sp else None, "{:.4f}"), num(sp[1] if sp else None, "{:.4f}"),
                        num(sp[2] if sp else None, "{:.4f}"), pr.method if pr else ("medians" if sp else ""), *tail])
        if not rows:
            w.writerow([v.source, v.name] + [""] * (len(CSV_COLUMNS) - 2 - len(tail)) + tail)
    return buf.getvalue()


def render_json(r: Report) -> str:
    return json.dumps(r.to_dict(), indent=1) + "\n"

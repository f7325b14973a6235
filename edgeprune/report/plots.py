"""The report's plots, drawn with matplotlib (no pyplot, no GUI backend) and returned as inline
SVG text: text is drawn as paths (no fonts to load), ids are prefixed per plot so that several
SVGs can live in one HTML page, and nothing refers outside the SVG. Each function returns None
when the report has nothing to draw for it."""

from __future__ import annotations

import html
import io
import re

from edgeprune.results.model import Report, Variant

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
CLIP = 2.5  # latency axes end at this many times the slowest median
WIDTH_IN = 10.5  # inches at 100 dpi: the page's content width
_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "edgeprune",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _svg(fig, prefix: str, label: str) -> str:
    """The figure as an <svg> element: no XML prolog, no metadata, ids prefixed with `prefix`,
    `label` as its accessible name (the text in the plot is drawn as paths)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    for i in sorted(ids, key=len, reverse=True):
        text = (
            text.replace(f'id="{i}"', f'id="{prefix}-{i}"')
            .replace(f"#{i})", f"#{prefix}-{i})")
            .replace(f'href="#{i}"', f'href="#{prefix}-{i}"')
        )
    label = html.escape(label, quote=True)
    return text.replace(
        "<svg ", f'<svg class="plot" data-plot="{prefix}" role="img" aria-label="{label}" ', 1
    )


def _with_rc(draw):
    """Runs a drawing function under the report's matplotlib style."""

    def wrapper(*args, **kw):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return draw(*args, **kw)

    wrapper.__name__ = draw.__name__
    wrapper.__doc__ = draw.__doc__
    return wrapper


def fmt_ms(x: float | None) -> str:
    """Milliseconds with three significant digits, trailing zeros kept so a column reads evenly:
    123, 12.3, 1.23, 0.100, 0.0123. The one millisecond format of every table and plot."""
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:#.3g}" if x > 0 else "0"


@_with_rc
def size_bars(report: Report) -> str | None:
    """Bytes and gzip bytes per variant, in KB, horizontal bars."""
    vs = [v for v in report.variants if v.bytes]
    if not vs:
        return None
    fig = _figure(WIDTH_IN, 0.9 + 0.42 * len(vs))
    ax = fig.add_subplot()
    y = list(range(len(vs)))
    h = 0.38
    ax.barh([i - h / 2 for i in y], [v.bytes / 1024 for v in vs], h, label=".tflite", color=COLORS[0])
    ax.barh(
        [i + h / 2 for i in y], [(v.gzip_bytes or 0) / 1024 for v in vs], h, label="gzip -9", color=COLORS[1]
    )
    for i, v in enumerate(vs):
        r = report.ratio(v)
        ax.text(
            v.bytes / 1024,
            i - h / 2,
            f" {v.bytes / 1024:,.1f} KB" + (f" ({r:.2f}x)" if r else ""),
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, [v.name for v in vs])
    ax.invert_yaxis()
    ax.set_xlabel("KB")
    ax.set_xlim(0, max(v.bytes for v in vs) / 1024 * 1.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Model size (ratio to the baseline's .tflite)")
    return _svg(fig, "size", "Model size per variant: " + ", ".join(v.name for v in vs))


def _yerr(ms):
    lo = [m.median_ms - (m.p5_ms if m.p5_ms is not None else m.median_ms) for m in ms]
    hi = [(m.p95_ms if m.p95_ms is not None else (m.p90_ms or m.median_ms)) - m.median_ms for m in ms]
    return [[max(0.0, x) for x in lo], [max(0.0, x) for x in hi]]


@_with_rc
def latency_bars(report: Report) -> str | None:
    """Median latency per variant, one panel per device, one bar per thread count; the error
    bars span p5 to p95."""
    devices = list(dict.fromkeys(d for d, _ in report.columns()))
    if not devices:
        return None
    names = [v.name for v in report.variants]
    fig = _figure(WIDTH_IN, 0.6 + 2.6 * len(devices))
    axes = fig.subplots(len(devices), 1, squeeze=False)[:, 0]
    for ax, dev in zip(axes, devices):
        threads = sorted({t for d, t in report.columns() if d == dev})
        width = 0.8 / len(threads)
        here = [m for m in report.measurements if m.device == dev]
        # a few noisy p95s must not flatten every median: the axis stops at CLIP x the slowest
        # median and a whisker that runs past it is labelled with its p95
        top = max(m.median_ms for m in here) * CLIP
        for j, t in enumerate(threads):
            ms = [(i, report.measurement(n, dev, t)) for i, n in enumerate(names)]
            ms = [(i, m) for i, m in ms if m is not None]
            if not ms:
                continue
            xs = [i - 0.4 + width * (j + 0.5) for i, _ in ms]
            for x, (_, m) in zip(xs, ms):
                hi = m.p95_ms if m.p95_ms is not None else m.p90_ms
                if hi is not None and hi > top:
                    ax.annotate(
                        f"p95 {fmt_ms(hi)}",
                        (x, top),
                        xytext=(3, -2),
                        textcoords="offset points",
                        ha="left",
                        va="top",
                        fontsize=7,
                        color="#333",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                    )
            ax.bar(
                xs,
                [m.median_ms for _, m in ms],
                width * 0.9,
                yerr=_yerr([m for _, m in ms]),
                capsize=3,
                color=COLORS[j % len(COLORS)],
                label=f"{t} thread{'s' if t > 1 else ''}",
                error_kw={"elinewidth": 1, "ecolor": "#333"},
            )
        ax.set_xticks(
            range(len(names)),
            names,
            rotation=20 if len(names) > 5 else 0,
            ha="right" if len(names) > 5 else "center",
        )
        card = report.device(dev)
        ident = f" - {card.identity}" if card and card.identity else ""
        ax.set_title(f"{dev}{ident}", loc="left")
        ax.set_ylim(0, top)
        ax.set_ylabel("median ms (p5-p95)")
        ax.legend(fontsize=8, loc="best")
    return _svg(fig, "latency", "Median latency per variant on " + ", ".join(devices))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher),
    ordered by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


@_with_rc
def accuracy_scatter(report: Report) -> str | None:
    """Accuracy against median latency per device (at its smallest thread count); point area
    shows the file size; the Pareto front is joined and ringed."""
    panels = []
    for dev in dict.fromkeys(d for d, _ in report.columns()):
        t = min(t for d, t in report.columns() if d == dev)
        pts = [(v, report.measurement(v.name, dev, t)) for v in report.variants if v.accuracy is not None]
        pts = [(v, m) for v, m in pts if m is not None]
        if pts:
            panels.append((dev, t, pts))
    if not panels:
        return None
    biggest = max(v.bytes or 1 for _, _, pts in panels for v, _ in pts)
    fig = _figure(WIDTH_IN, 0.4 + 3.6 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (dev, t, pts) in zip(axes, panels):
        xy = [(m.median_ms, v.accuracy * 100) for v, m in pts]
        sizes = [40 + 560 * (v.bytes or 0) / biggest for v, _ in pts]
        front = pareto_front(xy)
        ax.scatter(
            [x for x, _ in xy],
            [y for _, y in xy],
            s=sizes,
            alpha=0.55,
            color=COLORS[0],
            edgecolors="none",
            label="variant (area: bytes)",
        )
        fx = [xy[i][0] for i in front]
        fy = [xy[i][1] for i in front]
        ax.plot(fx, fy, "-", color=COLORS[3], lw=1.5, drawstyle="steps-post", label="Pareto front")
        ax.scatter(fx, fy, s=[sizes[i] for i in front], facecolors="none", edgecolors=COLORS[3], linewidths=2)
        for (v, _), (x, y) in zip(pts, xy):
            ax.annotate(v.name, (x, y), textcoords="offset points", xytext=(7, 5), fontsize=8)
        lo, hi = min(x for x, _ in xy), max(x for x, _ in xy)
        pad = (hi - lo) * 0.25 or hi * 0.1 or 1.0
        ax.set_xlim(max(0, lo - pad), hi + pad)
        ylo, yhi = min(y for _, y in xy), max(y for _, y in xy)
        ypad = (yhi - ylo) * 0.15 or 1.0
        ax.set_ylim(ylo - ypad, yhi + ypad)
        ax.set_xlabel(f"median latency, ms ({dev}, {t} thread{'s' if t > 1 else ''})")
        ax.set_ylabel("top-1 accuracy, %")
        ax.set_title(f"Accuracy vs latency on {dev}", loc="left")
        ax.legend(fontsize=8, loc="best", markerscale=0.5)
    front_names = [
        pts[i][0].name
        for dev, t, pts in panels
        for i in pareto_front([(m.median_ms, v.accuracy) for v, m in pts])
    ]
    return _svg(
        fig,
        "pareto",
        "Accuracy vs latency on "
        + ", ".join(p[0] for p in panels)
        + "; Pareto front: "
        + ", ".join(dict.fromkeys(front_names)),
    )


@_with_rc
def layer_plot(variant: Variant) -> str | None:
    """Per-layer sparsity (targeted layers in colour), or channels kept of each layer's channels."""
    if variant.channel_layers:
        rows = variant.channel_layers
        fig = _figure(WIDTH_IN, 0.9 + 0.3 * len(rows))
        ax = fig.add_subplot()
        y = range(len(rows))
        kept = [r["after"] for r in rows]
        removed = [r["before"] - r["after"] for r in rows]
        ax.barh(y, kept, color=COLORS[0], label="kept")
        ax.barh(y, removed, left=kept, color="#ccc", label="removed")
        for i, r in enumerate(rows):
            ax.text(r["before"], i, f" {r['after']}/{r['before']}", va="center", fontsize=8)
        ax.set_yticks(list(y), [f"{r['layer']} ({r['type']})" for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("output channels")
        ax.set_xlim(0, max(r["before"] for r in rows) * 1.2)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title(f"Channels kept per layer: {variant.name}", loc="left")
        return _svg(fig, "layers", f"Channels kept per layer of {variant.name}")
    if variant.sparsity_layers:
        rows = variant.sparsity_layers
        fig = _figure(WIDTH_IN, 0.9 + 0.3 * len(rows))
        ax = fig.add_subplot()
        y = range(len(rows))
        colors = [COLORS[2] if r.get("targeted") else "#aaa" for r in rows]
        ax.barh(y, [100 * r["sparsity"] for r in rows], color=colors)
        for i, r in enumerate(rows):
            ax.text(
                100 * r["sparsity"],
                i,
                f" {100 * r['sparsity']:.1f}% of {r['weights']:,}",
                va="center",
                fontsize=8,
            )
        ax.set_yticks(list(y), [f"{r['name']} ({r['kind']})" for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, 125)
        ax.set_xlabel(
            "zero weights per weight tensor of the .tflite, %"
            if variant.sparsity_method == "file"
            else "zero weights, % (green: pruned by TF-MOT, grey: left dense)"
        )
        ax.set_title(f"Sparsity per layer: {variant.name}", loc="left")
        return _svg(fig, "layers", f"Sparsity per layer of {variant.name}")
    return None

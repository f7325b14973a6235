"""`edgeprune compare A B`: for every variant x device x thread count measured in both, the ratio
of B's median latency to A's ("1.33x slower"), whether the difference is significant given both
runs' spread, and a regression flag when B is significantly slower by more than a threshold.

Significance:
  * both sides kept at least MIN_SAMPLES raw values (bench runs: every invoke, or one median per
    benchmark_model invocation): a two-sided Mann-Whitney U test on the raw values (scipy.stats),
    significant when p < alpha;
  * otherwise (version-1 pipeline runs kept only summary statistics): significant when each
    median lies outside the other's p5-p95 range. No p-value; conservative: a shift smaller than the spread
    is never called significant.
Results from devices whose identity differs (same name, another model, SoC or ABI) are shown but
never compared as one population."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeprune.errors import InputFileError
from edgeprune.results.model import Measurement, Report
from edgeprune.report.plots import fmt_ms

MIN_SAMPLES = 5
DEFAULT_THRESHOLD = 0.10
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    variant: str
    device: str
    threads: int
    a: Measurement
    b: Measurement
    ratio: float  # B median / A median: above 1 is slower
    method: str  # "mann-whitney" | "p5-p95" | "other device"
    p_value: float | None
    significant: bool
    regression: bool
    improvement: bool

    @property
    def verdict(self) -> str:
        if self.method == "other device":
            return "other device"
        if not self.significant:
            return "not significant"
        if self.regression:
            return "REGRESSION"
        if self.improvement:
            return "faster"
        return "within threshold"


@dataclass
class CompareResult:
    a: str
    b: str
    threshold: float
    alpha: float
    rows: list[Comparison] = field(default_factory=list)
    only_a: list[tuple[str, str, int]] = field(default_factory=list)
    only_b: list[tuple[str, str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.rows if c.regression]


def ratio_text(ratio: float) -> str:
    """'1.33x slower', '1.20x faster' or 'no change' for B's median over A's."""
    if not math.isfinite(ratio) or ratio <= 0:
        return "n/a"
    if abs(ratio - 1) < 0.005:
        return "no change"
    return f"{ratio:.2f}x slower" if ratio > 1 else f"{1 / ratio:.2f}x faster"


def significance(
    a: Measurement, b: Measurement, alpha: float = DEFAULT_ALPHA
) -> tuple[str, float | None, bool]:
    """(method, p-value or None, significant) for the difference between two measurements."""
    if len(a.samples_ms) >= MIN_SAMPLES and len(b.samples_ms) >= MIN_SAMPLES:
        from scipy.stats import mannwhitneyu

        if len(set(a.samples_ms) | set(b.samples_ms)) == 1:
            return "mann-whitney", 1.0, False
        p = float(mannwhitneyu(a.samples_ms, b.samples_ms, alternative="two-sided").pvalue)
        return "mann-whitney", p, p < alpha

    def hi(m: Measurement) -> float:
        return m.p95_ms if m.p95_ms is not None else (m.p90_ms if m.p90_ms is not None else m.median_ms)

    def lo(m: Measurement) -> float:
        return m.p5_ms if m.p5_ms is not None else m.median_ms

    apart = not (lo(a) <= b.median_ms <= hi(a)) and not (lo(b) <= a.median_ms <= hi(b))
    return "p5-p95", None, apart


def compare(
    a: Report,
    b: Report,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    a_label: str | None = None,
    b_label: str | None = None,
) -> CompareResult:
    """Compares every variant x device x thread count that both reports measured."""
    if threshold < 0:
        raise InputFileError(f"threshold {threshold} is negative", "give a fraction, e.g. 0.1 for 10 %")
    res = CompareResult(
        a=a_label or "+".join(s.label for s in a.sources),
        b=b_label or "+".join(s.label for s in b.sources),
        threshold=threshold,
        alpha=alpha,
    )
    b_keys = {m.key: m for m in b.measurements}
    a_keys = {m.key for m in a.measurements}
    other = set()
    for dev in {m.device for m in a.measurements} & {m.device for m in b.measurements}:
        da, db = a.device(dev), b.device(dev)
        if da and db and da.identity and db.identity and da.identity != db.identity:
            other.add(dev)
            res.warnings.append(
                f"{dev} is '{da.identity}' in A but '{db.identity}' in B: not compared as one device"
            )
    for ma in a.measurements:
        mb = b_keys.get(ma.key)
        if mb is None:
            res.only_a.append(ma.key)
            continue
        ratio = mb.median_ms / ma.median_ms if ma.median_ms > 0 else float("inf")
        if ma.device in other:
            res.rows.append(Comparison(*ma.key, ma, mb, ratio, "other device", None, False, False, False))
            continue
        method, p, sig = significance(ma, mb, alpha)
        res.rows.append(
            Comparison(
                *ma.key,
                ma,
                mb,
                ratio,
                method,
                p,
                sig,
                regression=sig and ratio > 1 + threshold,
                improvement=sig and ratio < 1 / (1 + threshold),
            )
        )
    res.only_b = [k for k in b_keys if k not in a_keys]
    if not res.rows:
        raise InputFileError(
            f"A ({res.a}) and B ({res.b}) have no variant x device x thread count in common",
            "compare runs of the same models on the same devices and thread counts",
        )
    return res


def paired_rows(a: Report, b: Report) -> list[list[str]]:
    """Per variant x device x threads with a paired speed-up over its baseline in A or B: the
    speed-up and its 95 % interval on each side, and whether the intervals overlap. Ratios measured
    side by side survive the run-to-run drift that moves both runs' absolute medians."""
    from edgeprune.report.tables import speedup_text

    keys = list(dict.fromkeys([r.key for r in a.ratios] + [r.key for r in b.ratios]))
    rows = []
    for key in keys:
        ra, rb = a.paired(*key), b.paired(*key)
        sa, sb = (ra.speedup if ra else None), (rb.speedup if rb else None)
        apart = "-" if sa is None or sb is None else ("yes" if sa[2] < sb[1] or sb[2] < sa[1] else "no")
        rows.append([key[0], key[1], str(key[2]), speedup_text(sa, unit="x"), speedup_text(sb, unit="x"), apart])
    return rows


PAIRED_HEADER = ["model", "device", "thr", "A speed-up", "B speed-up", "apart"]
PAIRED_LEGEND = ("Speed-ups over each run's own baseline, measured side by side (paired), with 95 % intervals; "
                 "apart: the intervals do not overlap.")


def geometric_mean(ratios: list[float]) -> float:
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def _p(c: Comparison) -> str:
    if c.p_value is None:
        return "-"
    return "<0.001" if c.p_value < 0.001 else f"{c.p_value:.3f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def render_text(res: CompareResult, a: Report, b: Report) -> str:
    """The comparison for a terminal, at most 80 columns wide, in the spirit of pyperf compare_to."""
    out = []
    for tag, rep, label in (("A", a, res.a), ("B", b, res.b)):
        src = ", ".join(f"{'pipeline' if s.kind == 'run' else 'bench'} run {s.created}" for s in rep.sources)
        out.append(_cut(f"{tag}: {label} ({src})", 80))
    out.append(f"Regression: B significantly slower (p < {res.alpha:g}) by more than {res.threshold:.0%}.")
    for dev in dict.fromkeys(c.device for c in res.rows):
        rows = [c for c in res.rows if c.device == dev]
        card = b.device(dev) or a.device(dev)
        ident = f" ({card.identity})" if card and card.identity else ""
        out += ["", _cut(f"{dev}{ident}", 80)]
        name_w = min(18, max(len("model"), *(len(c.variant) for c in rows)))
        header = ["model", "thr", "A ms", "B ms", "change", "p", "verdict"]
        table = [
            [
                _cut(c.variant, name_w),
                str(c.threads),
                fmt_ms(c.a.median_ms),
                fmt_ms(c.b.median_ms),
                ratio_text(c.ratio),
                _p(c),
                c.verdict,
            ]
            for c in rows
        ]
        widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
        left = {0, 4, 6}

        def line(cells):
            return (
                "  "
                + "  ".join(
                    x.ljust(w) if i in left else x.rjust(w) for i, (x, w) in enumerate(zip(cells, widths))
                ).rstrip()
            )

        out.append(line(header))
        out.append("  " + "  ".join("-" * w for w in widths))
        out += [line(r) for r in table]
        same = [
            c.ratio for c in rows if c.method != "other device" and c.ratio > 0 and math.isfinite(c.ratio)
        ]
        if len(same) > 1:
            out.append(f"  Geometric mean: {ratio_text(geometric_mean(same))}")
    paired = paired_rows(a, b)
    if paired:
        from edgeprune.report.tables import table

        out += ["", "Speed-ups over the baseline, measured side by side in each run (95 % intervals):",
                table(PAIRED_HEADER, [[_cut(r[0], 18), *r[1:]] for r in paired])]
    methods = {c.method for c in res.rows}
    out.append("")
    if "mann-whitney" in methods:
        out.append("p: two-sided Mann-Whitney U on both runs' raw samples.")
    if "p5-p95" in methods:
        out.append(
            "p '-': summary statistics only (version-1 pipeline runs): significant when\neach median "
            "lies outside the other's p5-p95 range."
        )
    for w in res.warnings:
        out.append(f"warning: {w}")
    for tag, keys in (("Only in A", res.only_a), ("Only in B", res.only_b)):
        if keys:
            out.append(_cut(f"{tag} ({len(keys)}): " + ", ".join(f"{v} on {d} x{t}" for v, d, t in keys), 80))
    regs = res.regressions
    out.append("")
    if regs:
        out.append(f"Regressions ({len(regs)}):")
        for c in regs:
            why = "p5-p95 ranges apart" if c.p_value is None else "p " + _p(c).replace("<", "< ")
            out.append(
                _cut(
                    f"- {c.variant} on {c.device} x{c.threads}: {fmt_ms(c.a.median_ms)} ms -> "
                    f"{fmt_ms(c.b.median_ms)} ms: {ratio_text(c.ratio)} ({why})",
                    80,
                )
            )
    else:
        out.append(f"No regression above {res.threshold:.0%} ({len(res.rows)} compared).")
    return "\n".join(out)


def render_markdown(res: CompareResult, a: Report, b: Report) -> str:
    """The comparison as one markdown table (for a pull request comment), regressions in bold."""
    from edgeprune.report.tables import table

    lines = [
        f"**A**: {res.a} &nbsp; **B**: {res.b} &nbsp; threshold {res.threshold:.0%}, p < {res.alpha:g}",
        "",
    ]
    header = ["model", "device", "threads", "A ms", "B ms", "change", "p", "verdict"]
    rows = []
    for c in res.rows:
        verdict = f"**{c.verdict}**" if c.regression else c.verdict
        rows.append(
            [
                c.variant,
                c.device,
                str(c.threads),
                fmt_ms(c.a.median_ms),
                fmt_ms(c.b.median_ms),
                ratio_text(c.ratio),
                _p(c),
                verdict,
            ]
        )
    lines += [table(header, rows, markdown=True), ""]
    paired = paired_rows(a, b)
    if paired:
        lines += [table(PAIRED_HEADER, paired, markdown=True), "", PAIRED_LEGEND, ""]
    methods = {c.method for c in res.rows}
    if "mann-whitney" in methods:
        lines.append("p: two-sided Mann-Whitney U on both runs' raw samples.")
    if "p5-p95" in methods:
        lines.append(
            "p `-`: summary statistics only: significant when each median lies outside the other's "
            "p5-p95 range."
        )
    lines += [f"- warning: {w}" for w in res.warnings]
    regs = res.regressions
    lines.append("")
    lines.append(
        f"**{len(regs)} regression(s)** above {res.threshold:.0%}."
        if regs
        else f"No regression above {res.threshold:.0%} ({len(res.rows)} compared)."
    )
    return "\n".join(lines) + "\n"

"""The markdown document of a Report: report.md of a pipeline run, bench.md of a bench run, and
`edgeprune report --format md` of any merge of them. One renderer for all three."""

from __future__ import annotations

from edgeprune.report.tables import kb, legend, ms, pct, speedup_text, summary_rows, table
from edgeprune.results.model import Report, Source, Variant


def _run_header(s: Source) -> list[str]:
    m, ver, src, b, data = s.host, s.versions, s.model or {}, s.baseline or {}, s.data or {}
    lines = [f"Pipeline run **{s.label}**, created {s.created}" + (f" in {s.seconds} s" if s.seconds else "")
             + f" on {m.get('cpu')} ({m.get('cores')} cores, {m.get('system')} {m.get('machine')}). "
             f"TensorFlow {ver.get('tensorflow')}, tf-keras {ver.get('tf-keras')}, TF-MOT "
             f"{ver.get('tensorflow-model-optimization')}, ai-edge-litert {ver.get('ai-edge-litert')}, "
             f"Python {ver.get('python')}.", ""]
    if src:
        params = src.get("params")
        lines += [f"Model: {src.get('architecture') or src.get('path')} ({src.get('kind')}), "
                  + (f"{params:,} parameters, " if params is not None else "") + f"input {src.get('input_shape')}. "
                  f"Data: {data.get('name')}, {data.get('train')} train / {data.get('test')} test images. "
                  f"Baseline: {b.get('epochs')} epochs{' (cached)' if b.get('cached') else ''}, Keras accuracy "
                  f"{pct(b.get('keras_accuracy'))}.", ""]
    if b.get("convergence"):
        lines += [b["convergence"][0].upper() + b["convergence"][1:], ""]
    return lines


def _variant_details(r: Report, v: Variant) -> list[str]:
    d = v.details
    spec = d.get("spec", {})
    lines = [f"### {v.name}", "", f"prune = {spec.get('prune')}, quantize = {spec.get('quantize')}, "
             f"status: **{v.status}**"]
    if v.status != "ok":
        return lines + ["", *[f"- {f}" for f in v.failures], ""]
    ver, info, sp = d.get("verification", {}), d.get("tflite_info", {}), d.get("sparsity", {})
    lines += ["", f"- bytes {v.bytes:,} (gzip {v.gzip_bytes:,}); parameters {v.params:,}",
              f"- accuracy through LiteRT {pct(v.accuracy)} on {ver.get('samples')} images; agreement with "
              f"the baseline {pct(v.agreement)}; Keras accuracy {pct(v.keras_accuracy)}",
              f"- zeros in the file's weights {pct(v.zeros)}; sparse tensors: {info.get('has_sparse_tensors')}; "
              f"DENSIFY ops: {info.get('has_densify')}"]
    if ver.get("max_abs_diff_vs_keras") is not None:
        lines.append(f"- float32 outputs vs Keras: max |diff| {ver['max_abs_diff_vs_keras']:.2e} "
                     f"(tolerance {ver['tolerance']:.0e})")
    if d.get("sparse_encoding"):
        e = d["sparse_encoding"]
        lines.append(f"- sparse encoding: {e['chosen']} ({e['why']}; dense {e['dense_bytes']:,} B"
                     + (f", sparse {e['sparse_bytes']:,} B" if e.get("sparse_bytes") else "") + ")")
    if sp.get("method", "none") != "none":
        lines.append(f"- {sp['method']} sparsity: targeted layers {pct(sp.get('targeted_sparsity'))}, all "
                     f"kernels {pct(sp.get('overall_sparsity'))}; schedule {sp.get('schedule')}")
    if d.get("blocks"):
        bl = d["blocks"]
        lines.append(f"- blocks removed: {', '.join(bl['removed']) or 'none'}; layers {bl['layers_before']} -> "
                     f"{bl['layers_after']}, parameters {bl['params_before']:,} -> {bl['params_after']:,}")
    if d.get("channels"):
        c = d["channels"]
        lines.append(f"- channels: parameters {c['params_before']:,} -> {c['params_after']:,}, MACs "
                     f"{c['macs_before']:,} -> {c['macs_after']:,}")
    for m in (m for m in r.measurements if m.variant == v.name):
        lines.append(f"- {m.device}, {m.threads} thread(s): median {ms(m.median_ms)} ms, p90 {ms(m.p90_ms)} ms, "
                     f"CV {pct(m.cv)}, {m.count} runs ({m.runner})"
                     + (f", {speedup_text(r.speedup(v, m.device, m.threads), unit='x')} the baseline"
                        if r.speedup(v, m.device, m.threads) else ""))
    for big in (x for x in r.variants if x.of == v.name):
        for m in (m for m in r.measurements if m.variant == big.name):
            sp_ = r.speedup(big, m.device, m.threads)
            lines.append(f"- at {'x'.join(map(str, big.input_shape))} ({big.export}), {m.device}, {m.threads} "
                         f"thread(s): median {ms(m.median_ms)} ms, p90 {ms(m.p90_ms)} ms, {m.count} runs"
                         + (f", {speedup_text(sp_, unit='x')} the baseline" if sp_ else ""))
    if v.sparsity_layers and sp.get("method", "none") != "none":
        lines += ["", "| layer | kind | weights | sparsity | note |", "|---|---|---:|---:|---|"]
        for lay in v.sparsity_layers:
            lines.append(f"| {lay['name']} | {lay['kind']} | {lay['weights']:,} | {pct(lay['sparsity'])} | "
                         f"{lay['reason']} |")
        dense = [lay for lay in v.sparsity_layers if not lay["targeted"]]
        if dense:
            lines += ["", f"{len(dense)} kernels stayed dense (reasons in the table)."]
    if v.channel_layers:
        lines += ["", "| layer | channels before | after |", "|---|---:|---:|"]
        lines += [f"| {c['layer']} | {c['before']} | {c['after']} |" for c in v.channel_layers]
    return lines + [""]


def _latency_section(r: Report) -> list[str]:
    cols = r.columns()
    if not cols:
        return []
    lines = ["## Latency", "", "Median ms, p5-p95 in brackets, then the speed-up over the baseline measured on the "
             "same device (with its bootstrap 95 % interval when the models were measured side by side), per device "
             "and thread count.", ""]
    header = ["variant"] + [f"{d} x{t}" for d, t in cols]
    rows = []
    for v in r.variants:
        row = [v.name]
        for c in cols:
            m = r.measurement(v.name, *c)
            sp = r.speedup(v, *c)
            row.append("-" if m is None else
                       f"{ms(m.median_ms)} ({ms(m.p5_ms)}-{ms(m.p95_ms if m.p95_ms is not None else m.p90_ms)})"
                       + (f" {speedup_text(sp, unit='x')}" if sp else "") + (f" {', '.join(m.flags)}" if m.flags else ""))
        if any(x != "-" for x in row[1:]):
            rows.append(row)
    lines += [table(header, rows, markdown=True), ""]
    methods = sorted({x.method for x in r.ratios})
    drift = [f"{x.variant} on {x.device} x{x.threads} ({', '.join(x.flags)})" for x in r.ratios if x.flags]
    if drift:
        lines += ["Flagged paired ratios: " + "; ".join(drift) + ".", ""]
    if methods:
        lines += [f"Paired ratios: {', '.join(methods)} (interleaved: the models alternate in short random blocks in "
                  "one process; alternating rounds: whole invocations in turn). Intervals: bootstrap over the blocks.",
                  ""]
    return lines


def _measurements_section(r: Report) -> list[str]:
    """Every measurement with the conditions it was taken under, per device."""
    lines = []
    for d in r.devices:
        rows = [m for m in r.measurements if m.device == d.name]
        if not rows:
            continue
        lines += [f"### {d.name} ({d.target})", "",
                  "| model | threads | mask | runner | median ms | mean ms | p90 ms | p95 ms | CV | n | memory | "
                  "temp C | flags |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
        for m in rows:
            mem = "" if m.memory_mb is None else f"{m.memory_mb:.1f} MB {m.memory_label or ''}".strip()
            temps = ("" if m.temp_before_c is None and m.temp_after_c is None else
                     f"{'?' if m.temp_before_c is None else f'{m.temp_before_c:.1f}'} -> "
                     f"{'?' if m.temp_after_c is None else f'{m.temp_after_c:.1f}'}")
            lines.append(f"| {m.variant} | {m.threads} | {m.cpu_mask or ''} | {m.runner} | {ms(m.median_ms)} | "
                         f"{ms(m.mean_ms)} | {ms(m.p90_ms)} | {ms(m.p95_ms)} | {pct(m.cv)} | {m.count} "
                         f"{m.stats_source} | {mem} | {temps} | {', '.join(m.flags)} |")
        if d.notes:
            lines += [""] + [f"- {n}" for n in d.notes]
        lines.append("")
    return lines


def _devices_section(r: Report) -> list[str]:
    if not r.devices:
        return []
    lines = ["## Devices", "", "| device | target | model | SoC | ABI | cores | OS | runner | temp C before -> after "
             "| flags | status |", "|---|---|---|---|---|---:|---|---|---|---|---|"]
    for d in r.devices:
        temp = ("-" if d.temp_before_c is None and d.temp_after_c is None else
                f"{d.temp_before_c if d.temp_before_c is not None else '?'} -> "
                f"{d.temp_after_c if d.temp_after_c is not None else '?'}")
        lines.append(f"| {d.name} | {d.target} | {' '.join(x for x in (d.manufacturer, d.model) if x) or '-'} | "
                     f"{d.soc or '-'} | {d.abi or '-'} | {d.cores or '-'} | {d.os or '-'} | "
                     f"{'; '.join(d.runners) or '-'} | {temp} | "
                     f"{', '.join(f'{k} x{n}' for k, n in d.flags.items()) or '-'} | {d.error or 'ok'} |")
    return lines + ["", "Numbers from different devices are never one population.", ""]


def render_markdown(r: Report) -> str:
    runs = r.run_sources()
    title = (f"edgeprune run: {runs[0].recipe.get('name')}" if len(runs) == 1 and len(r.sources) == 1 and runs[0].recipe
             else "edgeprune bench" if all(s.kind == "bench" for s in r.sources) and len(r.sources) == 1
             else "edgeprune report")
    lines = [f"# {title}", ""]
    for s in r.sources:
        if s.kind == "run":
            lines += _run_header(s)
        else:
            st = s.settings or {}
            lines += [f"Bench run **{s.label}**, created {s.created}: runs >= {st.get('runs')} and >= "
                      f"{st.get('min_secs')} s (stop at {st.get('max_secs')} s), warm-up {st.get('warmup')}, "
                      f"XNNPACK {'on' if st.get('use_xnnpack', True) else 'off'}"
                      + (", models interleaved (paired)" if st.get("paired") else "") + ".", ""]
    lines += ["## Summary", ""]
    header, rows = summary_rows(r, interval=True)
    lines += [table(header, rows, markdown=True), "", legend(r).replace("\n", " ") + "", ""]
    lines += _latency_section(r)
    lines += _devices_section(r)
    measured = _measurements_section(r)
    if measured:
        lines += ["## Measurements", "", *measured]
    detailed = [v for v in r.main_variants() if v.details]
    if detailed:
        lines += ["## Variants", ""]
        for v in detailed:
            lines += _variant_details(r, v)
    files = [v for v in r.variants if not v.details]
    if files:
        lines += ["## Files", "", "| model | bytes | gzip bytes | KB | zeros | sha256 |", "|---|---:|---:|---:|---:|---|"]
        lines += [f"| {v.name} | {v.bytes or '-'} | {v.gzip_bytes or '-'} | {kb(v.bytes)} | {pct(v.zeros)} | "
                  f"{(v.sha256 or '')[:12]} |" for v in files]
        lines.append("")
    if r.failures or r.notes:
        lines += ["## Failures and notes", ""] + [f"- {x}" for x in r.failures + r.notes] + [""]
    for s in r.sources:
        if s.recipe_text:
            lines += [f"## Recipe of {s.label}", "", "```toml", s.recipe_text.rstrip(), "```", ""]
        if s.versions:
            lines += [f"Versions ({s.label}): " + ", ".join(f"{k} {v}" for k, v in s.versions.items() if v), ""]
    if runs:
        lines += ["## Reading this report", "",
                  "Zeroed weights shrink the file only after compression (compare KB with gz KB) unless the sparse "
                  "encoding was chosen, and dense kernels run them no faster: speed comes from fewer channels and "
                  "int8. Accuracy is measured by running every .tflite file through the LiteRT interpreter.", ""]
    return "\n".join(lines)

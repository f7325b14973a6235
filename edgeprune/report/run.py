"""Rendering a pipeline run's report.json: the markdown report and the terminal summary table."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.errors import InputFileError, SchemaError

SCHEMA = "edgeprune.run"
SUPPORTED_VERSIONS = (1,)


def load_run_report(path: Path | str) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputFileError(f"no report.json in {p.parent}", "give the folder of an `edgeprune run`")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{p} is not valid JSON ({e})", "the file is truncated or corrupt: rerun the pipeline") \
            from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SchemaError(f"{p} is not an edgeprune run report (schema {data.get('schema') if isinstance(data, dict) else None!r})",
                          "give a report.json written by `edgeprune run`")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        older = isinstance(version, int) and version < min(SUPPORTED_VERSIONS)
        raise SchemaError(f"{p} has report schema version {version!r}"
                          f"{', written by an older edgeprune' if older else ''}; this edgeprune reads "
                          f"version {', '.join(map(str, SUPPORTED_VERSIONS))}",
                          "rerun the recipe to write it again" if older else "upgrade edgeprune to read it")
    return data


def _latency(v: dict, threads: int, target: str = "local") -> dict | None:
    for x in v.get("latency", []):
        if x.get("target") == target and x.get("threads") == threads and "median_ms" in x:
            return x
    return None


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _kb(n):
    return "-" if n is None else f"{n / 1024:,.0f}"


def _ms(x: float) -> str:
    """Three significant digits, so a fast model's 0.0095 ms does not print as 0.01."""
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def threads_of(report: dict) -> list[int]:
    return list(report.get("recipe", {}).get("bench", {}).get("threads", [1]))


def shapes_of(report: dict) -> list[list[int]]:
    """The extra input shapes every export was also timed at ([bench] input_shapes)."""
    return [list(s) for s in report.get("recipe", {}).get("bench", {}).get("input_shapes", [])]


def _latency_at(v: dict, shape: list[int], threads: int) -> dict | None:
    for a in v.get("latency_at", []):
        if list(a.get("input_shape", [])) == list(shape):
            for x in a.get("latency", []):
                if x.get("threads") == threads and "median_ms" in x:
                    return x
    return None


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    threads = threads_of(report)
    shapes = shapes_of(report)
    header = ["variant", "KB", "gz KB", "acc", "agree", "zeros"] + [f"ms@{t}t" for t in threads] + ["x"]
    for shape in shapes:
        header += [f"ms@{shape[0]}", f"x@{shape[0]}"]
    rows = []
    for v in report["variants"]:
        if v["status"] != "ok":
            rows.append([v["name"], "FAILED"] + [""] * (len(header) - 2))
            continue
        lat = [_latency(v, t) for t in threads]
        speed = lat[0].get("speedup") if lat and lat[0] else None
        row = ([v["name"], _kb(v["bytes"]), _kb(v["gzip_bytes"]), _pct(v["accuracy"]), _pct(v["agreement"]),
                _pct(v["tflite_info"]["weights_zero_fraction"])]
               + [_ms(x["median_ms"]) if x else "-" for x in lat]
               + [f"{speed:.2f}" if speed else "-"])
        for shape in shapes:
            x = _latency_at(v, shape, threads[0]) if threads else None
            row += [_ms(x["median_ms"]) if x else "-", f"{x['speedup']:.2f}" if x and x.get("speedup") else "-"]
        rows.append(row)
    return header, rows


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


def terminal_summary(report: dict, width: int = 80) -> str:
    header, rows = summary_rows(report)
    rest = len(table([h for h in header[1:]], [r[1:] for r in rows]).splitlines()[0]) + 2
    name_w = max(8, width - rest)  # long variant names are cut so the table fits `width` columns
    rows = [[r[0] if len(r[0]) <= name_w else r[0][: name_w - 1] + "~", *r[1:]] for r in rows]
    out = [table(header, rows)]
    out.append("KB: .tflite size; gz KB: gzip -9 size; acc: top-1 through LiteRT;\n"
               "agree: top-1 agreement with the baseline; zeros: zero weights in the file;\n"
               "ms@Nt: host median latency, N threads; x: speed-up vs baseline (first N)."
               + ("\nms@S, x@S: the same network at an S x S input, first N threads." if shapes_of(report) else ""))
    b = report.get("baseline", {})
    if b.get("convergence"):
        out.append(b["convergence"])
    for v in report["variants"]:
        if v["status"] != "ok":
            out.append(f"FAILED {v['name']}: {'; '.join(v['failures'])}")
    return "\n".join(out)


def render_markdown(report: dict) -> str:
    m = report["machine"]
    ver = report["versions"]
    lines = [f"# edgeprune run: {report['recipe']['name']}", "",
             f"Created {report['created']} in {report['seconds']} s on {m['cpu']} ({m['cores']} cores, "
             f"{m['system']} {m['machine']}). TensorFlow {ver.get('tensorflow')}, tf-keras {ver.get('tf-keras')}, "
             f"TF-MOT {ver.get('tensorflow-model-optimization')}, ai-edge-litert {ver.get('ai-edge-litert')}, "
             f"Python {ver.get('python')}.", ""]
    src = report["model"]
    b = report["baseline"]
    lines += [f"Model: {src.get('architecture') or src.get('path')} ({src['kind']}), {src['params']:,} parameters, "
              f"input {src['input_shape']}. Data: {report['data']['name']}, {report['data']['train']} train / "
              f"{report['data']['test']} test images. Baseline: {b['epochs']} epochs"
              f"{' (cached)' if b.get('cached') else ''}, Keras accuracy {_pct(b.get('keras_accuracy'))}.", ""]
    if b.get("convergence"):
        lines += [b["convergence"][0].upper() + b["convergence"][1:], ""]
    bench = report["recipe"]["bench"]
    lines += ["## Summary", "",
              f"Latency: host, LiteRT with XNNPACK, median of at least {bench['runs']} invokes and "
              f"{bench['min_secs']} s after {bench['warmup']} warm-up runs, per thread count.", ""]
    header, rows = summary_rows(report)
    lines += [table(header, rows, markdown=True), ""]
    lines += ["## Variants", ""]
    for v in report["variants"]:
        spec = v.get("spec", {})
        lines.append(f"### {v['name']}")
        lines.append("")
        lines.append(f"prune = {spec.get('prune')}, quantize = {spec.get('quantize')}, status: **{v['status']}**")
        if v["status"] != "ok":
            lines += ["", *[f"- {f}" for f in v["failures"]], ""]
            continue
        sp = v["sparsity"]
        ver_ = v["verification"]
        lines += ["", f"- bytes {v['bytes']:,} (gzip {v['gzip_bytes']:,}); parameters {v['params']:,}",
                  f"- accuracy through LiteRT {_pct(v['accuracy'])} on {ver_['samples']} images; agreement with "
                  f"the baseline {_pct(v['agreement'])}; Keras accuracy {_pct(v['keras_accuracy'])}",
                  f"- zeros in the file's weights {_pct(v['tflite_info']['weights_zero_fraction'])}; "
                  f"sparse tensors: {v['tflite_info']['has_sparse_tensors']}; DENSIFY ops: "
                  f"{v['tflite_info']['has_densify']}"]
        if ver_.get("max_abs_diff_vs_keras") is not None:
            lines.append(f"- float32 outputs vs Keras: max |diff| {ver_['max_abs_diff_vs_keras']:.2e} "
                         f"(tolerance {ver_['tolerance']:.0e})")
        if v.get("sparse_encoding"):
            e = v["sparse_encoding"]
            lines.append(f"- sparse encoding: {e['chosen']} ({e['why']}; dense {e['dense_bytes']:,} B"
                         + (f", sparse {e['sparse_bytes']:,} B" if e.get("sparse_bytes") else "") + ")")
        if sp["method"] != "none":
            lines.append(f"- {sp['method']} sparsity: targeted layers {_pct(sp['targeted_sparsity'])}, all "
                         f"kernels {_pct(sp['overall_sparsity'])}; schedule {sp['schedule']}")
        if v.get("blocks"):
            bl = v["blocks"]
            lines.append(f"- blocks removed: {', '.join(bl['removed']) or 'none'}; layers {bl['layers_before']} -> "
                         f"{bl['layers_after']}, parameters {bl['params_before']:,} -> {bl['params_after']:,}")
        if v.get("channels"):
            c = v["channels"]
            lines.append(f"- channels: parameters {c['params_before']:,} -> {c['params_after']:,}, MACs "
                         f"{c['macs_before']:,} -> {c['macs_after']:,}")
        for x in v.get("latency", []):
            if "median_ms" in x:
                lines.append(f"- host latency, {x['threads']} thread(s): median {x['median_ms']:.3f} ms, p90 "
                             f"{x['p90_ms']:.3f} ms, CV {x['cv']:.1%}, {x['runs']} runs ({x['runtime']})")
            else:
                lines.append(f"- host latency, {x['threads']} thread(s): {x.get('error')}")
        for a in v.get("latency_at", []):
            where = f"at {'x'.join(map(str, a['input_shape']))} ({a['export']})"
            if a.get("error"):
                lines.append(f"- host latency {where}: not measured: {a['error']}")
            for x in a.get("latency", []):
                if "median_ms" in x:
                    lines.append(f"- host latency {where}, {x['threads']} thread(s): median {x['median_ms']:.3f} ms, "
                                 f"p90 {x['p90_ms']:.3f} ms, {x['runs']} runs"
                                 + (f", {x['speedup']:.2f}x the baseline" if x.get("speedup") else ""))
        if sp["method"] != "none":
            dense = [lay for lay in sp["layers"] if not lay["targeted"]]
            lines += ["", "| layer | kind | weights | sparsity | note |", "|---|---|---:|---:|---|"]
            for lay in sp["layers"]:
                lines.append(f"| {lay['name']} | {lay['kind']} | {lay['weights']:,} | {_pct(lay['sparsity'])} | "
                             f"{lay['reason']} |")
            if dense:
                lines.append("")
                lines.append(f"{len(dense)} kernels stayed dense (reasons in the table).")
        if v.get("channels"):
            lines += ["", "| layer | channels before | after |", "|---|---:|---:|"]
            for lay in v["channels"]["layers"]:
                lines.append(f"| {lay.get('layer', lay.get('name'))} | {lay.get('before')} | {lay.get('after')} |")
        lines.append("")
    lines += ["## Reading this report", "",
              "Zeroed weights shrink the file only after compression (compare KB with gz KB) unless the sparse "
              "encoding was chosen, and dense kernels run them no faster: speed comes from fewer channels and "
              "int8. Accuracy is measured by running every .tflite file through the LiteRT interpreter.", ""]
    return "\n".join(lines)

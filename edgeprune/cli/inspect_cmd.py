"""`edgeprune inspect FILE.tflite`: what is inside an exported model, without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--all", "show_all", is_flag=True, help="List every tensor, not only the constant ones.")
def inspect(path, as_json, show_all):
    """Show bytes, ops, tensors (dtype, shape, zeros, quantization), I/O and sparse encoding of a .tflite."""
    import gzip

    from edgeprune import tflite_file
    from edgeprune.report.tables import table

    data = tflite_file.read_bytes(path)
    info = tflite_file.read(data, name=str(path))
    if as_json:
        d = info.to_dict()
        d["gzip_bytes"] = len(gzip.compress(data, 9))
        click.echo(json.dumps(d, indent=2))
        return 0
    click.echo(f"{path}: {info.size_bytes:,} bytes (gzip {len(gzip.compress(data, 9)):,}), schema version "
               f"{info.version}, {len(info.ops)} ops, {len(info.tensors)} tensors")
    click.echo("ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(info.op_counts.items())))
    click.echo(f"sparse tensors: {'yes' if info.has_sparse_tensors else 'no'}; DENSIFY ops: "
               f"{'yes' if info.has_densify else 'no'}; zeros in constant weights: "
               f"{info.constant_zero_fraction():.1%}")
    for label, idxs in (("input", info.inputs), ("output", info.outputs)):
        for i in idxs:
            t = info.tensors[i]
            q = f" scale {t.quantization['scale_min']:.4g} zero point {t.quantization['zero_point_min']}" \
                if t.quantization else ""
            click.echo(f"{label}: {t.name} {t.dtype} {t.shape}{q}")
    rows = []
    for t in info.tensors:
        if not (show_all or t.is_constant):
            continue
        q = ""
        if t.quantization:
            qq = t.quantization
            q = f"{qq['channels']}ch s[{qq['scale_min']:.2g},{qq['scale_max']:.2g}] zp{qq['zero_point_min']}"
        zeros = "sparse" if t.sparse else ("-" if t.zero_fraction is None else f"{t.zero_fraction:.1%}")
        name = t.name if len(t.name) <= 48 else "..." + t.name[-45:]
        rows.append([str(t.index), name, t.dtype, "x".join(map(str, t.shape)) or "scalar", f"{t.bytes:,}", zeros, q])
    if rows:
        click.echo("")
        click.echo(table(["#", "tensor", "dtype", "shape", "bytes", "zeros", "quantization"], rows, left=(1, 2, 6)))
    return 0

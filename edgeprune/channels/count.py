"""Parameter and multiply-accumulate counts of a graph's model for any channel counts, without
rebuilding it: each weight's shape with its channel axes resized, each layer call's MACs from its
handler. Counts are for the model's static shapes with batch size 1."""

from __future__ import annotations

import dataclasses

from edgeprune.channels.graph import ChannelGraph


@dataclasses.dataclass(frozen=True)
class Counts:
    params: int
    macs: int | None  # None when a spatial size is unknown


class Counter:
    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self._weights = []  # (layer name, shape, [(axis, port)])
        for name, op in graph.layer_ops.items():
            spec = graph.handlers[name].weights(op.layer)
            for var in op.layer.weights:
                axes = [(w.axis % len(var.shape), w.port) for w in spec if getattr(op.layer, w.attr) is var]
                self._weights.append((name, tuple(int(d) for d in var.shape), axes))

    def count(self, counts: dict[int, int] | None = None) -> Counts:
        """Counts with `counts` (group root -> kept channel count); missing groups keep all channels."""
        g, counts = self.graph, counts or {}
        cache: dict[tuple[str, str], int] = {}

        def size_of(layer: str, port: str) -> int:
            if (layer, port) not in cache:
                cache[(layer, port)] = g.count_of_root(g.port_root(layer, port), counts)
            return cache[(layer, port)]

        params = 0
        for name, shape, axes in self._weights:
            shape = list(shape)
            for axis, port in axes:
                shape[axis] = size_of(name, port)
            n = 1
            for d in shape:
                n *= d
            params += n
        macs: int | None = 0
        for op in g.trace.ops:
            m = g.handlers[op.name].macs(op, lambda port, _n=op.name: size_of(_n, port), g.shapes)
            if m is None:
                macs = None
                break
            macs += int(m)
        return Counts(params=params, macs=macs)

"""ChannelGraph: which channels of a model must be removed together.

Every tensor's channel axis and every layer port ("conv:in", "conv:out", "bn:io") is a node. Handlers
join nodes whose channels are the same channels (a BN's input and output, all inputs of an Add, a
depthwise conv's input and output). The joined classes are either

* prunable groups: some layer produces their channels (Conv/Dense/SeparableConv output), and no model
  input or output, protected layer or channel-mixing op holds them;
* derived: their channels are laid out from other classes (Concatenate joins its inputs at offsets,
  Flatten repeats its input's channels for every spatial position);
* fixed: they keep every channel, for a reason the graph records.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict

import numpy as np

from edgeprune.channels.handlers import FrozenHandler, Handler, WeightAxis, handler_for
from edgeprune.channels.trace import Op, Trace, trace_model
from edgeprune.errors import InternalError, PruningError


@dataclasses.dataclass
class Group:
    """Channels that are removed together: `key` names it by its first producer port ("conv1:out")."""

    key: str
    root: int
    size: int
    ports: list[str]
    producers: list[str]


@dataclasses.dataclass(frozen=True)
class Member:
    """One weight axis that carries a group's channels. `positions[c]` lists the indices along `axis`
    that belong to the group's channel c (several when a Flatten repeats it)."""

    layer: str
    weight: WeightAxis
    positions: np.ndarray


class ChannelGraph:
    def __init__(self, model, protect: tuple[str, ...] | list[str] = ()):
        self.trace: Trace = trace_model(model)
        self.shapes = self.trace.shapes
        self.protect = tuple(protect)
        self._index: dict[str, int] = {}
        self._parent: list[int] = []
        self._size: list[int] = []
        self._fixed: dict[int, str] = {}  # node -> reason, resolved to classes in _finish
        self._produced: list[tuple[int, str]] = []
        self._derived: list[tuple[int, list[int], str]] = []
        self._refusals: list[tuple[str, str, str]] = []
        self.handlers: dict[str, Handler] = {}
        self.layer_ops: dict[str, Op] = {}  # first call of each layer
        self._build()

    # ---- what handlers call -------------------------------------------------------------------
    def _node(self, name: str, size: int | None) -> int:
        if name in self._index:
            return self._index[name]
        if size is None:
            raise PruningError(f"{name} has an unknown channel count", "give the model a fully defined input shape")
        i = len(self._parent)
        self._index[name] = i
        self._parent.append(i)
        self._size.append(int(size))
        return i

    def tensor(self, key: str) -> int:
        shape = self.shapes[key]
        return self._node(f"t:{key}", shape[-1] if shape else 1)

    def port(self, op: Op, port: str) -> int:
        name = f"p:{op.name}:{port}"
        if name not in self._index:
            raise InternalError(f"layer {op.name!r} has no port {port!r}", "the handler must declare it")
        return self._index[name]

    def size(self, node: int) -> int:
        return self._size[node]

    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def union(self, a: int, b: int, op: Op) -> None:
        if self._size[a] != self._size[b]:
            raise PruningError(f"layer {op.name!r} ({op.kind}) joins {self._size[a]} channels with "
                               f"{self._size[b]}", "this model's shapes do not fit the channel rules")
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def derive(self, node: int, parts: list[int], op: Op) -> None:
        if sum(self._size[p] for p in parts) != self._size[node]:
            raise PruningError(f"layer {op.name!r} ({op.kind}) lays out {sum(self._size[p] for p in parts)} "
                               f"channels into {self._size[node]}", "this model's shapes do not fit the rules")
        self._derived.append((node, list(parts), op.name))

    def fix(self, node: int, reason: str) -> None:
        self._fixed.setdefault(node, reason)

    def produce(self, node: int, op: Op) -> None:
        self._produced.append((node, op.name))

    def refuse(self, op: Op, reason: str) -> None:
        self._refusals.append((op.name, op.kind, reason))

    # ---- building -----------------------------------------------------------------------------
    def _protected_by(self, name: str) -> str | None:
        for pattern in self.protect:
            if re.search(pattern, name):
                return pattern
        return None

    def _build(self) -> None:
        for key in self.trace.inputs + self.trace.outputs:
            self.tensor(key)
        for op in self.trace.ops:
            for key in op.inputs + op.outputs:
                self.tensor(key)
            base = handler_for(op)
            pattern = self._protected_by(op.name)
            reason = None if base is None else base.refuse(op, self.shapes)
            if pattern is not None:
                handler: Handler = FrozenHandler(base if base is not None and reason is None else None, pattern)
            elif base is None:
                self.refuse(op, f"no channel rule for layer type {op.kind}")
                handler = FrozenHandler(None, "(refused)")
            elif reason is not None:
                self.refuse(op, reason)
                handler = FrozenHandler(None, "(refused)")
            else:
                handler = base
            self.handlers.setdefault(op.name, handler)
            self.layer_ops.setdefault(op.name, op)
            handler = self.handlers[op.name]
            for port, size in handler.ports(op, self.shapes).items():
                self._node(f"p:{op.name}:{port}", size)
            handler.relate(op, self)
        if self._refusals:
            lines = [f"{name!r} ({kind}): {why}" for name, kind, why in self._refusals]
            shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
            first = self._refusals[0][0]
            raise PruningError(
                f"cannot prune channels of model {self.trace.name!r}: {shown}",
                f"protect these layers to keep their channels, e.g. protect=[{('^' + re.escape(first) + '$')!r}]")
        for key in self.trace.inputs:
            self.fix(self.tensor(key), "model input")
        for key in self.trace.outputs:
            self.fix(self.tensor(key), "model output")
        self._finish()

    def _finish(self) -> None:
        find = self._find
        roots = sorted({find(i) for i in range(len(self._parent))})
        self.fixed: dict[int, str] = {}
        for node, reason in self._fixed.items():
            self.fixed.setdefault(find(node), reason)
        self.definition: dict[int, list[int]] = {}
        for node, parts, layer in self._derived:
            r, part_roots = find(node), [find(p) for p in parts]
            if r in self.definition and self.definition[r] != part_roots:
                self.fixed.setdefault(r, f"{layer!r} lays out channels another layer lays out differently")
            else:
                self.definition[r] = part_roots
        producers: dict[int, list[str]] = defaultdict(list)
        for node, layer in self._produced:
            producers[find(node)].append(layer)
        for r in self.definition:
            if r in producers:
                self.fixed.setdefault(r, f"channels laid out from several tensors are also produced by "
                                         f"{producers[r][0]!r}")
        changed = True
        while changed:  # a fixed derived class fixes its parts
            changed = False
            for r, parts in self.definition.items():
                if r in self.fixed:
                    for p in parts:
                        if p not in self.fixed:
                            self.fixed[p] = f"part of fixed channels ({self.fixed[r]})"
                            changed = True
        port_names: dict[int, list[str]] = defaultdict(list)
        for name, i in self._index.items():
            if name.startswith("p:"):
                port_names[find(i)].append(name[2:])
        self.groups: list[Group] = []
        self.group_of_root: dict[int, Group] = {}
        seen = set()
        for node, layer in self._produced:  # op order, so keys are stable
            r = find(node)
            if r in seen or r in self.fixed or r in self.definition or self._size[r] < 2:
                continue
            seen.add(r)
            port = next(n for n in port_names[r] if n.startswith(f"{layer}:"))
            g = Group(key=port, root=r, size=self._size[r], ports=sorted(port_names[r]),
                      producers=list(dict.fromkeys(producers[r])))
            self.groups.append(g)
            self.group_of_root[r] = g
        self.roots = roots
        self._members: dict[int, list[Member]] | None = None

    # ---- queries ------------------------------------------------------------------------------
    def group(self, key: str) -> Group:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(key)

    def port_root(self, layer: str, port: str) -> int:
        return self._find(self._index[f"p:{layer}:{port}"])

    def tensor_root(self, key: str) -> int:
        return self._find(self._index[f"t:{key}"])

    def root_size(self, root: int) -> int:
        return self._size[root]

    def why_fixed(self, root: int) -> str | None:
        return self.fixed.get(root)

    def _layout(self, root: int) -> list[tuple[int, int]]:
        """(part root, offset) for every non-derived class laid out in `root`."""
        if root not in self.definition:
            return [(root, 0)]
        out, offset = [], 0
        for part in self.definition[root]:
            out += [(r, offset + o) for r, o in self._layout(part)]
            offset += self._size[part]
        return out

    def kept_of_root(self, root: int, kept: dict[int, np.ndarray]) -> np.ndarray:
        """Kept channel indices of any class, given kept indices of the prunable groups (by root)."""
        if root in self.definition:
            pieces, offset = [], 0
            for part in self.definition[root]:
                pieces.append(self.kept_of_root(part, kept) + offset)
                offset += self._size[part]
            return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)
        if root in kept:
            return np.asarray(kept[root], dtype=np.int64)
        return np.arange(self._size[root], dtype=np.int64)

    def count_of_root(self, root: int, counts: dict[int, int]) -> int:
        if root in self.definition:
            return sum(self.count_of_root(p, counts) for p in self.definition[root])
        return counts.get(root, self._size[root])

    def members(self, group: Group) -> list[Member]:
        """Every weight axis that carries the group's channels, directly or through a layout."""
        if self._members is None:
            found: dict[int, list[Member]] = defaultdict(list)
            for name, op in self.layer_ops.items():
                for w in self.handlers[name].weights(op.layer):
                    for part, offset in self._layout(self.port_root(name, w.port)):
                        if part in self.group_of_root:
                            found[part].append((name, w, offset))
            self._members = {}
            for r, items in found.items():
                by_axis: dict[tuple, list[int]] = defaultdict(list)
                for name, w, offset in items:
                    by_axis[(name, w)].append(offset)
                c = np.arange(self._size[r])[:, None]
                self._members[r] = [Member(name, w, c + np.asarray(offs)[None, :])
                                    for (name, w), offs in by_axis.items()]
        return self._members.get(group.root, [])

    def summary(self) -> dict:
        return {
            "layers": len(self.layer_ops),
            "groups": len(self.groups),
            "prunable_channels": sum(g.size for g in self.groups),
            "fixed": sorted({reason for reason in self.fixed.values()})[:20],
        }

"""Importance criteria: small callables that score every channel of a group (higher = keep).

    scores = criterion(graph, group, weights)        # weights: WeightTable of the graph's model

Magnitude criteria sum over every member of the group (producer filters, BN scales and shifts,
depthwise filters and consumer input rows), the way group-level pruning does. Taylor needs data: it
scores a channel by (sum over its parameters of gradient x weight)^2, averaged over batches."""

from __future__ import annotations

import numpy as np

from edgeprune._tf import keras, tf
from edgeprune.channels.graph import ChannelGraph, Group, Member
from edgeprune.errors import DataError, PruningError
from edgeprune.progress import log

SCORED_ROLES = ("weight", "consume", "gamma")


class WeightTable:
    """The numpy values of every channel-carrying weight of a graph's model, read once."""

    def __init__(self, graph: ChannelGraph):
        self.values: dict[tuple[str, str], np.ndarray] = {}
        for name, op in graph.layer_ops.items():
            for w in graph.handlers[name].weights(op.layer):
                self.values.setdefault((name, w.attr), getattr(op.layer, w.attr).numpy())

    def get(self, layer: str, attr: str) -> np.ndarray:
        return self.values[(layer, attr)]


def channel_slices(arr: np.ndarray, member: Member) -> np.ndarray:
    """(channels, n) array: every value of `arr` that belongs to each of the group's channels."""
    a = np.moveaxis(arr, member.weight.axis, 0)
    a = a.reshape(a.shape[0], -1)
    picked = a[member.positions]  # (channels, occurrences, rest)
    return picked.reshape(picked.shape[0], -1)


class Magnitude:
    """Lp norm of all the group's parameters that belong to each channel."""

    def __init__(self, p: int):
        self.p = p

    def __call__(self, graph: ChannelGraph, group: Group, weights: WeightTable) -> np.ndarray:
        total = np.zeros(group.size)
        for m in graph.members(group):
            if m.weight.role in SCORED_ROLES:
                total += (np.abs(channel_slices(weights.get(m.layer, m.weight.attr), m)) ** self.p).sum(axis=1)
        return total ** (1.0 / self.p)


class BNGamma:
    """|gamma| summed over the group's BatchNormalization layers; groups without BN fall back to L2."""

    fallback = Magnitude(2)

    def __call__(self, graph, group, weights):
        gammas = [m for m in graph.members(group) if m.weight.role == "gamma"]
        if not gammas:
            log(f"channel group {group.key} has no BatchNormalization: scored by L2 instead of bn_gamma")
            return self.fallback(graph, group, weights)
        total = np.zeros(group.size)
        for m in gammas:
            total += np.abs(channel_slices(weights.get(m.layer, m.weight.attr), m)).sum(axis=1)
        return total


class Taylor:
    """First-order Taylor: (sum of gradient x weight over a channel's parameters)^2, per batch, averaged."""

    def __init__(self, data, batch_size: int = 32, max_batches: int = 8):
        self.data = data
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._scores: dict[str, np.ndarray] | None = None

    def prepare(self, model, graph: ChannelGraph) -> None:
        x, y = _split_data(self.data)
        loss_fn = _loss_for(model, x[: self.batch_size], y[: self.batch_size])
        variables, where = [], []
        for name, op in graph.layer_ops.items():
            for w in graph.handlers[name].weights(op.layer):
                var = getattr(op.layer, w.attr)
                if var.trainable and (name, w.attr) not in where:
                    variables.append(var)
                    where.append((name, w.attr))
        scores = {g.key: np.zeros(g.size) for g in graph.groups}
        batches = 0
        for start in range(0, len(x), self.batch_size):
            if batches >= self.max_batches:
                break
            xb, yb = x[start:start + self.batch_size], y[start:start + self.batch_size]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=False))
            grads = tape.gradient(loss, variables)
            gw = {}
            for (name, attr), var, g in zip(where, variables, grads):
                if g is not None:
                    gw[(name, attr)] = (tf.convert_to_tensor(g) * var).numpy()
            for group in graph.groups:
                for m in graph.members(group):
                    value = gw.get((m.layer, m.weight.attr))
                    if value is not None and m.weight.role in SCORED_ROLES:
                        scores[group.key] += channel_slices(value, m).sum(axis=1) ** 2
            batches += 1
        self._scores = {k: v / max(batches, 1) for k, v in scores.items()}

    def __call__(self, graph, group, weights):
        if self._scores is None:
            raise PruningError("the taylor criterion was used before it saw data", "call prepare(model, graph)")
        return self._scores[group.key]


def _split_data(data):
    if data is None:
        raise DataError("the taylor criterion needs data", "pass data=(x_batch, y_batch), or use criterion='l2'")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"data must be a pair (x, y), got {type(data).__name__}", "pass data=(x_batch, y_batch)")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"data has {len(x)} inputs and {len(y)} labels", "pass as many labels as inputs (> 0)")
    return x, y


def _loss_for(model, x, y):
    """The model's compiled loss, or one chosen from the labels: integer labels -> sparse categorical
    cross-entropy (from logits unless the outputs already sum to one), otherwise mean squared error."""
    compiled = getattr(model, "compiled_loss", None)
    if compiled is not None and getattr(compiled, "_losses", None):
        return lambda yt, yp: compiled(yt, yp)
    out = model(x, training=False)
    out = out[0] if isinstance(out, (list, tuple)) else out
    probs = bool(np.all(out.numpy() >= 0) and np.allclose(out.numpy().sum(axis=-1), 1.0, atol=1e-3))
    if np.issubdtype(y.dtype, np.integer) and (y.ndim == 1 or y.shape[-1] == 1):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)
    if y.shape == tuple(out.shape) and out.shape[-1] > 1 and np.allclose(y.sum(axis=-1), 1.0):
        return keras.losses.CategoricalCrossentropy(from_logits=not probs)
    return keras.losses.MeanSquaredError()


def make_criterion(name: str, data=None):
    if name == "l1":
        return Magnitude(1)
    if name == "l2":
        return Magnitude(2)
    if name == "bn_gamma":
        return BNGamma()
    if name == "taylor":
        _split_data(data)
        return Taylor(data)
    raise PruningError(f"unknown criterion {name!r}", "use l1, l2, bn_gamma or taylor")


def score_groups(model, graph: ChannelGraph, criterion) -> dict[str, np.ndarray]:
    """Scores of every channel of every prunable group, by group key."""
    if hasattr(criterion, "prepare"):
        criterion.prepare(model, graph)
    weights = WeightTable(graph)
    return {g.key: np.asarray(criterion(graph, g, weights), dtype=np.float64) for g in graph.groups}


def normalized(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their mean, so groups of different scale can be ranked together."""
    mean = float(np.mean(scores)) if len(scores) else 0.0
    return scores / mean if mean > 0 else np.ones_like(scores)

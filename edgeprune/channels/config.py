"""ChannelConfig: what to prune and how much, validated when it is made and written to JSON."""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

from edgeprune.errors import RecipeError, SchemaError

CRITERIA = ("l1", "l2", "bn_gamma", "taylor")
ALLOCATIONS = ("uniform", "global", "sensitivity")
CONFIG_VERSION = 1


def _closest(value: str, choices) -> str:
    near = difflib.get_close_matches(str(value), list(choices), n=1)
    return f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(map(repr, choices))}"


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    """How to prune channels.

    ratio          fraction of each group's channels to remove (uniform) or of all prunable channels (global)
    criterion      "l1" | "l2" | "bn_gamma" | "taylor" (taylor needs data)
    round_to       kept channel counts are multiples of this (or the whole group)
    allocation     "uniform" | "global" | "sensitivity" (each group pruned alone at a few ratios on data,
                   then ratios chosen greedily for the least measured accuracy loss)
    max_ratio      no group loses more than this fraction of its channels
    protect        regexes (re.search) of layer names to protect: a Conv/Dense/SeparableConv keeps its output
                   channels; any other layer, supported or not, keeps all its input and output channels
    macs_target    keep this fraction of the original MACs (instead of `ratio`)
    params_target  keep this fraction of the original parameters (instead of `ratio`)
    latency_ms     prune greedily until host LiteRT latency is at most this (instead of `ratio`)
    latency_threads, latency_mode   threads and export mode ("int8" | "float32") used for latency
    iterative_steps  prune in this many equal steps, fine-tuning after each one when a fine-tune is given
    """

    ratio: float = 0.3
    criterion: str = "l2"
    round_to: int = 8
    allocation: str = "uniform"
    max_ratio: float = 0.9
    protect: tuple[str, ...] = ()
    macs_target: float | None = None
    params_target: float | None = None
    latency_ms: float | None = None
    latency_threads: int = 1
    latency_mode: str = "int8"
    iterative_steps: int = 1

    def __post_init__(self):
        protect = self.protect
        if isinstance(protect, str):
            protect = (protect,)
        object.__setattr__(self, "protect", tuple(protect or ()))
        if not 0.0 <= float(self.ratio) < 1.0:
            raise RecipeError(f"channel ratio {self.ratio!r} is out of range", "use a fraction in [0, 1), e.g. 0.4")
        if self.criterion not in CRITERIA:
            raise RecipeError(f"unknown channel criterion {self.criterion!r}", _closest(self.criterion, CRITERIA))
        if self.allocation not in ALLOCATIONS:
            raise RecipeError(f"unknown channel allocation {self.allocation!r}",
                              _closest(self.allocation, ALLOCATIONS))
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise RecipeError(f"round_to {self.round_to!r} is not a positive integer", "use 1 to disable rounding, or 8")
        if not 0.0 < float(self.max_ratio) < 1.0:
            raise RecipeError(f"max_ratio {self.max_ratio!r} is out of range", "use a fraction in (0, 1), e.g. 0.9")
        for pattern in self.protect:
            try:
                re.compile(pattern)
            except re.error as e:
                raise RecipeError(f"protect pattern {pattern!r} is not a valid regex ({e})",
                                  "escape special characters, e.g. 'block_1\\\\.conv'") from None
        budgets = [n for n in ("macs_target", "params_target", "latency_ms") if getattr(self, n) is not None]
        if len(budgets) > 1:
            raise RecipeError(f"several budgets given ({', '.join(budgets)})", "give only one of them")
        for name in ("macs_target", "params_target"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) < 1.0:
                raise RecipeError(f"{name} {value!r} is out of range",
                                  "it is the fraction of the original to keep, e.g. 0.5")
        if self.latency_ms is not None and not float(self.latency_ms) > 0:
            raise RecipeError(f"latency_ms {self.latency_ms!r} must be positive", "e.g. latency_ms=2.5")
        if isinstance(self.latency_threads, bool) or not isinstance(self.latency_threads, int) \
                or self.latency_threads < 1:
            raise RecipeError(f"latency_threads {self.latency_threads!r} is not a positive integer", "e.g. 1")
        if self.latency_mode not in ("int8", "float32"):
            raise RecipeError(f"unknown latency_mode {self.latency_mode!r}", "use 'int8' or 'float32'")
        if isinstance(self.iterative_steps, bool) or not isinstance(self.iterative_steps, int) \
                or self.iterative_steps < 1:
            raise RecipeError(f"iterative_steps {self.iterative_steps!r} is not a positive integer", "e.g. 3")

    @property
    def budget(self) -> str:
        """Which budget drives pruning: "ratio", "macs", "params" or "latency"."""
        if self.macs_target is not None:
            return "macs"
        if self.params_target is not None:
            return "params"
        if self.latency_ms is not None:
            return "latency"
        return "ratio"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["protect"] = list(self.protect)
        return {"version": CONFIG_VERSION, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChannelConfig":
        data = dict(data)
        version = data.pop("version", None)
        if version != CONFIG_VERSION:
            raise SchemaError(f"channel config version {version!r} is not supported",
                              f"this edgeprune reads version {CONFIG_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SchemaError(f"unknown channel config key {unknown[0]!r}", _closest(unknown[0], names))
        return cls(**data)

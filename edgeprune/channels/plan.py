"""PruningPlan: which channels each group keeps, as versioned JSON that can be applied again to the
same architecture (`apply_plan`)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from edgeprune.channels.graph import ChannelGraph
from edgeprune.errors import InputFileError, OutputError, PruningError, SchemaError

PLAN_SCHEMA = "edgeprune.channel_plan"
PLAN_VERSION = 1


@dataclasses.dataclass(frozen=True)
class GroupPlan:
    key: str  # first producer port, e.g. "block_1_expand:out"
    size: int  # channels before
    kept: tuple[int, ...]  # kept channel indices, ascending
    ports: tuple[str, ...] = ()  # every layer port in the group, for people reading the file

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "kept": list(self.kept), "ports": list(self.ports)}


@dataclasses.dataclass(frozen=True)
class PruningPlan:
    model_name: str
    groups: tuple[GroupPlan, ...]
    protect: tuple[str, ...] = ()
    config: dict | None = None  # the ChannelConfig that made it, for the record
    notes: dict | None = None  # budget reached, criterion, steps

    @classmethod
    def from_kept(cls, graph: ChannelGraph, kept: dict[int, np.ndarray], config: dict | None = None,
                  notes: dict | None = None) -> "PruningPlan":
        groups = []
        for g in graph.groups:
            k = np.asarray(kept.get(g.root, np.arange(g.size)), dtype=np.int64)
            groups.append(GroupPlan(g.key, g.size, tuple(int(i) for i in np.sort(k)), tuple(g.ports)))
        return cls(graph.trace.name, tuple(groups), tuple(graph.protect), config, notes)

    @property
    def channels_before(self) -> int:
        return sum(g.size for g in self.groups)

    @property
    def channels_after(self) -> int:
        return sum(len(g.kept) for g in self.groups)

    def kept_for(self, graph: ChannelGraph) -> dict[int, np.ndarray]:
        """Kept indices by group root of `graph`; refuses a graph whose groups differ from the plan's."""
        have = {g.key: g for g in graph.groups}
        want = {g.key: g for g in self.groups}
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        if missing or extra:
            what = (f"the plan's group {missing[0]!r} is not in the model" if missing
                    else f"the model's group {extra[0]!r} is not in the plan")
            raise PruningError(f"plan for {self.model_name!r} does not fit model {graph.trace.name!r}: {what} "
                               f"({len(missing)} missing, {len(extra)} extra)",
                               "apply a plan to the architecture it was made for, with the same protect patterns")
        kept = {}
        for key, gp in want.items():
            g = have[key]
            if g.size != gp.size:
                raise PruningError(f"group {key!r} has {g.size} channels in the model but {gp.size} in the plan",
                                   "apply a plan to the architecture it was made for")
            k = np.asarray(gp.kept, dtype=np.int64)
            if len(k) == 0 or k.min() < 0 or k.max() >= g.size or len(np.unique(k)) != len(k):
                raise PruningError(f"group {key!r} of the plan keeps invalid indices",
                                   f"kept indices must be distinct, in [0, {g.size}), and at least one")
            kept[g.root] = k
        return kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "version": PLAN_VERSION,
            "model_name": self.model_name,
            "protect": list(self.protect),
            "config": self.config,
            "notes": self.notes,
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
            "groups": [g.to_dict() for g in self.groups],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PruningPlan":
        if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
            raise SchemaError("this is not an edgeprune channel plan", f"expected schema {PLAN_SCHEMA!r}")
        if data.get("version") != PLAN_VERSION:
            raise SchemaError(f"channel plan version {data.get('version')!r} is not supported",
                              f"this edgeprune reads version {PLAN_VERSION}; re-create the plan")
        try:
            groups = tuple(GroupPlan(str(g["key"]), int(g["size"]), tuple(int(i) for i in g["kept"]),
                                     tuple(g.get("ports", ()))) for g in data["groups"])
            return cls(str(data["model_name"]), groups, tuple(data.get("protect", ())), data.get("config"),
                       data.get("notes"))
        except (KeyError, TypeError, ValueError) as e:
            raise SchemaError(f"channel plan is malformed ({type(e).__name__}: {e})",
                              "re-create it with edgeprune") from None

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise OutputError(f"{path} exists", "choose another path or pass overwrite=True")
        from edgeprune.runfolder import write_json_atomic  # one atomic writer, with the usual permissions

        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PruningPlan":
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as e:
            raise InputFileError(f"cannot read channel plan {os.fspath(path)}: {e.strerror}",
                                 "check the path") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"channel plan {os.fspath(path)} is not JSON ({e.msg}, line {e.lineno})",
                              "re-create it with edgeprune") from None
        return cls.from_dict(data)

"""Structured channel pruning: remove whole filters from tf_keras models and rebuild a smaller network.

    from edgeprune.channels import ChannelConfig, prune_channels, apply_plan, PruningPlan
    result = prune_channels(model, ChannelConfig(ratio=0.4, criterion="l2", round_to=8))
    result.plan.save("plan.json")
    same = apply_plan(model, PruningPlan.load("plan.json"))
"""

from edgeprune.channels.config import ChannelConfig
from edgeprune.channels.graph import ChannelGraph, Group
from edgeprune.channels.plan import PruningPlan
from edgeprune.channels.prune import ChannelResult, apply_plan, prune_channels

__all__ = ["ChannelConfig", "ChannelGraph", "ChannelResult", "Group", "PruningPlan", "apply_plan",
           "prune_channels"]

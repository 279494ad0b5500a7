"""The wireless fog network: tiers, clusters, D2D graphs, channel rates, routing, mobility, costs."""

from hffm_env.network.config import (
    ChannelConfig,
    ComputeConfig,
    LinkConfig,
    LinkFaultConfig,
    MobilityConfig,
    NetworkConfig,
    TierConfig,
)
from hffm_env.network.fog import FogNetwork
from hffm_env.network.ledger import CostTotals, Ledger, RoundCost
from hffm_env.network.routing import RouteTree, shortest_path_tree
from hffm_env.network.topology import Topology

__all__ = [
    "ChannelConfig",
    "ComputeConfig",
    "CostTotals",
    "FogNetwork",
    "Ledger",
    "LinkConfig",
    "LinkFaultConfig",
    "MobilityConfig",
    "NetworkConfig",
    "RoundCost",
    "RouteTree",
    "TierConfig",
    "Topology",
    "shortest_path_tree",
]

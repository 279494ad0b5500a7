"""The operations of a federated round, as plain records a caller (or a policy) builds.

:meth:`Federation.run_round <hffm_env.federation.core.Federation.run_round>` executes
a list of them in their phase order: relays and role changes before local
training (a relayed module is fine-tuned in the same round), aggregations after
it, inference last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCOPES = ("d2d", "edge", "cloud")
PATHS = {"d2d": ("gather", "gossip"), "edge": ("direct", "d2d"), "cloud": ("direct", "d2d", "star")}
RELAY_PATHS = ("d2d", "edge", "cloud")
OFFLOAD_TARGETS = ("local", "peer", "edge", "cloud")


@dataclass(frozen=True)
class Aggregate:
    """Aggregate module ``kinds`` at ``scope`` in ``clusters`` (None: all).

    ``scope``: ``d2d`` (cluster consensus among the devices), ``edge`` (the cluster's
    edge server), ``cloud`` (through the edge servers to the top tier). ``path``:
    for ``d2d``, ``gather`` (to the cluster head over multi-hop routes and back) or
    ``gossip`` (``gossip_rounds`` of neighbour averaging); for ``edge``/``cloud``,
    ``direct`` (each device uploads) or ``d2d`` (the cluster head gathers and
    uploads one aggregate); ``cloud`` also takes ``star`` (every device straight to
    the top tier, edge copies untouched). ``rule`` None uses the config's. With
    ``path="d2d"`` at edge or cloud scope, ``d2d_clusters`` (None: all of them) names
    the clusters whose head gathers and uploads; the others upload directly.
    """

    kinds: tuple[str, ...]
    scope: str
    path: str | None = None
    clusters: tuple[int, ...] | None = None
    rule: str | None = None
    gossip_rounds: int | None = None
    d2d_clusters: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Relay:
    """Copy module ``kind`` from holder ``source`` (any node) to device ``target``
    over ``path``: ``d2d`` (multi-hop inside a cluster), ``edge`` (up to the lowest
    common server, and down), ``cloud`` (up to the top tier and down)."""

    kind: str
    source: int
    target: int
    path: str


@dataclass(frozen=True)
class Specialize:
    """Make device ``node`` a specialist of module ``kind`` (``revoke=True``: end the role)."""

    node: int
    kind: str
    revoke: bool = False


@dataclass(frozen=True)
class Offload:
    """Where each of this round's pending inference requests runs (one of
    ``OFFLOAD_TARGETS`` per request, in request order)."""

    targets: tuple[str, ...]

    @classmethod
    def from_codes(cls, codes) -> "Offload":
        return cls(tuple(OFFLOAD_TARGETS[int(c)] for c in np.asarray(codes).ravel()))

"""The fog-network simulator: topology + per-round channel state + cost primitives.

``FogNetwork`` is the one object the federation layer talks to about costs. Each
round it redraws fading (and moves devices, when mobility is on) and computes the
rate of every link at once. Its ``charge_*`` methods price a transfer pattern for a
payload and write the rows into a :class:`~hffm_env.network.ledger.Ledger`.

A *payload* is a mapping ``module name → bytes`` (e.g. ``{"adapters": 5.2e6,
"heads": 0.8e6}``). A node sends its modules back to back; the transfer's time and
energy are split over the modules in proportion to their bytes, so per-module totals
add up to the transfer's.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from hffm_env.network.channel import draw_fading, link_gain, link_rate_bps, transfer_cost
from hffm_env.network.config import LinkConfig, NetworkConfig
from hffm_env.network.ledger import Ledger
from hffm_env.network.routing import RouteTree, hop_direction, shortest_path_tree, sum_to_root
from hffm_env.network.topology import Topology

Payload = Mapping[str, float]

# Every charge_* method takes ``step`` and ``group`` (see the Ledger's combining rule):
# D2D operations group their rows by cluster on their own; for the others the caller
# passes a group (e.g. the cluster of each node) when parts of the network proceed
# independently inside one stage.


def _check_payload(payload: Payload) -> tuple[list[str], np.ndarray]:
    if not isinstance(payload, Mapping) or not payload:
        raise ValueError(f"payload must be a non-empty mapping module -> bytes, got {payload!r}")
    names = list(payload)
    sizes = np.array([payload[m] for m in names], dtype=np.float64)
    if not np.all(np.isfinite(sizes)) or np.any(sizes < 0):
        raise ValueError(f"payload sizes must be finite and >= 0 bytes, got {dict(payload)!r}")
    return names, sizes


class FogNetwork:
    """Topology, channel and cost primitives of one seeded fog network.

    Parameters
    ----------
    config:
        The network's :class:`NetworkConfig`.
    rng:
        The generator every draw comes from (placement, fading, motion, head choice).
    """

    def __init__(self, config: NetworkConfig, rng: np.random.Generator):
        if not isinstance(config, NetworkConfig):
            raise TypeError(f"config must be a NetworkConfig, got {type(config).__name__}")
        self.config = config
        self.rng = rng
        self.topology = Topology(config, rng)
        self.round_index = -1
        self._routes: dict[tuple[float, bool], RouteTree] = {}
        self.uplink_gain = np.zeros(0)
        self.uplink_rate_bps = np.zeros(0)
        self.direct_rate_bps = np.zeros(0)
        self.d2d_rate_bps = np.zeros(0)

    # ------------------------------------------------------------------ round state
    def new_round(self) -> None:
        """Advance to the next round: move devices (after the first round), redraw fading, recompute rates."""
        self.round_index += 1
        if self.round_index > 0:
            self.topology.move(self.rng)
        topo, cfg = self.topology, self.config
        ch = cfg.channel
        g = topo.d2d
        if ch.fading_per_round:
            up_fading = draw_fading(self.rng, topo.n_nodes, ch)
            direct_fading = draw_fading(self.rng, topo.n_devices, ch)
            # One draw per direction: the gather and the broadcast phase of a round are
            # seconds apart, longer than a coherence time.
            d2d_fading = draw_fading(self.rng, (g.n_edges, 2), ch)
        else:
            up_fading, direct_fading, d2d_fading = topo.uplink_fading, topo.direct_fading, g.fading
        self.uplink_gain = link_gain(ch, topo.uplink_distance_m(), topo.uplink_shadowing_db, up_fading)
        self.uplink_rate_bps = np.full(topo.n_nodes, np.nan)
        for k, tier in enumerate(cfg.tiers[:-1]):
            sl = topo.tier_slice(k)
            self.uplink_rate_bps[sl] = link_rate_bps(tier.uplink, ch, self.uplink_gain[sl])
        if cfg.direct_uplink is not None:
            d = topo.distance_m(np.arange(topo.n_devices), np.full(topo.n_devices, topo.top))
            self.direct_rate_bps = link_rate_bps(cfg.direct_uplink, ch,
                                                 link_gain(ch, d, topo.direct_shadowing_db, direct_fading))
        self.d2d_rate_bps = link_rate_bps(cfg.d2d, ch, link_gain(ch, g.distance_m[:, None], g.shadowing_db[:, None],
                                                                 d2d_fading))
        self._routes = {}

    def _require_round(self) -> None:
        if self.round_index < 0:
            raise RuntimeError("FogNetwork has no channel state yet: call new_round() first")

    def routes(self, payload_bytes: float, toward_heads: bool = True) -> RouteTree:
        """Shortest D2D paths to (``toward_heads``) or from the cluster heads, weighted by
        this round's transfer time of the payload in that direction."""
        self._require_round()
        key = (float(payload_bytes), bool(toward_heads))
        if key not in self._routes:
            hop_s, _ = transfer_cost(self.config.d2d, 8.0 * key[0], self.d2d_rate_bps)
            self._routes[key] = shortest_path_tree(self.topology.n_devices, self.topology.d2d.edges, hop_s,
                                                   self.topology.heads, toward_heads=toward_heads)
        return self._routes[key]

    # ------------------------------------------------------------------ charging
    @staticmethod
    def _split(ledger: Ledger, stage: str, link: str, payload: Payload, src, dst, seconds, joules,
               lane=None, copies=None, group=None, step: str = "") -> None:
        names, sizes = _check_payload(payload)
        total = sizes.sum()
        copies = 1.0 if copies is None else np.asarray(copies, dtype=np.float64)
        for name, size in zip(names, sizes):
            share = size / total if total > 0 else 0.0
            ledger.charge(stage=stage, module=name, link=link, src=src, dst=dst, lane=lane,
                          group=0 if group is None else group, step=step,
                          nbytes=size * copies, seconds=seconds * share, joules=joules * share)

    @staticmethod
    def _price(link: LinkConfig, payload: Payload, rate_bps: np.ndarray, copies=None):
        """Seconds and joules of sending the whole payload (times ``copies``) at ``rate_bps``."""
        _, sizes = _check_payload(payload)
        mult = 1.0 if copies is None else np.asarray(copies, dtype=np.float64)
        return transfer_cost(link, 8.0 * sizes.sum() * mult, rate_bps)

    def _tier_of(self, nodes: np.ndarray) -> int:
        tiers = np.unique(self.topology.tier[nodes])
        if len(tiers) != 1:
            raise ValueError(f"nodes must all be in one tier, got tiers {tiers.tolist()}")
        return int(tiers[0])

    def _link_name(self, k_from: int, k_to: int) -> str:
        return f"{self.config.tiers[k_from].name}->{self.config.tiers[k_to].name}"

    def charge_upload(self, ledger: Ledger, stage: str, payload: Payload, nodes, copies=None, *,
                      group=None, step: str = "") -> np.ndarray:
        """Every node in ``nodes`` (one tier) sends the payload to its parent, in parallel.

        ``copies`` (per node) multiplies the bytes, for a node that forwards its
        children's modules without aggregating them. Returns the per-node seconds.
        """
        self._require_round()
        nodes = np.asarray(nodes, dtype=np.int64)
        if nodes.size == 0:
            return np.zeros(0)
        k = self._tier_of(nodes)
        if k == self.config.n_tiers - 1:
            raise ValueError(f"tier {self.config.tiers[k].name!r} is the top tier: it has no uplink")
        seconds, joules = self._price(self.config.tiers[k].uplink, payload, self.uplink_rate_bps[nodes], copies)
        self._split(ledger, stage, self._link_name(k, k + 1), payload, nodes, self.topology.parent[nodes],
                    seconds, joules, copies=copies, group=group, step=step)
        return seconds

    def charge_download(self, ledger: Ledger, stage: str, payload: Payload, nodes, *, group=None,
                        step: str = "") -> np.ndarray:
        """Each node's parent sends it the payload; one transfer per child, in parallel
        (separate channels), over the tier's downlink class at this round's channel."""
        self._require_round()
        nodes = np.asarray(nodes, dtype=np.int64)
        if nodes.size == 0:
            return np.zeros(nodes.size)
        k = self._tier_of(nodes)
        # The downlink sees the uplink's channel gain (reciprocity) with its own power and bandwidth.
        down: LinkConfig = self.config.tiers[k].downlink_link
        seconds, joules = self._price(down, payload, link_rate_bps(down, self.config.channel, self.uplink_gain[nodes]))
        parents = self.topology.parent[nodes]
        self._split(ledger, stage, self._link_name(k + 1, k), payload, parents, nodes, seconds, joules, lane=nodes,
                    group=group, step=step)
        return seconds

    def charge_direct_upload(self, ledger: Ledger, stage: str, payload: Payload, devices, *, group=None,
                             step: str = "") -> np.ndarray:
        """Devices send the payload straight to the top tier over ``direct_uplink`` (star FL)."""
        self._require_round()
        if self.config.direct_uplink is None:
            raise ValueError("direct_uplink is None in this NetworkConfig: star traffic must go up the hierarchy "
                             "(charge_upload tier by tier with copies)")
        devices = np.asarray(devices, dtype=np.int64)
        seconds, joules = self._price(self.config.direct_uplink, payload, self.direct_rate_bps[devices])
        link = f"{self.config.tiers[0].name}->{self.config.tiers[-1].name}"
        self._split(ledger, stage, link, payload, devices, np.full(devices.size, self.topology.top), seconds, joules,
                    group=group, step=step)
        return seconds

    def charge_direct_download(self, ledger: Ledger, stage: str, payload: Payload, devices, *, group=None,
                               step: str = "") -> np.ndarray:
        """The top tier sends the payload straight to devices over ``direct_uplink``'s class."""
        self._require_round()
        devices = np.asarray(devices, dtype=np.int64)
        if devices.size == 0:
            return np.zeros(devices.size)
        if self.config.direct_uplink is None:
            raise ValueError("direct_uplink is None in this NetworkConfig")
        seconds, joules = self._price(self.config.direct_uplink, payload, self.direct_rate_bps[devices])
        link = f"{self.config.tiers[-1].name}->{self.config.tiers[0].name}"
        self._split(ledger, stage, link, payload, np.full(devices.size, self.topology.top), devices, seconds,
                    joules, lane=devices, group=group, step=step)
        return seconds

    def _d2d_members(self, clusters) -> np.ndarray:
        """Devices of ``clusters`` (all clusters when None)."""
        if clusters is None:
            return np.arange(self.topology.n_devices)
        return np.nonzero(np.isin(self.topology.cluster, np.asarray(clusters, dtype=np.int64)))[0]

    def charge_d2d_gather(self, ledger: Ledger, stage: str, payload: Payload, clusters=None, *,
                          step: str = "") -> np.ndarray:
        """Every non-head member of ``clusters`` sends the payload to its head over its
        shortest multi-hop D2D path (relays forward without aggregating).

        One row per member: its path time, and the energy of every hop of its path.
        Members with no path to the head send nothing. Returns per-member seconds.
        """
        _, sizes = _check_payload(payload)
        nbytes = float(sizes.sum())
        tree = self.routes(nbytes)
        members = self._d2d_members(clusters)
        senders = members[tree.reached[members] & (tree.next_hop[members] >= 0)]
        _, hop_j = transfer_cost(self.config.d2d, 8.0 * nbytes, self.d2d_rate_bps)
        has = tree.hop_edge >= 0
        own_hop_j = np.zeros(self.topology.n_devices)
        v = np.nonzero(has)[0]
        own_hop_j[v] = hop_j[tree.hop_edge[v], hop_direction(self.topology.d2d.edges, v, tree.next_hop[v])]
        path_j = sum_to_root(tree.next_hop, own_hop_j)
        self._split(ledger, stage, "d2d", payload, senders, tree.root[senders], tree.path_s[senders],
                    path_j[senders], group=self.topology.cluster[senders], step=step)
        return tree.path_s[senders]

    def charge_d2d_broadcast(self, ledger: Ledger, stage: str, payload: Payload, clusters=None, *,
                             step: str = "") -> np.ndarray:
        """Heads send the payload to their members down the union of the shortest
        head-to-member paths (a tree): each tree edge carries it once. One row per
        receiving member: its path time as latency, the energy of the one hop that
        reaches it."""
        _, sizes = _check_payload(payload)
        nbytes = float(sizes.sum())
        tree = self.routes(nbytes, toward_heads=False)
        members = self._d2d_members(clusters)
        receivers = members[tree.reached[members] & (tree.next_hop[members] >= 0)]
        _, hop_j = transfer_cost(self.config.d2d, 8.0 * nbytes, self.d2d_rate_bps)
        senders = tree.next_hop[receivers]
        recv_j = hop_j[tree.hop_edge[receivers], hop_direction(self.topology.d2d.edges, senders, receivers)]
        self._split(ledger, stage, "d2d", payload, senders, receivers, tree.path_s[receivers], recv_j,
                    lane=receivers, group=self.topology.cluster[receivers], step=step)
        return tree.path_s[receivers]

    def charge_compute(self, ledger: Ledger, stage: str, module: str, devices, n_samples, epochs: float = 1.0, *,
                       group=None, step: str = ""):
        """Local training of ``devices`` on ``n_samples`` each for ``epochs`` passes:
        ``c·n·E/f`` seconds and ``κ·c·n·E·f²`` joules per device, in parallel."""
        self._require_round()
        devices = np.asarray(devices, dtype=np.int64)
        comp = self.config.compute
        n = np.broadcast_to(np.asarray(n_samples, dtype=np.float64), devices.shape)
        if np.any(n < 0) or not np.isfinite(epochs) or epochs < 0:
            raise ValueError("n_samples and epochs must be >= 0")
        f = self.topology.cpu_freq_hz[devices]
        cycles = comp.cycles_per_sample * n * epochs
        seconds = cycles / f
        joules = comp.kappa * cycles * f ** 2
        ledger.charge(stage=stage, module=module, link="compute", src=devices, dst=devices, nbytes=0.0,
                      seconds=seconds, joules=joules, group=0 if group is None else group, step=step)
        return seconds

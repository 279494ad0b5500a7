"""The fog-network simulator: topology + per-round channel state + cost primitives.

``FogNetwork`` is the one object the federation layer talks to about costs. Each
round it redraws fading (and moves devices, when mobility is on) and computes the
rate of every link at once. Its ``charge_*`` methods (:mod:`hffm_env.network.charging`)
price a transfer pattern for a payload and write the rows into a
:class:`~hffm_env.network.ledger.Ledger`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hffm_env.network.channel import draw_fading, link_gain, link_rate_bps, transfer_cost
from hffm_env.network.charging import ChargingMixin
from hffm_env.network.config import LinkConfig, NetworkConfig
from hffm_env.network.routing import RouteTree, shortest_path_tree
from hffm_env.network.topology import Topology


class FogNetwork(ChargingMixin):
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
        # retransmissions draw from their own stream (only when there is loss): how many
        # transfers a policy makes must not change the channel later rounds see
        self.loss_rng = (
            np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0]) if config.faults.packet_loss > 0 else None
        )
        self.topology = Topology(config, rng)
        self.round_index = -1
        self._routes: dict[tuple[float, bool], RouteTree] = {}
        self.uplink_gain = np.zeros(0)
        self.uplink_rate_bps = np.zeros(0)
        self.direct_rate_bps = np.zeros(0)
        self.d2d_rate_bps = np.zeros(0)
        self.d2d_up = np.zeros(0, dtype=bool)
        self.relaying = np.zeros(0, dtype=bool)
        self.retransmitted_packets = 0
        self.retransmitted_bytes = 0.0

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
            self.direct_rate_bps = link_rate_bps(
                cfg.direct_uplink, ch, link_gain(ch, d, topo.direct_shadowing_db, direct_fading)
            )
        self.d2d_rate_bps = link_rate_bps(
            cfg.d2d, ch, link_gain(ch, g.distance_m[:, None], g.shadowing_db[:, None], d2d_fading)
        )
        # A failed link carries nothing this round (rate 0: infinite hop time, so routes avoid it).
        self.d2d_up = np.ones(g.n_edges, dtype=bool)
        if cfg.faults.d2d_failure > 0:
            self.d2d_up = self.rng.random(g.n_edges) >= cfg.faults.d2d_failure
            self.d2d_rate_bps[~self.d2d_up] = 0.0
        self.retransmitted_packets = 0
        self.retransmitted_bytes = 0.0
        self.relaying = np.ones(topo.n_devices, dtype=bool)
        self._routes = {}
        self._components = None

    def stop_relaying(self, devices) -> None:
        """This round's gather and broadcast trees (:meth:`routes`) route nobody's
        traffic through ``devices`` (devices that dropped out): each is at most the end
        of its own path, and a head among them reaches no one. Until the next round."""
        self._require_round()
        devices = np.asarray(devices, dtype=np.int64).ravel()
        bad = devices[(devices < 0) | (devices >= self.topology.n_devices)]
        if bad.size:
            raise ValueError(f"devices must be device ids in [0, {self.topology.n_devices - 1}], got {bad.tolist()}")
        if devices.size and self.relaying[devices].any():
            self.relaying[devices] = False
            self._routes = {}

    def d2d_components(self, working: bool = True) -> np.ndarray:
        """Connected component of every device over this round's working D2D links, or
        (``working=False``) over every link of the graph, down or not."""
        if not working:
            return self._components_of(self.topology.d2d.edges)
        self._require_round()
        if self._components is None:
            self._components = self._components_of(self.topology.d2d.edges[self.d2d_up])
        return self._components

    def _components_of(self, edges: np.ndarray) -> np.ndarray:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.topology.n_devices
        e = edges if len(edges) else np.zeros((0, 2), dtype=np.int64)
        g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        return connected_components(g, directed=False)[1]

    def reaches_head(self) -> np.ndarray:
        """Which devices have a D2D path to (and from) their cluster head this round."""
        return self._tree(1.0, True).reached

    def _arq(self, link: LinkConfig, nbytes, shape=None) -> np.ndarray:
        """Transmissions per packet sent (>= 1) of each transfer of ``nbytes`` under
        packet loss with retransmission until delivery: ``n`` packets need
        ``n + NegBin(n, 1 - p)`` sends. All ones on wired links or without loss."""
        p = self.config.faults.packet_loss
        shape = np.shape(nbytes) if shape is None else shape
        if p == 0 or link.kind != "wireless":
            return np.ones(shape)
        nbytes = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), shape)
        packets = self._packets(nbytes)
        extra = self.loss_rng.negative_binomial(packets.astype(np.int64), 1.0 - p)
        return (packets + extra) / packets

    def _packets(self, nbytes) -> np.ndarray:
        return np.maximum(np.ceil(np.asarray(nbytes, dtype=np.float64) / self.config.faults.packet_bytes), 1.0)

    def _count_retransmissions(self, extra_bytes, extra_packets) -> None:
        """Add resent bytes (as the ledger counts them) and resent packets (as drawn)."""
        self.retransmitted_bytes += float(np.sum(extra_bytes))
        self.retransmitted_packets += int(np.round(np.sum(extra_packets)))

    def _require_round(self) -> None:
        if self.round_index < 0:
            raise RuntimeError("FogNetwork has no channel state yet: call new_round() first")

    def routes(self, payload_bytes: float, toward_heads: bool = True) -> RouteTree:
        """Shortest D2D paths to (``toward_heads``) or from the cluster heads, weighted by
        this round's transfer time of the payload in that direction, relayed only by
        devices still relaying (:meth:`stop_relaying`)."""
        tree = self._tree(payload_bytes, toward_heads)
        return tree if self.config.d2d.fixed_latency_s > 0 else replace(tree, path_s=tree.path_s * float(payload_bytes))

    def _tree(self, payload_bytes: float, toward_heads: bool) -> RouteTree:
        """The cached tree behind :meth:`routes`: without a fixed per-hop latency every
        hop time scales with the payload, so one tree (for one byte) serves every
        payload and only its path times need scaling."""
        self._require_round()
        key = (float(payload_bytes) if self.config.d2d.fixed_latency_s > 0 else 1.0, bool(toward_heads))
        if key not in self._routes:
            hop_s, _ = transfer_cost(self.config.d2d, 8.0 * key[0], self.d2d_rate_bps)
            self._routes[key] = shortest_path_tree(
                self.topology.n_devices,
                self.topology.d2d.edges,
                hop_s,
                self.topology.heads,
                toward_heads=toward_heads,
                transit=self.relaying,
            )
        return self._routes[key]

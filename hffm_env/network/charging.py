"""The cost primitives of :class:`~hffm_env.network.fog.FogNetwork`: its ``charge_*``
methods price a transfer pattern (uploads, downloads, direct links, D2D gathers,
broadcasts and paths, compute) for a payload on the round's channel and write the
rows into a :class:`~hffm_env.network.ledger.Ledger`.

A *payload* is a mapping ``module name → bytes`` (e.g. ``{"adapters": 5.2e6,
"heads": 0.8e6}``). A node sends its modules back to back; the transfer's time and
energy are split over the modules in proportion to their bytes, so per-module totals
add up to the transfer's.

Every charge_* method takes ``step`` and ``group`` (see the Ledger's combining rule):
D2D operations group their rows by cluster on their own; for the others the caller
passes a group (e.g. the cluster of each node) when parts of the network proceed
independently inside one stage.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from hffm_env.network.channel import link_rate_bps, transfer_cost
from hffm_env.network.config import LinkConfig
from hffm_env.network.ledger import Ledger
from hffm_env.network.routing import RouteTree, edge_index, hop_direction, shortest_path_tree, sum_to_root

Payload = Mapping[str, float]


def _check_payload(payload: Payload) -> tuple[list[str], np.ndarray]:
    if not isinstance(payload, Mapping) or not payload:
        raise ValueError(f"payload must be a non-empty mapping module -> bytes, got {payload!r}")
    names = list(payload)
    sizes = np.array([payload[m] for m in names], dtype=np.float64)
    # min >= 0 is False for NaN and negative sizes, max < inf for +inf
    if not (sizes.min() >= 0 and sizes.max() < np.inf):
        raise ValueError(f"payload sizes must be finite and >= 0 bytes, got {dict(payload)!r}")
    return names, sizes


class ChargingMixin:
    """The ``charge_*`` methods of :class:`~hffm_env.network.fog.FogNetwork` (it holds
    the topology, rates and route trees they read)."""

    @staticmethod
    def _split(
        ledger: Ledger,
        stage: str,
        link: str,
        payload: Payload,
        src,
        dst,
        seconds,
        joules,
        lane=None,
        copies=None,
        group=None,
        step: str = "",
    ) -> None:
        names, sizes = _check_payload(payload)
        total = sizes.sum()
        copies = 1.0 if copies is None else np.asarray(copies, dtype=np.float64)
        for name, size in zip(names, sizes):
            share = size / total if total > 0 else 0.0
            ledger.charge(
                stage=stage,
                module=name,
                link=link,
                src=src,
                dst=dst,
                lane=lane,
                group=0 if group is None else group,
                step=step,
                nbytes=size * copies,
                seconds=seconds * share,
                joules=joules * share,
            )

    def _price(self, link: LinkConfig, payload: Payload, rate_bps: np.ndarray, copies=None):
        """Seconds and joules of sending the whole payload (times ``copies``) at
        ``rate_bps``, retransmissions included, and the bytes-on-air multiplier per transfer."""
        _, sizes = _check_payload(payload)
        mult = 1.0 if copies is None else np.asarray(copies, dtype=np.float64)
        shape = np.shape(rate_bps) if copies is None else np.broadcast_shapes(np.shape(mult), np.shape(rate_bps))
        nbytes = np.broadcast_to(sizes.sum() * mult, shape)
        factor = self._arq(link, nbytes)
        if self.config.faults.packet_loss > 0:
            self._count_retransmissions(nbytes * (factor - 1.0), self._packets(nbytes) * (factor - 1.0))
        seconds, joules = transfer_cost(link, 8.0 * nbytes * factor, rate_bps)
        return seconds, joules, mult * factor

    def _tier_of(self, nodes: np.ndarray) -> int:
        tiers = self.topology.tier[nodes]
        if tiers.min() != tiers.max():
            raise ValueError(f"nodes must all be in one tier, got tiers {np.unique(tiers).tolist()}")
        return int(tiers[0])

    def _link_name(self, k_from: int, k_to: int) -> str:
        return f"{self.config.tiers[k_from].name}->{self.config.tiers[k_to].name}"

    def charge_upload(
        self, ledger: Ledger, stage: str, payload: Payload, nodes, copies=None, *, group=None, step: str = ""
    ) -> np.ndarray:
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
        seconds, joules, sent = self._price(self.config.tiers[k].uplink, payload, self.uplink_rate_bps[nodes], copies)
        self._split(
            ledger,
            stage,
            self._link_name(k, k + 1),
            payload,
            nodes,
            self.topology.parent[nodes],
            seconds,
            joules,
            copies=sent,
            group=group,
            step=step,
        )
        return seconds

    def charge_download(
        self, ledger: Ledger, stage: str, payload: Payload, nodes, *, group=None, step: str = ""
    ) -> np.ndarray:
        """Each node's parent sends it the payload; one transfer per child, in parallel
        (separate channels), over the tier's downlink class at this round's channel."""
        self._require_round()
        nodes = np.asarray(nodes, dtype=np.int64)
        if nodes.size == 0:
            return np.zeros(nodes.size)
        k = self._tier_of(nodes)
        # The downlink sees the uplink's channel gain (reciprocity) with its own power and bandwidth.
        down: LinkConfig = self.config.tiers[k].downlink_link
        seconds, joules, sent = self._price(
            down, payload, link_rate_bps(down, self.config.channel, self.uplink_gain[nodes])
        )
        parents = self.topology.parent[nodes]
        self._split(
            ledger,
            stage,
            self._link_name(k + 1, k),
            payload,
            parents,
            nodes,
            seconds,
            joules,
            lane=nodes,
            copies=sent,
            group=group,
            step=step,
        )
        return seconds

    def charge_direct_upload(
        self, ledger: Ledger, stage: str, payload: Payload, devices, *, group=None, step: str = ""
    ) -> np.ndarray:
        """Devices send the payload straight to the top tier over ``direct_uplink`` (star FL)."""
        self._require_round()
        if self.config.direct_uplink is None:
            raise ValueError(
                "direct_uplink is None in this NetworkConfig: star traffic must go up the hierarchy "
                "(charge_upload tier by tier with copies)"
            )
        devices = np.asarray(devices, dtype=np.int64)
        seconds, joules, sent = self._price(self.config.direct_uplink, payload, self.direct_rate_bps[devices])
        link = f"{self.config.tiers[0].name}->{self.config.tiers[-1].name}"
        self._split(
            ledger,
            stage,
            link,
            payload,
            devices,
            np.full(devices.size, self.topology.top),
            seconds,
            joules,
            copies=sent,
            group=group,
            step=step,
        )
        return seconds

    def charge_direct_download(
        self, ledger: Ledger, stage: str, payload: Payload, devices, *, group=None, step: str = ""
    ) -> np.ndarray:
        """The top tier sends the payload straight to devices over ``direct_uplink``'s class."""
        self._require_round()
        devices = np.asarray(devices, dtype=np.int64)
        if devices.size == 0:
            return np.zeros(devices.size)
        if self.config.direct_uplink is None:
            raise ValueError("direct_uplink is None in this NetworkConfig")
        seconds, joules, sent = self._price(self.config.direct_uplink, payload, self.direct_rate_bps[devices])
        link = f"{self.config.tiers[-1].name}->{self.config.tiers[0].name}"
        self._split(
            ledger,
            stage,
            link,
            payload,
            np.full(devices.size, self.topology.top),
            devices,
            seconds,
            joules,
            lane=devices,
            copies=sent,
            group=group,
            step=step,
        )
        return seconds

    def _d2d_members(self, clusters, devices=None) -> np.ndarray:
        """Devices of ``clusters`` (all clusters when None), restricted to ``devices`` when given."""
        if clusters is None:
            members = np.arange(self.topology.n_devices)
        else:
            members = np.nonzero(np.isin(self.topology.cluster, np.asarray(clusters, dtype=np.int64)))[0]
        if devices is not None:
            members = np.intersect1d(members, np.asarray(devices, dtype=np.int64))
        return members

    def charge_d2d_gather(
        self, ledger: Ledger, stage: str, payload: Payload, clusters=None, *, devices=None, step: str = ""
    ) -> np.ndarray:
        """Every non-head member of ``clusters`` (only those in ``devices``, when given)
        sends the payload to its head over its shortest multi-hop D2D path (relays
        forward without aggregating).

        One row per member: its path time, and the energy of every hop of its path.
        Members with no path to the head send nothing. Under packet loss each hop of
        the tree draws one retransmission factor for the call (the payloads crossing
        it share the link's luck). Returns per-member seconds.
        """
        _, sizes = _check_payload(payload)
        nbytes = float(sizes.sum())
        tree = self.routes(nbytes)
        members = self._d2d_members(clusters, devices)
        senders = members[tree.reached[members] & (tree.next_hop[members] >= 0)]
        hop_s, hop_j = transfer_cost(self.config.d2d, 8.0 * nbytes, self.d2d_rate_bps)
        v = np.nonzero(tree.hop_edge >= 0)[0]
        col = (tree.hop_edge[v], hop_direction(self.topology.d2d.edges, v, tree.next_hop[v]))
        fac = self._arq(self.config.d2d, nbytes, (v.size,))
        path_j = self._along_paths(tree, v, hop_j[col] * fac)
        path_s, sent = tree.path_s, np.ones(self.topology.n_devices)
        if self.config.faults.packet_loss > 0:
            path_s = self._along_paths(tree, v, hop_s[col] * fac)
            extra_hops = self._along_paths(tree, v, fac - 1.0)
            sent = 1.0 + extra_hops / np.maximum(tree.hops, 1)  # mean sends per hop of the path
            # the ledger's row carries the payload once per sender; the packets resent are every hop's
            self._count_retransmissions(nbytes * (sent[senders] - 1.0), self._packets(nbytes) * extra_hops[senders])
        self._split(
            ledger,
            stage,
            "d2d",
            payload,
            senders,
            tree.root[senders],
            path_s[senders],
            path_j[senders],
            copies=sent[senders],
            group=self.topology.cluster[senders],
            step=step,
        )
        return path_s[senders]

    def charge_d2d_broadcast(
        self, ledger: Ledger, stage: str, payload: Payload, clusters=None, *, devices=None, step: str = ""
    ) -> np.ndarray:
        """Heads send the payload to their members (only those in ``devices``, when
        given) down the union of the shortest head-to-member paths (a tree): each tree
        edge carries it once. One row per device on that tree: its path time as
        latency, the energy of the one hop that reaches it. Returns the receivers' seconds."""
        _, sizes = _check_payload(payload)
        nbytes = float(sizes.sum())
        tree = self.routes(nbytes, toward_heads=False)
        members = self._d2d_members(clusters, devices)
        receivers = members[tree.reached[members] & (tree.next_hop[members] >= 0)]
        # relays on the way to a receiver get (and forward) the payload too
        on_tree = np.zeros(self.topology.n_devices, dtype=bool)
        frontier = receivers
        while frontier.size:
            on_tree[frontier] = True
            up = tree.next_hop[frontier]
            frontier = np.unique(up[(up >= 0) & (tree.next_hop[np.maximum(up, 0)] >= 0)])
            frontier = frontier[~on_tree[frontier]]
        hops = np.nonzero(on_tree)[0]
        hop_s, hop_j = transfer_cost(self.config.d2d, 8.0 * nbytes, self.d2d_rate_bps)
        senders = tree.next_hop[hops]
        col = (tree.hop_edge[hops], hop_direction(self.topology.d2d.edges, senders, hops))
        fac = self._arq(self.config.d2d, nbytes, (hops.size,))
        recv_j = hop_j[col] * fac
        path_s = tree.path_s
        if self.config.faults.packet_loss > 0:
            path_s = self._along_paths(tree, hops, hop_s[col] * fac)
            self._count_retransmissions(nbytes * (fac - 1.0), self._packets(nbytes) * (fac - 1.0))
        self._split(
            ledger,
            stage,
            "d2d",
            payload,
            senders,
            hops,
            path_s[hops],
            recv_j,
            lane=hops,
            copies=fac,
            group=self.topology.cluster[hops],
            step=step,
        )
        return path_s[receivers]

    def _along_paths(self, tree: RouteTree, nodes: np.ndarray, own_hop: np.ndarray) -> np.ndarray:
        """Per device, the sum over the hops of its path in ``tree`` of ``own_hop`` (the
        value of each of ``nodes``' own hop towards the head)."""
        own = np.zeros(self.topology.n_devices)
        own[nodes] = own_hop
        return sum_to_root(tree.next_hop, own)

    def d2d_path(self, src: int, dst: int, payload_bytes: float) -> np.ndarray:
        """The fastest multi-hop D2D path ``src → dst`` for a payload this round (device
        ids, both ends included). Raises ValueError when the two are not connected."""
        self._require_round()
        n = self.topology.n_devices
        for name, v in (("src", src), ("dst", dst)):
            if not 0 <= int(v) < n:
                raise ValueError(f"{name} must be a device id in [0, {n - 1}], got {v!r}")
        hop_s, _ = transfer_cost(self.config.d2d, 8.0 * float(payload_bytes), self.d2d_rate_bps)
        tree = shortest_path_tree(n, self.topology.d2d.edges, hop_s, np.array([int(dst)]), toward_heads=True)
        if not tree.reached[int(src)]:
            down = "" if self.d2d_up.all() else f"; {int((~self.d2d_up).sum())} D2D links are down this round"
            raise ValueError(
                f"devices {src} and {dst} have no D2D path (clusters "
                f"{self.topology.cluster[int(src)]} and {self.topology.cluster[int(dst)]}{down})"
            )
        path = [int(src)]
        while path[-1] != int(dst):
            path.append(int(tree.next_hop[path[-1]]))
        return np.array(path, dtype=np.int64)

    def charge_d2d_path(
        self, ledger: Ledger, stage: str, payload: Payload, path, *, group=None, step: str = ""
    ) -> float:
        """Send the payload along a D2D ``path`` of devices hop by hop (store and
        forward): one row per hop, all in the lane of the path's first device, so they
        add up in latency. Returns the path's seconds."""
        path = np.asarray(path, dtype=np.int64)
        if path.size < 2:
            return 0.0
        seconds = self.charge_d2d_hops(
            ledger, stage, payload, path[:-1], path[1:], lane=np.full(path.size - 1, path[0]), group=group, step=step
        )
        return float(seconds.sum())

    def charge_d2d_hops(
        self, ledger: Ledger, stage: str, payload: Payload, senders, receivers, *, lane=None, group=None, step: str = ""
    ) -> np.ndarray:
        """One single-hop D2D transfer of the payload per ``senders[i] → receivers[i]``
        (each pair must be a D2D link), at this round's rate of that direction. A
        sender's transfers share its lane (one radio) unless ``lane`` says otherwise.
        Returns the per-transfer seconds."""
        self._require_round()
        a, b = np.asarray(senders, dtype=np.int64), np.asarray(receivers, dtype=np.int64)
        if a.size == 0:
            return np.zeros(0)
        edges = self.topology.d2d.edges
        e = edge_index(edges, self.topology.n_devices, a, b)
        if len(edges) == 0 or not np.array_equal(np.sort(edges[e], axis=1), np.sort(np.stack([a, b], axis=1), axis=1)):
            raise ValueError("every sender -> receiver pair must be a D2D link of this round's graph")
        rate = self.d2d_rate_bps[e, hop_direction(edges, a, b)]
        if not self.d2d_up[e].all():
            down = e[~self.d2d_up[e]][0]
            raise ValueError(f"D2D link {tuple(edges[down].tolist())} is down this round")
        seconds, joules, sent = self._price(self.config.d2d, payload, rate)
        self._split(
            ledger, stage, "d2d", payload, a, b, seconds, joules, lane=lane, copies=sent, group=group, step=step
        )
        return seconds

    def charge_compute(
        self,
        ledger: Ledger,
        stage: str,
        module: str,
        devices,
        n_samples,
        epochs: float = 1.0,
        *,
        slowdown=None,
        deadline_s=None,
        group=None,
        step: str = "",
    ):
        """Local training of ``devices`` on ``n_samples`` each for ``epochs`` passes:
        ``c·n·E`` CPU cycles each (``c`` = ``ComputeConfig.cycles_per_sample``), in parallel
        (``slowdown``, ``deadline_s``: see :meth:`charge_cycles`)."""
        n = np.asarray(n_samples, dtype=np.float64)
        if np.any(n < 0) or not np.isfinite(epochs) or epochs < 0:
            raise ValueError("n_samples and epochs must be >= 0")
        return self.charge_cycles(
            ledger,
            stage,
            module,
            devices,
            self.config.compute.cycles_per_sample * n * epochs,
            slowdown=slowdown,
            deadline_s=deadline_s,
            group=group,
            step=step,
        )

    def charge_cycles(
        self,
        ledger: Ledger,
        stage: str,
        module: str,
        nodes,
        cycles,
        *,
        slowdown=None,
        deadline_s=None,
        group=None,
        step: str = "",
    ) -> np.ndarray:
        """Run ``cycles`` CPU cycles on each of ``nodes`` (any tiers), in parallel.

        A device takes ``cycles/f`` seconds and ``κ·cycles·f²`` joules (its own CPU
        frequency ``f``, ``ComputeConfig.kappa``); a server of tier ``k`` takes
        ``cycles/cpu_freq_hz`` seconds at ``compute_power_w`` of its ``TierConfig``.
        ``slowdown`` (per node, >= 1) stretches the time of a straggler whose CPU is
        shared with other work (same cycles, same energy). With ``deadline_s`` (per node or one) the
        round stops waiting at the deadline: a late node's row carries the deadline as
        its time (its energy in full). Returns the per-node seconds the work really took.
        """
        self._require_round()
        nodes = np.asarray(nodes, dtype=np.int64)
        cycles = np.broadcast_to(np.asarray(cycles, dtype=np.float64), nodes.shape)
        if np.any(~np.isfinite(cycles)) or np.any(cycles < 0):
            raise ValueError(f"cycles must be finite and >= 0, got {cycles!r}")
        topo, comp = self.topology, self.config.compute
        freq = np.empty(nodes.shape)
        power = np.zeros(nodes.shape)
        dev = nodes < topo.n_devices
        freq[dev] = topo.cpu_freq_hz[nodes[dev]]
        for k, tier in enumerate(self.config.tiers[1:], start=1):
            sel = topo.tier[nodes] == k
            freq[sel] = tier.cpu_freq_hz
            power[sel] = tier.compute_power_w
        seconds = cycles / freq
        joules = np.where(dev, comp.kappa * cycles * freq**2, power * seconds)
        if slowdown is not None:
            slowdown = np.broadcast_to(np.asarray(slowdown, dtype=np.float64), nodes.shape)
            if np.any(~np.isfinite(slowdown)) or np.any(slowdown < 1):
                raise ValueError(f"slowdown must be finite and >= 1, got {slowdown!r}")
            seconds = seconds * slowdown
        waited = seconds if deadline_s is None else np.minimum(seconds, deadline_s)
        ledger.charge(
            stage=stage,
            module=module,
            link="compute",
            src=nodes,
            dst=nodes,
            nbytes=0.0,
            seconds=waited,
            joules=joules,
            group=0 if group is None else group,
            step=step,
        )
        return seconds

"""Placement of the fog network's nodes, clusters, D2D graphs, cluster heads and mobility.

Node ids are global: devices are ``0 … n_devices−1``, then the nodes of tier 1, tier 2,
… in order. ``Topology.tier_slice(k)`` gives the ids of tier ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from hffm_env.network.channel import draw_fading, draw_shadowing_db, link_gain, link_rate_bps
from hffm_env.network.config import NetworkConfig


def _place_separated(rng: np.random.Generator, count: int, side_m: float, min_sep_m: float) -> np.ndarray:
    """``count`` points uniform in a square, pairwise at least ``min_sep_m`` apart (rejection sampling)."""
    if count == 1 and min_sep_m == 0.0:
        return rng.uniform(0.0, side_m, size=(1, 2))
    points = np.empty((0, 2))
    for _ in range(1000):
        candidates = rng.uniform(0.0, side_m, size=(4 * count, 2))
        for c in candidates:
            if len(points) == 0 or np.min(np.hypot(*(points - c).T)) >= min_sep_m:
                points = np.vstack([points, c])
                if len(points) == count:
                    return points
    raise RuntimeError(
        f"could not place {count} nodes {min_sep_m:g} m apart in a {side_m:g} m square; "
        "lower min_separation_m or enlarge area_side_m"
    )


def _uniform_in_discs(rng: np.random.Generator, centers: np.ndarray, radius_m: float, side_m: float) -> np.ndarray:
    """One point uniform in each disc, redrawn until it lies in the square (as the reference does)."""
    out = np.empty_like(centers, dtype=np.float64)
    todo = np.arange(len(centers))
    while len(todo):
        r = radius_m * np.sqrt(rng.uniform(size=len(todo)))
        theta = rng.uniform(0.0, 2.0 * np.pi, size=len(todo))
        out[todo] = centers[todo] + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        inside = np.all((out[todo] >= 0.0) & (out[todo] <= side_m), axis=1)
        todo = todo[~inside]
    return out


@dataclass
class D2DGraph:
    """Undirected D2D links between devices of the same cluster, as arrays.

    ``edges[e] = (u, v)`` with ``u < v`` (global device ids); ``distance_m[e]`` their
    distance; ``shadowing_db[e]`` the link's shadowing; ``patched[e]`` whether the edge
    was added by the minimum-spanning-tree patch rather than by the radius;
    ``fading[e]`` the |h|² drawn with the graph for ``u → v`` and ``v → u`` (used
    when the channel keeps its fading, ``ChannelConfig.fading_per_round=False``).
    """

    edges: np.ndarray
    distance_m: np.ndarray
    shadowing_db: np.ndarray
    patched: np.ndarray
    fading: np.ndarray

    @property
    def n_edges(self) -> int:
        return len(self.edges)


def build_d2d_graph(
    positions: np.ndarray,
    cluster: np.ndarray,
    n_clusters: int,
    radius_m: float,
    rng: np.random.Generator,
    channel,
    link=None,
    patch_weight: str = "distance",
) -> D2DGraph:
    """Random geometric graph per cluster, patched to connectivity with the cluster's MST.

    All clusters are handled at once: candidate pairs are all intra-cluster pairs;
    edges within ``radius_m`` form the RGG; for clusters whose RGG is disconnected
    the edges of the minimum spanning tree of all intra-cluster pairs are added,
    weighted by distance (``patch_weight="distance"``) or by the pair's transfer
    time at the channel drawn with the graph, its better direction
    (``"rate"``, as the reference does; needs the D2D ``link``).
    """
    n = len(positions)
    order = np.argsort(cluster, kind="stable")
    sorted_cluster = cluster[order]
    counts = np.bincount(cluster, minlength=n_clusters)
    # All intra-cluster pairs: in cluster-sorted order, element i pairs with i + k
    # while both lie in the same cluster (one array pass per offset k).
    us, vs = [], []
    for k in range(1, int(counts.max(initial=0))):
        same = sorted_cluster[:-k] == sorted_cluster[k:]
        us.append(order[:-k][same])
        vs.append(order[k:][same])
    if not us or sum(len(a) for a in us) == 0:
        empty = np.zeros((0, 2), dtype=np.int64)
        return D2DGraph(empty, np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool), np.zeros((0, 2)))
    u = np.concatenate(us)
    v = np.concatenate(vs)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    dist = np.hypot(*(positions[lo] - positions[hi]).T)
    in_radius = dist <= radius_m
    # Every candidate pair's channel, drawn once with the graph.
    shadowing = draw_shadowing_db(rng, len(lo), channel)
    fading = draw_fading(rng, (len(lo), 2), channel)
    if patch_weight == "rate":
        best_rate = link_rate_bps(link, channel, link_gain(channel, dist[:, None], shadowing[:, None], fading)).max(1)
        weight = 1.0 / best_rate
    else:
        weight = dist

    # Which clusters does the radius graph leave disconnected?
    rgg = coo_matrix((np.ones(in_radius.sum()), (lo[in_radius], hi[in_radius])), shape=(n, n))
    _, component = connected_components(rgg, directed=False)
    cluster_component = np.unique(cluster.astype(np.int64) * n + component)
    broken = np.bincount(cluster_component // n, minlength=n_clusters) > 1

    patched = np.zeros(len(lo), dtype=bool)
    if broken.any():
        candidate = broken[cluster[lo]]
        # Coincident devices have distance 0, which a sparse matrix would read as "no
        # edge": offset every weight by the same tiny amount (it changes no MST choice).
        w = weight[candidate] + 1e-12 * (1.0 + weight[candidate].max())
        full = coo_matrix((w, (lo[candidate], hi[candidate])), shape=(n, n)).tocsr()
        mst = minimum_spanning_tree(full).tocoo()
        mst_keys = np.sort(np.minimum(mst.row, mst.col).astype(np.int64) * n + np.maximum(mst.row, mst.col))
        pair_keys = lo[candidate].astype(np.int64) * n + hi[candidate]
        pos = np.minimum(np.searchsorted(mst_keys, pair_keys), len(mst_keys) - 1)
        patched[candidate] = (mst_keys[pos] == pair_keys) & ~in_radius[candidate]
    keep = in_radius | patched
    edges = np.stack([lo[keep], hi[keep]], axis=1)
    return D2DGraph(
        edges=edges, distance_m=dist[keep], shadowing_db=shadowing[keep], patched=patched[keep], fading=fading[keep]
    )


class Topology:
    """Positions, hierarchy, clusters, D2D graphs and cluster heads of one fog network.

    Built from a :class:`NetworkConfig` and a ``numpy.random.Generator``; every draw
    (placement, shadowing, CPU frequencies, head choice, motion) comes from that
    generator, so the same seed gives the same network.
    """

    def __init__(self, config: NetworkConfig, rng: np.random.Generator):
        self.config = config
        tiers = config.tiers
        self.tier_counts = np.array([t.count for t in tiers])
        self.tier_offsets = np.concatenate([[0], np.cumsum(self.tier_counts)])
        self.n_nodes = int(self.tier_offsets[-1])
        self.n_devices = config.n_devices
        self.n_clusters = config.n_clusters
        self.tier = np.repeat(np.arange(len(tiers)), self.tier_counts)
        self.positions = np.zeros((self.n_nodes, 2))
        self.parent = np.full(self.n_nodes, -1, dtype=np.int64)

        side = config.area_side_m
        anchors = _place_separated(rng, tiers[1].count, side, tiers[1].min_separation_m)
        self.positions[self.tier_slice(1)] = anchors
        self.cluster_centers = _uniform_in_discs(rng, anchors, config.cluster_center_offset_m, side)
        # Devices split as evenly as possible over the clusters, in cluster order.
        cluster = np.repeat(
            np.arange(self.n_clusters), np.diff(np.linspace(0, self.n_devices, self.n_clusters + 1).round().astype(int))
        )
        self.positions[: self.n_devices] = _uniform_in_discs(
            rng, self.cluster_centers[cluster], config.cluster_radius_m, side
        )
        for k in range(2, len(tiers)):
            if tiers[k].count == 1:
                pos = np.array([[side / 2.0, side / 2.0]])
            else:
                pos = _place_separated(rng, tiers[k].count, side, tiers[k].min_separation_m)
            self.positions[self.tier_slice(k)] = pos
        for k in range(2, len(tiers)):
            lower, upper = self.tier_slice(k - 1), self.tier_slice(k)
            d = np.linalg.norm(self.positions[lower][:, None, :] - self.positions[upper][None, :, :], axis=2)
            self.parent[lower] = upper.start + np.argmin(d, axis=1)

        self.cpu_freq_hz = rng.uniform(*config.compute.cpu_freq_hz_range, size=self.n_devices)
        self.uplink_shadowing_db = draw_shadowing_db(rng, self.n_nodes, config.channel)
        self.direct_shadowing_db = draw_shadowing_db(rng, self.n_devices, config.channel)
        # Fading drawn with the placement; used only when the channel keeps it across rounds.
        self.uplink_fading = draw_fading(rng, self.n_nodes, config.channel)
        self.direct_fading = draw_fading(rng, self.n_devices, config.channel)
        self.cluster = cluster
        self._set_device_parents()
        self.d2d = self._build_d2d(rng)
        self.heads = np.full(self.n_clusters, -1, dtype=np.int64)
        self._choose_heads(rng, keep_existing=False)

    # ------------------------------------------------------------------ queries
    def tier_slice(self, k: int) -> slice:
        return slice(int(self.tier_offsets[k]), int(self.tier_offsets[k + 1]))

    def tier_ids(self, k: int) -> np.ndarray:
        return np.arange(self.tier_offsets[k], self.tier_offsets[k + 1])

    @property
    def top(self) -> int:
        return int(self.tier_offsets[-2])

    def distance_m(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.hypot(*(self.positions[a] - self.positions[b]).T)

    def uplink_distance_m(self) -> np.ndarray:
        """Distance from every node to its parent (0 for the top tier)."""
        has = self.parent >= 0
        d = np.zeros(self.n_nodes)
        d[has] = self.distance_m(np.nonzero(has)[0], self.parent[has])
        return d

    def active_ids(self, k: int) -> np.ndarray:
        """Ids of the tier-``k`` nodes with at least one device below them (after
        handovers a cluster, and the nodes above it, can be empty)."""
        has = np.zeros(self.n_nodes, dtype=bool)
        has[: self.n_devices] = True
        for j in range(1, k + 1):
            below = self.tier_ids(j - 1)
            has[np.unique(self.parent[below[has[below]]])] = True
        return self.tier_ids(k)[has[self.tier_slice(k)]]

    def members(self, c: int) -> np.ndarray:
        return np.nonzero(self.cluster == c)[0]

    def cluster_sizes(self) -> np.ndarray:
        return np.bincount(self.cluster, minlength=self.n_clusters)

    def d2d_graph(self, cluster: int | None = None) -> nx.Graph:
        """The D2D graph (of one cluster, or all) as a networkx graph with ``distance_m`` on edges."""
        g = nx.Graph()
        nodes = np.arange(self.n_devices) if cluster is None else self.members(cluster)
        g.add_nodes_from(int(i) for i in nodes)
        keep = (
            np.ones(self.d2d.n_edges, dtype=bool) if cluster is None else self.cluster[self.d2d.edges[:, 0]] == cluster
        )
        for (u, v), d, p in zip(self.d2d.edges[keep], self.d2d.distance_m[keep], self.d2d.patched[keep]):
            g.add_edge(int(u), int(v), distance_m=float(d), patched=bool(p))
        return g

    # ------------------------------------------------------------------ dynamics
    def move(self, rng: np.random.Generator) -> bool:
        """One round of device motion. Returns True when the D2D graphs changed."""
        mob = self.config.mobility
        if mob.model == "static":
            return False
        n = self.n_devices
        step = rng.uniform(*mob.speed_mps_range, size=n) * mob.round_duration_s
        theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
        pos = self.positions[:n] + np.stack([step * np.cos(theta), step * np.sin(theta)], axis=1)
        side = self.config.area_side_m
        pos = np.abs(pos)  # reflect at 0
        pos = side - np.abs(side - pos)  # reflect at side
        self.positions[:n] = pos
        # Handover: a device that left its cluster's disc joins the nearest cluster centre.
        own = np.hypot(*(pos - self.cluster_centers[self.cluster]).T)
        out = own > self.config.cluster_radius_m
        if out.any():
            d = np.linalg.norm(pos[out][:, None, :] - self.cluster_centers[None, :, :], axis=2)
            self.cluster[out] = np.argmin(d, axis=1)
        self._set_device_parents()
        self.d2d = self._build_d2d(rng)
        self.uplink_shadowing_db[:n] = draw_shadowing_db(rng, n, self.config.channel)
        self.uplink_fading[:n] = draw_fading(rng, n, self.config.channel)
        self.direct_shadowing_db = draw_shadowing_db(rng, n, self.config.channel)
        self.direct_fading = draw_fading(rng, n, self.config.channel)
        self._choose_heads(rng, keep_existing=True)
        return True

    def _build_d2d(self, rng: np.random.Generator) -> D2DGraph:
        cfg = self.config
        return build_d2d_graph(
            self.positions[: self.n_devices],
            self.cluster,
            self.n_clusters,
            cfg.d2d_radius_m,
            rng,
            cfg.channel,
            cfg.d2d,
            cfg.d2d_patch_weight,
        )

    def _set_device_parents(self) -> None:
        self.parent[: self.n_devices] = self.tier_offsets[1] + self.cluster

    def _choose_heads(self, rng: np.random.Generator, keep_existing: bool) -> None:
        rule = self.config.cluster_head
        degree = np.bincount(self.d2d.edges.ravel(), minlength=self.n_devices)
        for c in range(self.n_clusters):
            if keep_existing and self.heads[c] >= 0 and self.cluster[self.heads[c]] == c:
                continue
            members = self.members(c)
            if len(members) == 0:
                self.heads[c] = -1
                continue
            if rule == "random":
                self.heads[c] = rng.choice(members)
            elif rule == "central":
                p = self.positions[members]
                self.heads[c] = members[np.argmin(np.linalg.norm(p[:, None] - p[None], axis=2).sum(axis=1))]
            else:  # max_degree
                self.heads[c] = members[np.argmax(degree[members])]

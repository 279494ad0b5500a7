"""Multi-hop D2D routing: shortest-path trees from every cluster head, all clusters at once.

The D2D graphs of all clusters form one sparse directed graph (each link has a
weight per direction: fading differs between the gather and the broadcast phase)
whose components are the clusters. One multi-source Dijkstra from all heads
(scipy's compiled ``csgraph.dijkstra``) gives every device its path time to its head
(on the reversed graph, for gathering) or from it (for broadcasting) and its next hop
towards the head: the union of the shortest paths, a tree. networkx holds the same
graphs for users (``Topology.d2d_graph``) and checks these routes in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra


@dataclass(frozen=True)
class RouteTree:
    """Shortest-path trees towards the cluster heads.

    ``root[v]``: the head that ``v`` reaches (−1 when none); ``next_hop[v]``: the
    neighbour one hop closer to it (−1 for heads and unreached devices); ``path_s[v]``:
    the path's total hop weight; ``hops[v]``: its number of hops; ``hop_edge[v]``: the
    index in the D2D edge list of the hop ``v → next_hop[v]`` (−1 where none).
    """

    root: np.ndarray
    next_hop: np.ndarray
    path_s: np.ndarray
    hops: np.ndarray
    hop_edge: np.ndarray

    @property
    def reached(self) -> np.ndarray:
        return self.root >= 0


def edge_index(edges: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Index of the undirected edge {a, b} in ``edges`` (rows sorted u < v)."""
    keys = edges[:, 0] * n + edges[:, 1]
    order = np.argsort(keys)
    want = np.minimum(a, b) * n + np.maximum(a, b)
    pos = np.searchsorted(keys, want, sorter=order)
    return order[np.clip(pos, 0, len(order) - 1)]


def sum_to_root(next_hop: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For every node, the sum of ``values`` over the nodes of its path to the root
    (itself included, the root excluded), by pointer jumping: O(log depth) array passes."""
    total = values.astype(np.float64).copy()
    ptr = next_hop.copy()
    has = ptr >= 0
    total[~has] = 0.0
    while has.any():
        idx = np.nonzero(has)[0]
        total[idx] += total[ptr[idx]]
        ptr[idx] = ptr[ptr[idx]]
        has = ptr >= 0
    return total


def hop_direction(edges: np.ndarray, sender: np.ndarray, receiver: np.ndarray) -> np.ndarray:
    """Column of a per-direction edge array for the hop sender → receiver (0: u→v with u < v)."""
    return (sender > receiver).astype(np.int64)


def _directed_weights(hop_weight: np.ndarray) -> np.ndarray:
    """Hop weights ``(E, 2)`` per direction from ``(E,)`` or ``(E, 2)``, each at least
    1e-15: a zero weight would vanish from a sparse matrix, and no hop is free in time."""
    w = np.asarray(hop_weight, dtype=np.float64)
    return np.maximum(np.stack([w, w], axis=1) if w.ndim == 1 else w, 1e-15)


def shortest_path_tree(
    n_devices: int,
    edges: np.ndarray,
    hop_weight: np.ndarray,
    heads: np.ndarray,
    toward_heads: bool = True,
    transit: np.ndarray | None = None,
) -> RouteTree:
    """Shortest paths between every device and the head of its component.

    ``hop_weight`` is per edge (same both ways) or per edge and direction, shape
    ``(E, 2)`` with column 0 for ``u → v`` (``u < v``). ``toward_heads=True`` gives the
    paths from devices to heads (gathering); False the paths from heads to devices
    (broadcasting). Either way ``next_hop[v]`` is the neighbour one hop closer to the head.

    ``transit`` (bool per device, all True by default) says which devices may forward
    others' traffic: a device with False is only ever a path's end (a leaf of the
    tree), reached over its best one hop to a transit device; a head with False
    reaches no one.
    """
    if transit is not None and not np.asarray(transit, dtype=bool).all() and len(edges):
        return _leaf_only(n_devices, edges, hop_weight, heads, toward_heads, np.asarray(transit, dtype=bool))
    heads = heads[heads >= 0]
    root = np.full(n_devices, -1, dtype=np.int64)
    next_hop = np.full(n_devices, -1, dtype=np.int64)
    path = np.full(n_devices, np.inf)
    hop_edge = np.full(n_devices, -1, dtype=np.int64)
    if len(heads) == 0:
        return RouteTree(root, next_hop, path, np.zeros(n_devices, dtype=np.int64), hop_edge)
    if len(edges):
        w = _directed_weights(hop_weight)
        u, v = edges[:, 0], edges[:, 1]
        if toward_heads:  # search from the heads over reversed links: entry (a, b) is the hop b -> a
            rows, cols, data = np.concatenate([v, u]), np.concatenate([u, v]), np.concatenate([w[:, 0], w[:, 1]])
        else:
            rows, cols, data = np.concatenate([u, v]), np.concatenate([v, u]), np.concatenate([w[:, 0], w[:, 1]])
        graph = coo_matrix((data, (rows, cols)), shape=(n_devices, n_devices)).tocsr()
        dist, pred, src = dijkstra(graph, directed=True, indices=heads, min_only=True, return_predecessors=True)
        reached = np.isfinite(dist)
        root[reached] = src[reached]
        path[reached] = dist[reached]
        ok = pred >= 0
        next_hop[ok] = pred[ok]
        hop_edge[ok] = edge_index(edges, n_devices, np.nonzero(ok)[0], pred[ok])
    root[heads] = heads
    path[heads] = 0.0
    hops = sum_to_root(next_hop, np.ones(n_devices)).astype(np.int64)
    return RouteTree(root=root, next_hop=next_hop, path_s=path, hops=hops, hop_edge=hop_edge)


def _leaf_only(
    n_devices: int,
    edges: np.ndarray,
    hop_weight: np.ndarray,
    heads: np.ndarray,
    toward_heads: bool,
    transit: np.ndarray,
) -> RouteTree:
    """:func:`shortest_path_tree` where the devices with ``transit`` False forward
    nothing: the tree over the links between transit devices, then each other
    device hung on its fastest hop to a reached transit device."""
    w = _directed_weights(hop_weight)
    inner = transit[edges[:, 0]] & transit[edges[:, 1]]
    heads = heads[heads >= 0]
    tree = shortest_path_tree(n_devices, edges[inner], w[inner], heads[transit[heads]], toward_heads)
    root, next_hop, path = tree.root.copy(), tree.next_hop.copy(), tree.path_s.copy()
    hop_edge = np.full(n_devices, -1, dtype=np.int64)
    has = tree.hop_edge >= 0
    hop_edge[has] = np.nonzero(inner)[0][tree.hop_edge[has]]  # back to indices into ``edges``
    heads_off = heads[~transit[heads]]
    root[heads_off], path[heads_off] = heads_off, 0.0
    # each leaf's candidates: its links to reached transit devices, the hop toward the head;
    # hop leaf → relay (gathering) or relay → leaf (broadcasting), column 0 being u → v
    e_all = np.arange(len(edges))
    leaf = np.concatenate([edges[:, 0], edges[:, 1]])
    relay = np.concatenate([edges[:, 1], edges[:, 0]])
    hop = np.concatenate([w[:, 0], w[:, 1]] if toward_heads else [w[:, 1], w[:, 0]])
    cand = path[relay] + hop
    ok = ~transit[leaf] & transit[relay] & tree.reached[relay] & ~np.isin(leaf, heads_off) & np.isfinite(cand)
    leaf, relay, cand, edge = leaf[ok], relay[ok], cand[ok], np.concatenate([e_all, e_all])[ok]
    order = np.lexsort((edge, cand, leaf))  # per leaf: fastest first (ties: lowest edge index)
    first = order[np.r_[True, leaf[order][1:] != leaf[order][:-1]]] if order.size else order
    v = leaf[first]
    path[v], next_hop[v], root[v], hop_edge[v] = cand[first], relay[first], root[relay[first]], edge[first]
    hops = sum_to_root(next_hop, np.ones(n_devices)).astype(np.int64)
    return RouteTree(root=root, next_hop=next_hop, path_s=path, hops=hops, hop_edge=hop_edge)

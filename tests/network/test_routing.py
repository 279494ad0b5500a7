"""Multi-hop D2D routes against networkx, and the broadcast tree."""

import networkx as nx
import numpy as np
import pytest

from hffm_env import make_scenario
from hffm_env.network import FogNetwork
from hffm_env.network.channel import transfer_cost
from hffm_env.network.routing import shortest_path_tree, sum_to_root


def _net(preset="paper", seed=0, **ov):
    net = FogNetwork(make_scenario(preset, **ov).network, np.random.default_rng(seed))
    net.new_round()
    return net


@pytest.mark.parametrize("toward_heads", [True, False])
def test_paths_match_networkx_dijkstra(toward_heads):
    net = _net("paper", seed=4, network__d2d_radius_m=300.0)
    t = net.topology
    hop_s, _ = transfer_cost(net.config.d2d, 8 * 6e6, net.d2d_rate_bps)  # (E, 2): u->v, v->u
    tree = net.routes(6e6, toward_heads=toward_heads)
    g = nx.DiGraph()
    for (u, v), (w_uv, w_vu) in zip(t.d2d.edges, hop_s):
        g.add_edge(int(u), int(v), w=float(w_uv))
        g.add_edge(int(v), int(u), w=float(w_vu))
    search = g.reverse(copy=True) if toward_heads else g  # to the head = from the head over reversed links
    for c in range(t.n_clusters):
        head = int(t.heads[c])
        dist, paths = nx.single_source_dijkstra(search, head, weight="w")
        for v in t.members(c):
            assert tree.root[v] == head
            assert np.isclose(tree.path_s[v], dist[int(v)])
            assert tree.hops[v] == len(paths[int(v)]) - 1
    assert tree.hops.max() >= 2  # multi-hop paths exist in this setting


def test_broadcast_tree_is_a_spanning_tree_of_each_cluster():
    net = _net("small", seed=1)
    t = net.topology
    tree = net.routes(1e6)
    for c in range(t.n_clusters):
        m = t.members(c)
        edges = [(int(v), int(tree.next_hop[v])) for v in m if tree.next_hop[v] >= 0]
        g = nx.Graph(edges)
        g.add_nodes_from(int(v) for v in m)
        assert nx.is_tree(g) and len(edges) == len(m) - 1
        d2d_edges = {tuple(e) for e in t.d2d.edges.tolist()}
        assert all(tuple(sorted(e)) in d2d_edges for e in edges)


def test_hand_built_line_graph():
    # 0 - 1 - 2 - 3 with head 0, plus a shortcut 0 - 3 that is slower than the chain
    edges = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    w = np.array([1.0, 1.0, 1.0, 5.0])
    tree = shortest_path_tree(4, edges, w, np.array([0]))
    assert list(tree.path_s) == [0.0, 1.0, 2.0, 3.0]
    assert list(tree.hops) == [0, 1, 2, 3]
    assert list(tree.next_hop) == [-1, 0, 1, 2]
    assert list(tree.hop_edge) == [-1, 0, 1, 2]
    # two components, two heads, one unreachable node
    tree = shortest_path_tree(5, np.array([[0, 1], [2, 3]]), np.array([2.0, 3.0]), np.array([0, 3]))
    assert list(tree.root) == [0, 0, 3, 3, -1] and tree.path_s[2] == 3.0 and np.isinf(tree.path_s[4])


def test_sum_to_root_pointer_jumping():
    nxt = np.array([-1, 0, 1, 2, 1])
    vals = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    assert list(sum_to_root(nxt, vals)) == [0.0, 1.0, 11.0, 111.0, 1001.0]

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


@pytest.mark.parametrize("toward_heads", [True, False])
def test_devices_that_stop_relaying_are_only_path_ends(toward_heads):
    """Against networkx: a gathering hop may only enter a relaying device (or a relaying
    head), a broadcasting hop may only leave one; so a stopped device is at most the end
    of its own path, and a stopped head reaches no one."""
    net = _net("paper", seed=4, network__d2d_radius_m=300.0)
    t = net.topology
    rng = np.random.default_rng(0)
    stopped = np.nonzero(rng.random(t.n_devices) < 0.25)[0]
    stopped = np.union1d(stopped, t.heads[:1])  # one head stops too
    free = net.routes(6e6, toward_heads=toward_heads)
    net.stop_relaying(stopped)
    tree = net.routes(6e6, toward_heads=toward_heads)
    hop_s, _ = transfer_cost(net.config.d2d, 8 * 6e6, net.d2d_rate_bps)
    relays = np.ones(t.n_devices, dtype=bool)
    relays[stopped] = False
    g = nx.DiGraph()
    g.add_nodes_from(range(t.n_devices))
    for (u, v), (w_uv, w_vu) in zip(t.d2d.edges.tolist(), hop_s):
        for a, b, w in ((u, v, w_uv), (v, u, w_vu)):
            if relays[b] if toward_heads else relays[a]:
                g.add_edge(a, b, w=float(w))
    search = g.reverse(copy=True) if toward_heads else g
    for c in range(t.n_clusters):
        head = int(t.heads[c])
        dist = nx.single_source_dijkstra_path_length(search, head, weight="w")
        for v in t.members(c):
            if v == head:
                continue
            if int(v) in dist:
                assert tree.root[v] == head and np.isclose(tree.path_s[v], dist[int(v)]), v
                hop = tree.next_hop[v]
                assert hop == head or relays[hop]
                assert sorted(t.d2d.edges[tree.hop_edge[v]].tolist()) == sorted([int(v), int(hop)])
            else:
                assert not tree.reached[v] and tree.next_hop[v] == -1
    assert not tree.reached[t.members(0)[t.members(0) != t.heads[0]]].any()  # its head stopped
    assert (tree.reached < free.reached).any()
    assert (tree.path_s[tree.reached] >= free.path_s[tree.reached] - 1e-12).all()
    ends = np.setdiff1d(stopped, t.heads)
    assert tree.reached[ends].any() and not np.isin(tree.next_hop, ends).any()  # ends of their own paths only
    net.new_round()
    assert net.relaying.all()  # for one round only


def test_stop_relaying_names_bad_devices():
    net = _net("tiny")
    with pytest.raises(ValueError, match="devices must be device ids"):
        net.stop_relaying([net.topology.n_devices])


def test_sum_to_root_pointer_jumping():
    nxt = np.array([-1, 0, 1, 2, 1])
    vals = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    assert list(sum_to_root(nxt, vals)) == [0.0, 1.0, 11.0, 111.0, 1001.0]


def test_stopped_devices_on_a_hand_built_line_graph():
    # 0 (head) - 1 - 2 - 3: with 1 stopped, 1 still reaches the head, 2 and 3 do not
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    w = np.array([1.0, 2.0, 4.0])
    transit = np.array([True, False, True, True])
    tree = shortest_path_tree(4, edges, w, np.array([0]), transit=transit)
    assert list(tree.root) == [0, 0, -1, -1] and list(tree.next_hop) == [-1, 0, -1, -1]
    assert list(tree.hop_edge) == [-1, 0, -1, -1] and tree.path_s[1] == 1.0
    # no link between relaying devices at all: every stopped neighbour of the head hangs on it
    tree = shortest_path_tree(
        3, np.array([[0, 1], [0, 2]]), np.array([3.0, 5.0]), np.array([0]), transit=np.array([True, False, False])
    )
    assert list(tree.next_hop) == [-1, 0, 0] and list(tree.hop_edge) == [-1, 0, 1] and list(tree.path_s) == [0, 3, 5]
    # a stopped head reaches no one
    tree = shortest_path_tree(
        3, np.array([[0, 1], [1, 2]]), np.array([1.0, 1.0]), np.array([0]), transit=np.array([False, True, True])
    )
    assert list(tree.root) == [0, -1, -1]

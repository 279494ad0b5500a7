"""Placement, clusters, D2D graphs, heads, mobility, determinism."""

import networkx as nx
import numpy as np
import pytest

from hffm_env import make_scenario
from hffm_env.network import FogNetwork, LinkConfig, MobilityConfig, NetworkConfig, TierConfig, Topology
from hffm_env.network.topology import build_d2d_graph


def _topo(preset="paper", seed=0, **overrides):
    return Topology(make_scenario(preset, **overrides).network, np.random.default_rng(seed))


def test_reference_placement_constraints():
    t = _topo("paper", seed=3)
    cfg = t.config
    servers = t.positions[t.tier_slice(1)]
    d = np.linalg.norm(servers[:, None] - servers[None], axis=2)[np.triu_indices(len(servers), 1)]
    assert d.min() >= cfg.tiers[1].min_separation_m
    assert np.all((servers >= 0) & (servers <= cfg.area_side_m))
    assert np.all(np.linalg.norm(t.cluster_centers - servers, axis=1) <= cfg.cluster_center_offset_m)
    dev = t.positions[: t.n_devices]
    assert np.all(np.linalg.norm(dev - t.cluster_centers[t.cluster], axis=1) <= cfg.cluster_radius_m)
    assert np.all(t.cluster_sizes() == 4)
    assert np.all(t.parent[: t.n_devices] == t.tier_offsets[1] + t.cluster)
    assert np.all(t.parent[t.tier_slice(1)] == t.top)


def test_d2d_graph_connected_per_cluster_with_radius_then_mst():
    t = _topo("small", seed=1)
    g = t.d2d
    assert np.all(t.cluster[g.edges[:, 0]] == t.cluster[g.edges[:, 1]])
    assert np.all(g.distance_m[~g.patched] <= t.config.d2d_radius_m)
    for c in range(t.n_clusters):
        gc = t.d2d_graph(c)
        assert nx.is_connected(gc)
        radius_only = nx.Graph([(u, v) for u, v, p in gc.edges(data="patched") if not p])
        radius_only.add_nodes_from(gc.nodes)
        # patch edges appear only where the radius graph was disconnected
        if nx.is_connected(radius_only):
            assert not any(p for *_, p in gc.edges(data="patched"))


def test_mst_patch_handles_coincident_devices():
    pos = np.array([[0.0, 0.0], [0.0, 0.0], [500.0, 0.0], [500.0, 0.0], [1000.0, 0.0]])
    cluster = np.zeros(5, dtype=np.int64)
    g = build_d2d_graph(pos, cluster, 1, 10.0, np.random.default_rng(0), make_scenario("paper").network.channel)
    graph = nx.Graph([tuple(e) for e in g.edges])
    assert graph.number_of_nodes() == 5 and nx.is_connected(graph)


def test_same_seed_same_network_and_different_seed_differs():
    a, b, c = _topo(seed=7), _topo(seed=7), _topo(seed=8)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.d2d.edges, b.d2d.edges)
    assert np.array_equal(a.heads, b.heads)
    assert not np.allclose(a.positions, c.positions)


def test_cluster_heads_follow_rule():
    for rule in ("random", "central", "max_degree"):
        t = _topo("small", seed=2, network__cluster_head=rule)
        assert np.all(t.cluster[t.heads] == np.arange(t.n_clusters))
    t = _topo("small", seed=2, network__cluster_head="max_degree")
    deg = np.bincount(t.d2d.edges.ravel(), minlength=t.n_devices)
    for c in range(t.n_clusters):
        assert deg[t.heads[c]] == deg[t.members(c)].max()


def test_extra_tier_by_config():
    cfg = NetworkConfig(
        tiers=(
            TierConfig("device", 24, uplink=LinkConfig()),
            TierConfig("access_point", 6, uplink=LinkConfig(bandwidth_hz=20e6, tx_power_w=1.0)),
            TierConfig("edge", 2, uplink=LinkConfig("wired", rate_bps=1e9), min_separation_m=300.0),
            TierConfig("cloud", 1),
        ),
        area_side_m=2000.0,
        cluster_center_offset_m=100.0,
        cluster_radius_m=100.0,
    )
    assert cfg.n_tiers == 4 and cfg.n_clusters == 6
    t = Topology(cfg, np.random.default_rng(0))
    assert t.n_nodes == 33
    assert np.all(t.tier[t.parent[t.tier_slice(1)]] == 2)
    assert np.all(t.tier[t.parent[t.tier_slice(2)]] == 3)
    # each access point's parent is its nearest edge server
    ap, edge = t.positions[t.tier_slice(1)], t.positions[t.tier_slice(2)]
    nearest = np.argmin(np.linalg.norm(ap[:, None] - edge[None], axis=2), axis=1)
    assert np.array_equal(t.parent[t.tier_slice(1)] - t.tier_offsets[2], nearest)
    # the schedules and the ledger work on it unchanged: AP every round, edge every 2, cloud every 4
    from hffm_env.network import FogNetwork
    from hffm_env.network.schedules import AggregationSchedule, charge_schedule

    ledger = charge_schedule(
        FogNetwork(cfg, np.random.default_rng(0)), AggregationSchedule("h3", periods=(1, 2, 4)), 4, {"adapters": 1e6}
    )
    links = [set(ledger.summaries[r].per_link) for r in range(4)]
    assert links[0] == {"device->access_point", "access_point->device"}
    assert "access_point->edge" in links[1] and "edge->cloud" not in links[1]
    assert "edge->cloud" in links[3] and "cloud->edge" in links[3]


def test_mobility_moves_devices_and_keeps_graphs_valid():
    sc = make_scenario("small", network__mobility=MobilityConfig("random_direction", (5.0, 20.0), 10.0))
    net = FogNetwork(sc.network, np.random.default_rng(0))
    net.new_round()
    before = net.topology.positions.copy()
    moved_clusters = False
    for _ in range(30):
        clusters = net.topology.cluster.copy()
        net.new_round()
        moved_clusters |= not np.array_equal(clusters, net.topology.cluster)
    t = net.topology
    assert not np.allclose(before[: t.n_devices], t.positions[: t.n_devices])
    assert np.allclose(before[t.n_devices :], t.positions[t.n_devices :])  # servers stay
    assert np.all((t.positions >= 0) & (t.positions <= t.config.area_side_m))
    assert moved_clusters
    for c in range(t.n_clusters):
        if len(t.members(c)):
            assert nx.is_connected(t.d2d_graph(c))
            assert t.cluster[t.heads[c]] == c
    assert np.all(t.parent[: t.n_devices] == t.tier_offsets[1] + t.cluster)


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_presets_build(preset):
    t = _topo(preset)
    assert t.n_devices == make_scenario(preset).network.n_devices


def test_placement_inside_area_so_motion_is_continuous():
    sc = make_scenario("paper", network__mobility=MobilityConfig("random_direction", (0.5, 2.0), 10.0))
    for seed in range(5):
        net = FogNetwork(sc.network, np.random.default_rng(seed))
        t = net.topology
        assert np.all((t.positions >= 0) & (t.positions <= t.config.area_side_m))
        net.new_round()
        before = t.positions[: t.n_devices].copy()
        net.new_round()
        assert np.linalg.norm(t.positions[: t.n_devices] - before, axis=1).max() <= 20.0 + 1e-9


def test_empty_cluster_is_not_charged():
    from hffm_env.network import Ledger
    from hffm_env.network.schedules import charge_round, table1_schedules

    net = FogNetwork(make_scenario("tiny").network, np.random.default_rng(0))
    t = net.topology
    t.cluster[:] = 0  # every device handed over to cluster 0
    t._set_device_parents()
    t.d2d = t._build_d2d(np.random.default_rng(1))
    t._choose_heads(np.random.default_rng(1), keep_existing=True)
    assert list(t.active_ids(1)) == [t.tier_offsets[1]]
    net.new_round()
    ledger = Ledger()
    ledger.begin_round(0)
    charge_round(net, ledger, table1_schedules()["hfm_2"], 2, {"adapters": 1e5})
    ledger.end_round()
    rec = ledger.records(0)
    empty_edge = t.tier_offsets[1] + 1
    assert empty_edge not in set(rec["src"]) | set(rec["dst"])

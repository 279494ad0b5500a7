"""Cost primitives of FogNetwork: payload-proportional charges, compute, D2D gather/broadcast."""

import numpy as np
import pytest

from hffm_env import make_scenario
from hffm_env.network import FogNetwork, Ledger
from hffm_env.network.channel import transfer_cost
from hffm_env.network.schedules import AggregationSchedule, charge_round, charge_schedule, table1_schedules


def _net(preset="small", seed=0, **ov):
    net = FogNetwork(make_scenario(preset, **ov).network, np.random.default_rng(seed))
    net.new_round()
    return net


def _one_round(net, fn):
    L = Ledger()
    L.begin_round(net.round_index)
    fn(L)
    return L.end_round()


def test_moving_only_heads_costs_less_than_adapters():
    net = _net()
    devices = np.arange(net.topology.n_devices)
    heads = _one_round(net, lambda L: net.charge_upload(L, "up", {"heads": 1e5}, devices))
    both = _one_round(net, lambda L: net.charge_upload(L, "up", {"adapters": 1e6, "heads": 1e5}, devices))
    assert heads.energy_j < both.energy_j and heads.latency_s < both.latency_s
    # module shares split the combined transfer in proportion to bytes
    assert both.per_module["adapters"].joules == pytest.approx(10 * both.per_module["heads"].joules)
    assert both.per_module["adapters"].bytes == pytest.approx(1e6 * len(devices))
    # one combined transfer, not two: latency equals the single-payload transfer of 1.1 MB
    single = _one_round(net, lambda L: net.charge_upload(L, "up", {"all": 1.1e6}, devices))
    assert both.latency_s == pytest.approx(single.latency_s)


def test_upload_matches_channel_formula():
    net = _net("paper")
    L = Ledger()
    L.begin_round(0)
    secs = net.charge_upload(L, "up", {"m": 6e6}, np.arange(40))
    r = L.end_round()
    want_s, want_j = transfer_cost(net.config.tiers[0].uplink, 48e6, net.uplink_rate_bps[:40])
    assert np.allclose(secs, want_s)
    assert r.latency_s == pytest.approx(want_s.max()) and r.energy_j == pytest.approx(want_j.sum())
    rec = L.records(0)
    assert np.all(rec["dst"] == net.topology.parent[:40]) and set(rec["link"]) == {"device->edge"}


def test_compute_cost_model():
    net = _net()
    devices = np.arange(5)
    r = _one_round(net, lambda L: net.charge_compute(L, "train", "local_training", devices, 100, epochs=2))
    c = net.config.compute
    f = net.topology.cpu_freq_hz[devices]
    assert r.latency_s == pytest.approx((c.cycles_per_sample * 200 / f).max())
    assert r.energy_j == pytest.approx((c.kappa * c.cycles_per_sample * 200 * f**2).sum())


def test_d2d_gather_and_broadcast_charge_every_hop():
    from hffm_env.network.routing import hop_direction

    net = _net("paper", seed=2, network__d2d_radius_m=200.0)
    edges = net.topology.d2d.edges
    g = _one_round(net, lambda L: net.charge_d2d_gather(L, "g", {"m": 6e6}))
    b = _one_round(net, lambda L: net.charge_d2d_broadcast(L, "b", {"m": 6e6}))
    _, hop_j = transfer_cost(net.config.d2d, 48e6, net.d2d_rate_bps)
    # gather: each member's packet pays every hop of its path, member -> head
    up = net.routes(6e6, toward_heads=True)
    members = np.nonzero(up.next_hop >= 0)[0]
    want = 0.0
    for v in members:
        u = v
        while up.next_hop[u] >= 0:
            want += hop_j[up.hop_edge[u], hop_direction(edges, u, up.next_hop[u])]
            u = up.next_hop[u]
    assert up.hops.max() >= 2
    assert g.energy_j == pytest.approx(want)
    # clusters proceed independently; the stage waits for the slowest path
    assert g.latency_s == pytest.approx(up.path_s[members].max())
    # broadcast: each edge of the head -> member tree once
    down = net.routes(6e6, toward_heads=False)
    recv = np.nonzero(down.next_hop >= 0)[0]
    assert b.energy_j == pytest.approx(
        hop_j[down.hop_edge[recv], hop_direction(edges, down.next_hop[recv], recv)].sum()
    )
    assert b.latency_s == pytest.approx(down.path_s[recv].max())


def test_consensus_latency_is_per_cluster_critical_path():
    net = _net("paper", seed=3)
    L = Ledger()
    L.begin_round(0)
    charge_round(net, L, table1_schedules()["edge_only_d2d"], 1, {"m": 6e6})
    r = L.end_round()
    up, down = net.routes(6e6, True), net.routes(6e6, False)
    c = net.topology.cluster
    per_cluster = [up.path_s[c == k].max() + down.path_s[c == k].max() for k in range(net.topology.n_clusters)]
    assert r.latency_s == pytest.approx(max(per_cluster))
    assert r.latency_s <= up.path_s.max() + down.path_s.max()


def test_downlink_uses_its_own_power():
    from hffm_env.network import LinkConfig

    sc = make_scenario("tiny")
    loud = make_scenario("tiny", network__tiers__0__downlink=LinkConfig(bandwidth_hz=5e6, tx_power_w=2.0))
    rates = []
    for s in (sc, loud):
        net = FogNetwork(s.network, np.random.default_rng(0))
        net.new_round()
        rates.append(_one_round(net, lambda L: net.charge_download(L, "d", {"m": 1e6}, np.arange(8))).latency_s)
    assert rates[1] < rates[0]


def test_star_without_direct_link_forwards_every_model():
    net = _net("small", network__direct_uplink=None)
    r = _one_round(net, lambda L: charge_round(net, L, AggregationSchedule("star", star=True), 1, {"m": 1e6}))
    # edges forward one copy per device below them
    assert r.per_link["edge->cloud"].bytes == pytest.approx(1e6 * net.topology.n_devices)


def test_schedule_levels_and_validation():
    s = AggregationSchedule("h", periods=(1, 4))
    assert [s.level(r) for r in range(1, 9)] == [1, 1, 1, 2, 1, 1, 1, 2]
    from hffm_env import ConfigError

    with pytest.raises(ConfigError, match="divide"):
        AggregationSchedule("bad", periods=(2, 3))
    with pytest.raises(ConfigError, match="periods"):
        AggregationSchedule("bad", periods=(0,))


def test_costs_deterministic_by_seed():
    sc = make_scenario("small")
    runs = []
    for seed in (5, 5, 6):
        net = FogNetwork(sc.network, np.random.default_rng(seed))
        runs.append(charge_schedule(net, table1_schedules()["hfm_d2d_2"], 6, sc.payload_bytes).mean())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_charge_before_new_round_is_an_error():
    net = FogNetwork(make_scenario("tiny").network, np.random.default_rng(0))
    L = Ledger()
    L.begin_round(0)
    with pytest.raises(RuntimeError, match="new_round"):
        net.charge_upload(L, "up", {"m": 1.0}, [0])
    net.new_round()
    with pytest.raises(ValueError, match="payload"):
        net.charge_upload(L, "up", {"m": -1.0}, [0])
    with pytest.raises(ValueError, match="top tier"):
        net.charge_upload(L, "up", {"m": 1.0}, [net.topology.top])

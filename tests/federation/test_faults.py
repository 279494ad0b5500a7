"""Faults: dropouts before/after upload, stragglers with a deadline, D2D link failures,
packet loss with retransmission, edge-server outages with each fallback."""

import gymnasium as gym
import networkx as nx
import numpy as np
import pytest
import torch

import hffm_env  # noqa: F401  (registers the ids)
from agents import sample_valid_action
from hffm_env import ConfigError, make_scenario
from hffm_env.federation import Aggregate, Federation
from hffm_env.network import LinkConfig

KIND = ("adapters",)


def _fed(seed=0, preset="tiny", **ov):
    return Federation(make_scenario(preset, federation__local_steps=1, **ov), seed=seed)


def _rows(fed, kinds=KIND, rows=None):
    rows = np.arange(fed.n_nodes) if rows is None else np.asarray(rows)
    return torch.cat([fed.bank[n][torch.as_tensor(rows)].reshape(len(rows), -1) for n in fed.names_of(kinds)], 1)


def _trained(fed):
    fed.begin_round()
    fed.train()
    return _rows(fed).clone()


def _hit(fed, name):
    return sorted({f["device"] for f in fed.faults() if f["fault"] == name})


def _agg_rows(fed, round_index, link):
    rec = fed.ledger.records(round_index)
    sel = (rec["link"] == link) & (rec["stage"] != "train")
    return rec["src"][sel], rec["dst"][sel], rec


# ---------------------------------------------------------------------- dropouts
def test_dropout_before_upload_keeps_own_copy_and_is_not_charged():
    fed = _fed(federation__faults__dropout_before_upload=0.5)
    trained = _trained(fed)
    dropped = _hit(fed, "dropout_before_upload")
    assert dropped and len(dropped) < fed.n_devices
    rec = fed.aggregate(KIND, "edge")
    after = _rows(fed)
    for d in range(fed.n_devices):
        if d in dropped:
            assert torch.equal(after[d], trained[d])  # not overwritten, not half-written
        else:
            assert torch.equal(after[d], after[fed.topology.parent[d]])  # got its edge's aggregate
    assert not set(rec["participants"]["adapters"]) & set(dropped)
    res = fed.end_round()
    src, _, _ = _agg_rows(fed, res.round, "device->edge")
    _, dst, _ = _agg_rows(fed, res.round, "edge->device")
    assert not set(src.tolist()) & set(dropped) and not set(dst.tolist()) & set(dropped)
    assert {f["device"] for f in res.faults if f["fault"] == "dropout_before_upload"} == set(dropped)
    assert all(torch.isfinite(t).all() for t in fed.bank.values())


def test_dropout_after_upload_counts_in_the_aggregate_but_gets_nothing_back():
    fed, clean = _fed(federation__faults__dropout_after_upload=0.5), _fed()
    trained, _ = _trained(fed), _trained(clean)
    dropped = _hit(fed, "dropout_after_upload")
    assert dropped and len(dropped) < fed.n_devices
    fed.aggregate(KIND, "edge")
    clean.aggregate(KIND, "edge")
    edges = np.arange(fed.n_devices, fed.n_nodes - 1)
    # its upload arrived: the edge aggregates equal the fault-free run's
    assert torch.equal(_rows(fed, rows=edges), _rows(clean, rows=edges))
    after = _rows(fed)
    for d in dropped:
        assert torch.equal(after[d], trained[d])
    res = fed.end_round()
    src, _, _ = _agg_rows(fed, res.round, "device->edge")
    _, dst, _ = _agg_rows(fed, res.round, "edge->device")
    assert set(dropped) <= set(src.tolist())
    assert not set(dst.tolist()) & set(dropped)


@pytest.mark.parametrize("participation", [1.0, 0.5])
@pytest.mark.parametrize("when", ["dropout_before_upload", "dropout_after_upload"])
def test_a_dropped_device_relays_nothing_and_devices_behind_it_are_cut_off(when, participation):
    """A participant that drops out forwards no one's D2D traffic (a device that did not
    take part still relays): exactly the devices whose only way to their head ran
    through a dropped one are reported unreachable and keep their own copy, and every
    charged path avoids it (one that dropped after uploading still sends its own)."""
    for seed in range(60):
        fed = _fed(
            seed=seed,
            network__d2d_radius_m=45.0,
            federation__participation=participation,
            **{f"federation__faults__{when}": 0.3},
        )
        trained = _trained(fed)
        dropped = _hit(fed, when)
        t = fed.topology
        g = _working_graph(fed)
        took_part = [int(d) for d in fed._participants if when == "dropout_after_upload" or d not in dropped]

        def reaches(d, avoid):
            head = int(t.heads[t.cluster[d]])
            h = g.copy()
            h.remove_nodes_from(set(avoid) - {d})
            return d == head or (head in h and nx.has_path(h, d, head))

        expected = sorted(d for d in took_part if not reaches(d, dropped))
        behind = [d for d in expected if reaches(d, [])]
        if behind and (participation == 1.0 or len(fed._participants) < fed.n_devices):
            break
    assert behind, "no seed put a dropped device on the only way to a head"
    assert sorted(np.nonzero(~fed.net.relaying)[0].tolist()) == dropped  # only reported dropouts stop
    rec = fed.aggregate(KIND, "d2d", path="gather")
    unreachable = sorted(d for f in fed.faults() if f["fault"] == "d2d_unreachable" for d in f["devices"])
    assert unreachable == expected
    assert not set(rec["participants"]["adapters"]) & set(expected)
    after = _rows(fed)
    for d in expected:
        assert torch.equal(after[d], trained[d])
    tree = fed.net.routes(1.0)
    for d in np.nonzero(tree.reached)[0]:
        hop = tree.next_hop[d]
        while hop >= 0 and tree.next_hop[hop] >= 0:
            assert hop not in dropped  # never a relay
            hop = tree.next_hop[hop]
    res = fed.end_round()
    r = fed.ledger.records(res.round)
    gather = r["step"].astype(str) == "d2d:gather"
    assert gather.any() and not set(r["src"][gather].tolist()) & set(expected)
    if when == "dropout_after_upload":
        assert set(dropped) & set(r["src"][gather].tolist())  # its own upload still went


# ---------------------------------------------------------------------- stragglers
def test_stragglers_past_the_deadline_miss_the_aggregation_and_the_round_stops_waiting():
    sc = make_scenario("tiny", federation__local_steps=1)
    cycles = sc.network.compute.cycles_per_sample * sc.federation.batch_size
    deadline = 3.0 * cycles / sc.network.compute.cpu_freq_hz_range[0]  # every device on time unless slowed 10x
    ov = dict(
        federation__faults__straggler_fraction=0.5,
        federation__faults__straggler_slowdown=10.0,
        federation__faults__round_deadline_s=deadline,
    )
    fed, clean = _fed(**ov), _fed()
    trained, _ = _trained(fed), _trained(clean)
    slow = _hit(fed, "straggler")
    late = _hit(fed, "deadline_miss")
    assert slow and late == slow
    rec = fed.aggregate(KIND, "edge")
    clean.aggregate(KIND, "edge")
    assert not set(rec["participants"]["adapters"]) & set(late)
    after = _rows(fed)
    for d in late:
        assert torch.equal(after[d], trained[d])
    res, ref = fed.end_round(), clean.end_round()
    assert res.cost.stage_latency_s["train"] == pytest.approx(deadline)
    assert ref.cost.stage_latency_s["train"] < deadline
    # a straggler computes the same cycles: the same energy
    assert res.cost.stage_energy_j["train"] == pytest.approx(ref.cost.stage_energy_j["train"])


# ---------------------------------------------------------------------- links
def _working_graph(fed):
    g = nx.Graph()
    g.add_nodes_from(range(fed.n_devices))
    g.add_edges_from(map(tuple, fed.topology.d2d.edges[fed.net.d2d_up]))
    return g


def test_d2d_link_failures_cut_devices_off_and_routes_avoid_down_links():
    for seed in range(20):
        fed = _fed(seed=seed, network__faults__d2d_failure=0.5)
        trained = _trained(fed)
        g = _working_graph(fed)
        heads = fed.topology.heads
        cut = [d for d in range(fed.n_devices) if not nx.has_path(g, d, int(heads[fed.topology.cluster[d]]))]
        if cut:
            break
    assert cut, "no seed cut a device off its head"
    down = [f["link"] for f in fed.faults() if f["fault"] == "d2d_link_down"]
    assert sorted(map(tuple, down)) == sorted(map(tuple, fed.topology.d2d.edges[~fed.net.d2d_up].tolist()))
    rec = fed.aggregate(KIND, "d2d", path="gather")
    unreachable = [f for f in fed.faults() if f["fault"] == "d2d_unreachable"]
    assert unreachable and sorted(unreachable[0]["devices"]) == sorted(cut)
    assert not set(rec["participants"]["adapters"]) & set(cut)
    after = _rows(fed)
    for d in cut:
        assert torch.equal(after[d], trained[d])
    # gossip moves hop by hop: no row may use a down link
    fed.aggregate(KIND, "d2d", path="gossip", gossip_rounds=2)
    res = fed.end_round()
    rec = fed.ledger.records(res.round)
    hop = np.char.startswith(rec["step"].astype(str), "gossip")
    used = {tuple(sorted(p)) for p in zip(rec["src"][hop].tolist(), rec["dst"][hop].tolist())}
    assert used and not used & {tuple(e) for e in down}


def test_relay_over_a_cut_d2d_route_fails_and_copies_nothing():
    for seed in range(40):
        fed = _fed(seed=seed, network__faults__d2d_failure=0.6)
        fed.begin_round()
        comp = fed.net.d2d_components()
        pairs = [
            (a, b)
            for a in range(fed.n_devices)
            for b in range(fed.n_devices)
            if a != b and fed.topology.cluster[a] == fed.topology.cluster[b] and comp[a] != comp[b]
        ]
        if pairs:
            break
    assert pairs
    a, b = pairs[0]
    before = _rows(fed).clone()
    rec = fed.relay("adapters", a, b, "d2d")
    assert rec["failed"] == "d2d_link_down"
    assert torch.equal(_rows(fed), before)
    assert any(f["fault"] == "relay_failed" and f["target"] == b for f in fed.faults())
    res = fed.end_round()
    assert "d2d" not in res.cost.per_link


@pytest.mark.parametrize("scope", ["edge", "d2d"])
def test_packet_loss_retransmissions_are_charged_and_reported(scope):
    lossy, clean = _fed(network__faults__packet_loss=0.3), _fed()
    out = []
    for fed in (lossy, clean):
        fed.begin_round()
        fed.train()
        fed.aggregate(KIND, scope)
        out.append(fed.end_round())
    res, ref = out
    moved = sum(v.bytes for v in res.cost.per_module.values())
    base = sum(v.bytes for v in ref.cost.per_module.values())
    loss = [f for f in res.faults if f["fault"] == "packet_loss"]
    assert len(loss) == 1 and loss[0]["retransmitted_packets"] > 0
    assert moved - base == pytest.approx(loss[0]["retransmitted_bytes"], rel=1e-9)
    assert 1.2 < moved / base < 1.8  # about 1/(1 - 0.3) sends per packet
    assert res.latency_s > ref.latency_s and res.energy_j > ref.energy_j
    # the modules themselves arrive intact: the same values as the lossless round
    assert torch.equal(_rows(lossy), _rows(clean))


# ---------------------------------------------------------------------- edge outages
def test_edge_outage_skip_leaves_the_cluster_alone():
    fed = _fed(federation__faults__edge_outage=1.0, federation__faults__outage_fallback="skip")
    trained = _trained(fed)
    assert {f["cluster"] for f in fed.faults() if f["fault"] == "edge_outage"} == set(range(fed.topology.n_clusters))
    rec = fed.aggregate(KIND, "edge")
    assert rec["outage"] == {"clusters": list(range(fed.topology.n_clusters)), "fallback": "skip"}
    assert torch.equal(_rows(fed), trained)
    res = fed.end_round()
    assert "device->edge" not in res.cost.per_link


def test_edge_outage_falls_back_to_d2d_consensus():
    fed = _fed(federation__faults__edge_outage=1.0, federation__faults__outage_fallback="d2d")
    twin = _fed()
    _trained(fed), _trained(twin)
    rec = fed.aggregate(KIND, "edge")
    twin.aggregate(KIND, "d2d", path="gather")
    devs = np.arange(fed.n_devices)
    assert torch.equal(_rows(fed, rows=devs), _rows(twin, rows=devs))
    assert rec["outage"]["fallback"] == "d2d"
    assert fed.end_round().operations[-1]["fallback_for"] == 0


def test_edge_outage_falls_back_to_the_cloud_over_the_direct_uplink():
    direct = LinkConfig("wireless", bandwidth_hz=2e6, tx_power_w=0.2)
    fed = _fed(
        network__direct_uplink=direct, federation__faults__edge_outage=1.0, federation__faults__outage_fallback="cloud"
    )
    twin = _fed(network__direct_uplink=direct)
    trained, _ = _trained(fed), _trained(twin)
    fed.aggregate(KIND, "edge")
    twin.aggregate(KIND, "edge")
    devs, edges = np.arange(fed.n_devices), np.arange(fed.n_devices, fed.n_nodes - 1)
    assert torch.equal(_rows(fed, rows=devs), _rows(twin, rows=devs))  # the cloud did the edges' work
    assert torch.equal(_rows(fed, rows=edges), trained[edges])  # servers that are down keep their copy
    res = fed.end_round()
    assert "device->cloud" in res.cost.per_link and "device->edge" not in res.cost.per_link


def test_cloud_fallback_without_a_direct_uplink_is_a_config_error():
    with pytest.raises(ConfigError, match="outage_fallback.*direct_uplink"):
        make_scenario("tiny", federation__faults__edge_outage=0.1, federation__faults__outage_fallback="cloud")


def test_edge_outage_fails_relays_and_requests_through_the_server():
    fed = _fed(
        federation__faults__edge_outage=1.0,
        federation__inference__requests_per_device=1.0,
        federation__inference__device_memory_bytes_range=(1.0, 2.0),
    )  # nobody hosts: all go to the edge
    fed.run_round([Aggregate(("adapters",), "d2d")])  # round 0: the edges are down
    fed.begin_round()  # round 1: repaired (edge_repair = 1)
    fed.end_round()
    fed.begin_round()  # round 2: down again
    assert fed.edge_down.all()
    a, b = [int(x) for x in fed.topology.members(0)[:2]]
    before = _rows(fed).clone()
    assert fed.relay("adapters", a, b, "edge")["failed"] == "edge_outage"
    assert torch.equal(_rows(fed), before)
    n = len(fed.requests)
    assert n > 0
    served = fed.serve(["edge"] * n)
    assert served.failed.all() and not served.correct.any() and (served.latency_s == 0).all()
    res = fed.end_round()
    assert sum(f["fault"] == "request_failed" for f in res.faults) == n
    assert "inference" not in res.cost.per_module


# ---------------------------------------------------------------------- the env with every fault on
_TINY = make_scenario("tiny")
_SLOWEST_S = (
    _TINY.network.compute.cycles_per_sample
    * _TINY.federation.local_steps
    * _TINY.federation.batch_size
    / _TINY.network.compute.cpu_freq_hz_range[0]
)
FAULTS = dict(
    federation__faults__dropout_before_upload=0.2,
    federation__faults__dropout_after_upload=0.2,
    federation__faults__straggler_fraction=0.3,
    federation__faults__round_deadline_s=2.0 * _SLOWEST_S,
    federation__faults__edge_outage=0.3,
    network__faults__d2d_failure=0.2,
    network__faults__packet_loss=0.1,
)


def test_env_keeps_stepping_under_every_fault_and_reports_them():
    env = gym.make("hffm_env/HFFM-v0", preset="tiny", **FAULTS)
    twin = gym.make("hffm_env/HFFM-v0", preset="tiny", **FAULTS)
    obs, _ = env.reset(seed=3)
    twin.reset(seed=3)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(8):
        action = sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)
        obs, r, term, trunc, info = env.step(action)
        obs2, r2, *_, info2 = twin.step(action)
        assert np.isfinite(r) and all(np.isfinite(v).all() for v in obs.values())
        assert r == r2 and info["faults"] == info2["faults"]
        seen |= {f["fault"] for f in info["faults"]}
    fed = env.unwrapped.core.fed
    assert all(torch.isfinite(t).all() for t in fed.bank.values())
    assert {
        "dropout_before_upload",
        "dropout_after_upload",
        "straggler",
        "deadline_miss",
        "edge_outage",
        "d2d_link_down",
        "packet_loss",
    } <= seen


@pytest.mark.parametrize(
    "field,value",
    [
        ("federation__faults__edge_outage", 1.5),
        ("federation__faults__straggler_slowdown", 0.5),
        ("federation__faults__round_deadline_s", 0.0),
        ("federation__faults__outage_fallback", "retry"),
        ("network__faults__packet_loss", 1.0),
        ("network__faults__d2d_failure", -0.1),
    ],
)
def test_bad_fault_configs_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field.split("__", 1)[1].replace("__", ".")):
        make_scenario("tiny", **{field: value})


# ---------------------------------------------------------------------- review fixes
def test_retransmissions_are_reported_even_below_one_packet_and_do_not_move_the_channel():
    fed = _fed(network__faults__packet_loss=0.5, network__faults__packet_bytes=1e7)  # one packet per transfer
    fed.begin_round()
    fed.train()
    fed.aggregate(KIND, "edge")
    res = fed.end_round()
    loss = [f for f in res.faults if f["fault"] == "packet_loss"]
    assert loss and loss[0]["retransmitted_bytes"] > 0 and loss[0]["retransmitted_packets"] >= 1
    # how many transfers a policy makes must not change what the channel does next
    rates = []
    for ops in ([Aggregate(KIND, "edge")], []):
        f = _fed(network__faults__packet_loss=0.1)
        f.run_round(ops)
        f.begin_round()
        rates.append(f.net.uplink_rate_bps.copy())
    assert np.array_equal(rates[0], rates[1], equal_nan=True)  # the top tier has no uplink: NaN


def test_specialists_extra_steps_follow_the_upload_and_miss_no_deadline():
    def round_of(deadline):
        fed = _fed(federation__specialist_steps=4, federation__faults__round_deadline_s=deadline)
        fed.begin_round()
        fed.specialize(0, "adapters")
        fed.train()
        rec = fed.aggregate(KIND, "edge")
        return fed, rec, fed.end_round().cost

    _, _, free = round_of(None)
    own = free.stage_latency_s["train"]
    # four extra steps take four times the device's own step, after its upload
    fed, rec, cost = round_of(own * 1.01)
    assert 0 not in _hit(fed, "deadline_miss")
    assert 0 in rec["participants"]["adapters"]
    assert cost.stage_latency_s["train"] == pytest.approx(own)
    assert cost.per_module["specialist"].seconds > 0


def test_cloud_fallback_clusters_are_not_held_to_d2d_reachability():
    direct = LinkConfig("wireless", bandwidth_hz=2e6, tx_power_w=0.2)
    for seed in range(30):
        fed = _fed(
            seed=seed,
            network__direct_uplink=direct,
            network__faults__d2d_failure=0.7,
            federation__faults__edge_outage=1.0,
            federation__faults__outage_fallback="cloud",
        )
        fed.begin_round()
        fed.train()
        cut = np.nonzero(~fed.net.reaches_head())[0]
        if cut.size:
            break
    assert cut.size
    rec = fed.aggregate(KIND, "cloud", path="d2d", d2d_clusters=list(range(fed.topology.n_clusters)))
    assert set(cut.tolist()) <= set(rec["participants"]["adapters"])
    assert not any(f["fault"] == "d2d_unreachable" for f in fed.faults())


def test_an_overflowing_update_is_skipped_whole_and_reported():
    fed = _fed()
    fed.begin_round()
    for n in fed.names_of(("adapters",)):
        fed.bank[n][3] = 1e38  # float32 overflow in the backward pass of device 3
    before = {n: t[3].clone() for n, t in fed.bank.items()}
    fed.train()
    assert {f["device"] for f in fed.faults() if f["fault"] == "update_skipped"} == {3}
    assert all(torch.equal(fed.bank[n][3], before[n]) for n in fed.bank)  # kept whole, not half-written
    others = [n for n in fed.bank if torch.isfinite(fed.bank[n][:3]).all()]
    assert others == list(fed.bank)


# ---------------------------------------------------------------------- non-finite uploads
def _poison(fed, d, kinds=KIND):
    """A NaN and an inf in device ``d``'s copy of ``kinds``."""
    names = fed.names_of(kinds)
    fed.bank[names[0]][d].view(-1)[0] = float("nan")
    fed.bank[names[-1]][d].view(-1)[-1] = float("inf")


def _bits(t):
    return t.view(torch.int32)  # compares NaNs too, bit for bit


@pytest.mark.parametrize(
    "scope,path,rule",
    [
        ("edge", None, "mean"),
        ("cloud", None, "mean"),
        ("cloud", "star", "mean"),
        ("d2d", "gather", "mean"),
        ("d2d", "gossip", "mean"),
        ("edge", None, "median"),
        ("edge", None, "trimmed_mean"),
        ("edge", None, "krum"),
        ("edge", None, "multi_krum"),
    ],
)
def test_a_nonfinite_upload_is_refused_and_reported_and_spoils_no_other_copy(scope, path, rule):
    """The receiver refuses a contribution with a NaN or an inf: every aggregate is
    then bit for bit the one a round makes where that device did not upload (dropped
    out before uploading). Unlike a dropout, the device is online and gets the
    aggregate back (in gossip, where it mixes nothing in, it keeps its copy)."""
    fed, twin = _fed(federation__rule=rule), _fed(federation__rule=rule)
    _trained(fed), _trained(twin)
    d = int(np.nonzero(fed.topology.cluster == 0)[0][1])
    assert fed.holds("adapters")[d] and d in fed._participants
    _poison(fed, d)
    poisoned = _rows(fed, rows=[d]).clone()
    twin._dropped_before[d] = True  # the same round with device d silent
    fed.aggregate(KIND, scope, path=path)
    twin.aggregate(KIND, scope, path=path)
    others = np.setdiff1d(np.arange(fed.n_nodes), [d])
    assert torch.equal(_rows(fed, rows=others), _rows(twin, rows=others))
    assert [f for f in fed.faults() if f["fault"] == "nonfinite_upload"] == [
        {"fault": "nonfinite_upload", "node": d, "kinds": ["adapters"], "op": 0}
    ]
    mine = _rows(fed, rows=[d])
    if path == "gossip":
        assert torch.equal(_bits(mine), _bits(poisoned))
        return
    assert torch.isfinite(_rows(fed)).all()
    # it holds what its cluster's other participants got back
    mate = int(np.nonzero(fed.topology.cluster == 0)[0][0])
    assert torch.equal(mine, _rows(fed, rows=[mate]))
    assert not torch.equal(mine, _rows(twin, rows=[d]))


def test_a_refused_upload_is_charged_and_its_sender_gets_the_aggregate_back():
    fed = _fed()
    _trained(fed)
    d = int(np.nonzero(fed.topology.cluster == 0)[0][0])
    _poison(fed, d)
    fed.aggregate(KIND, "edge")
    res = fed.end_round()
    src, _, _ = _agg_rows(fed, res.round, "device->edge")
    _, dst, _ = _agg_rows(fed, res.round, "edge->device")
    assert d in src.tolist() and d in dst.tolist()  # sent (and refused), then served
    assert any(f["fault"] == "nonfinite_upload" and f["node"] == d for f in res.faults)


def test_a_cluster_whose_every_upload_is_refused_forms_no_aggregate_and_gets_nothing():
    fed = _fed()
    trained = _trained(fed)
    cluster0 = np.nonzero(fed.topology.cluster == 0)[0]
    for d in cluster0:
        _poison(fed, int(d))
    poisoned = _rows(fed, rows=cluster0).clone()
    edge0 = fed.topology.tier_offsets[1]
    fed.aggregate(KIND, "edge")
    assert torch.equal(_bits(_rows(fed, rows=cluster0)), _bits(poisoned))
    assert torch.equal(_rows(fed, rows=[edge0]), trained[[edge0]])  # the server's row is untouched
    assert torch.isfinite(_rows(fed, rows=np.nonzero(fed.topology.cluster == 1)[0])).all()
    res = fed.end_round()
    _, dst, _ = _agg_rows(fed, res.round, "edge->device")
    assert not set(dst.tolist()) & set(cluster0.tolist())
    assert sorted(f["node"] for f in res.faults if f["fault"] == "nonfinite_upload") == cluster0.tolist()


def test_a_relay_of_a_nonfinite_copy_is_refused_charged_and_reported():
    fed = _fed()
    fed.begin_round()
    _poison(fed, 1)
    before = _rows(fed).clone()
    rec = fed.relay("adapters", 1, 5, "edge")
    assert rec["failed"] == "nonfinite_upload"
    assert torch.equal(_bits(_rows(fed)), _bits(before))  # the target kept its copy
    faults = fed.faults()
    assert {"fault": "nonfinite_upload", "node": 1, "kinds": ["adapters"], "op": 0} in faults
    assert any(f["fault"] == "relay_failed" and f["reason"] == "nonfinite_upload" for f in faults)
    assert fed.end_round().cost.per_module["adapters"].bytes > 0  # the copy did travel


def test_env_observations_stay_in_their_space_after_a_nonfinite_injection():
    from hffm_env.envs.codec import AGG_OPTIONS

    env = gym.make("hffm_env/Aggregation-v0", preset="tiny")
    env.reset(seed=0)
    fed = env.unwrapped.core.fed
    d = int(np.nonzero(fed.topology.cluster == 0)[0][0])
    _poison(fed, d, ("adapters", "prompts"))
    edge = np.full(env.action_space.shape, AGG_OPTIONS.index("edge"))
    assert env.unwrapped.action_masks().reshape(len(edge), -1)[np.arange(len(edge)), edge].all()
    obs, reward, *_, info = env.step(edge)
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    assert {"nonfinite_upload"} <= {f["fault"] for f in info["faults"]}
    assert all(torch.isfinite(t).all() for t in fed.bank.values())
    rng = np.random.default_rng(0)
    for _ in range(2):
        obs, *_ = env.step(sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng))
        assert env.observation_space.contains(obs)


def test_a_copy_that_overflows_answers_nothing_and_is_reported():
    """A head scaled past float32's range gives non-finite logits: its samples count as
    wrong with probability 0 (the scores stay finite) and the round reports it."""
    fed = _fed()
    fed.begin_round()
    fed.train()
    task = fed.tasks[0]
    holder = next(d for d in range(fed.n_devices) if task in fed.active_tasks(d))
    for n in fed.names_of((f"heads.{task}",)):
        fed.bank[n][holder] = 3e38
    res = fed.end_round()
    assert res.accuracy[holder][task] == 0.0 and res.p_correct[holder][task] == 0.0
    hit = [f for f in res.faults if f["fault"] == "nonfinite_output"]
    assert [f["device"] for f in hit] == [holder] and hit[0]["samples"][task] > 0
    assert all(np.isfinite(v) for per in res.p_correct.values() for v in per.values())

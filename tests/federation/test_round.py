"""The federated round: aggregation scopes as mixing over the holder axis, their ledger charges."""

import numpy as np
import pytest
import torch

from hffm_env import make_scenario
from hffm_env.federation import Aggregate, Federation
from hffm_env.federation.aggregation import consensus_rate, gossip_matrix, mixing_matrix


def _fed(seed=0, **ov):
    return Federation(make_scenario("tiny", **ov), seed=seed)


def _trained(seed=0, **ov):
    """A federation with one round of local training done and the round still open."""
    fed = _fed(seed, **ov)
    fed.begin_round()
    fed.train()
    return fed


def _rows(fed, kind, rows):
    return torch.cat([fed.bank[n][torch.as_tensor(rows)].reshape(len(rows), -1) for n in fed.names_of([kind])], 1)


def test_local_training_changes_only_what_devices_hold():
    fed = _trained(federation__local_steps=2)  # a device with two tasks takes them in turn
    before = {n: t[0].clone() for n, t in fed.fresh.items()}
    held = fed.holds("heads.sensor")
    assert held.any() and (~held).any()
    moved = [not torch.equal(fed.bank["heads.sensor.w"][d], before["heads.sensor.w"]) for d in range(fed.n_devices)]
    assert moved == held.tolist()
    servers = np.arange(fed.n_devices, fed.n_nodes)
    assert torch.equal(fed.bank["adapters.down_w"][servers], before["adapters.down_w"].expand(len(servers), -1, -1, -1))


def test_cloud_aggregation_makes_every_copy_equal():
    fed = _trained()
    fed.aggregate(fed.kinds, "cloud")
    topo = fed.topology
    for kind in fed.kinds:
        holders = np.nonzero(fed.holds(kind))[0]
        rows = _rows(fed, kind, np.concatenate([holders, topo.tier_ids(1), [topo.top]]))
        assert torch.allclose(rows, rows[:1].expand_as(rows), atol=1e-6), kind


def test_edge_aggregation_equal_within_cluster_differs_across():
    fed = _trained()
    fed.aggregate(["adapters"], "edge")
    topo = fed.topology
    per_cluster = []
    for c in range(topo.n_clusters):
        members = topo.members(c)
        rows = _rows(fed, "adapters", np.concatenate([members, [topo.tier_offsets[1] + c]]))
        assert torch.allclose(rows, rows[:1].expand_as(rows), atol=1e-6)
        per_cluster.append(rows[0])
    assert not torch.allclose(per_cluster[0], per_cluster[1])
    # the cloud still holds the initial copy until a cloud aggregation
    assert torch.equal(
        _rows(fed, "adapters", [topo.top])[0],
        torch.cat([fed.fresh[n][0].reshape(-1) for n in fed.names_of(["adapters"])]),
    )


def test_aggregate_is_the_sample_weighted_mean_of_holders():
    fed = _trained()
    kind = "heads.sensor"
    holders = np.nonzero(fed.holds(kind))[0]
    w = fed.sample_counts(kind)[holders]
    before = _rows(fed, kind, holders).double()
    others = np.nonzero(~fed.holds(kind))[0]
    untouched = _rows(fed, kind, others).clone()
    fed.aggregate([kind], "cloud")
    expected = (torch.as_tensor(w)[:, None] * before).sum(0) / w.sum()
    assert torch.allclose(_rows(fed, kind, holders)[0].double(), expected, atol=1e-5)
    assert torch.equal(_rows(fed, kind, others), untouched)


def test_mixing_matrix_rows_are_group_weights():
    groups = np.array([0, 0, 1, 1, 1])
    w = np.array([1.0, 3.0, 1.0, 1.0, 2.0])
    M = mixing_matrix(groups, w, np.array([1, 0, 1])).to_dense().numpy()
    assert np.allclose(M, [[0, 0, 0.25, 0.25, 0.5], [0.25, 0.75, 0, 0, 0], [0, 0, 0.25, 0.25, 0.5]])


def test_d2d_gather_equalises_clusters_and_charges_d2d_and_no_uplink():
    fed = _trained()
    fed.aggregate(["adapters"], "d2d", path="gather")
    topo = fed.topology
    for c in range(topo.n_clusters):
        rows = _rows(fed, "adapters", topo.members(c))
        assert torch.allclose(rows, rows[:1].expand_as(rows), atol=1e-6)
    cost = fed.end_round().cost
    assert cost.per_link["d2d"].bytes > 0
    assert "device->edge" not in cost.per_link


def test_gossip_distance_to_weighted_average_shrinks():
    dists = []
    for rounds in (1, 2, 4, 16):
        fed = _trained()
        holders = np.nonzero(fed.holds("adapters"))[0]
        c = fed.topology.cluster[holders]
        w = fed.sample_counts("adapters")[holders]
        x = _rows(fed, "adapters", holders).double()
        fed.aggregate(["adapters"], "d2d", path="gossip", gossip_rounds=rounds)
        y = _rows(fed, "adapters", holders).double()
        d = 0.0
        for k in np.unique(c):
            sel = c == k
            avg = (torch.as_tensor(w[sel])[:, None] * x[sel]).sum(0) / w[sel].sum()
            d += float((y[sel] - avg).norm())
        dists.append(d)
    assert dists[0] > dists[1] > dists[2] > dists[3]
    assert dists[3] < 0.05 * dists[0]


def test_gossip_weights_are_doubly_stochastic_and_contract():
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    for kind in ("metropolis", "laplacian"):
        W = gossip_matrix(4, edges, kind)
        assert np.allclose(W.sum(0), 1) and np.allclose(W.sum(1), 1) and np.allclose(W, W.T)
        assert 0 < consensus_rate(W) < 1


def test_ledger_charges_real_module_bytes_both_ways():
    fed = _trained()
    rec = fed.aggregate(["adapters", "heads"], "edge")
    cost = fed.end_round().cost
    n = len(rec["participants"]["adapters"])
    assert cost.per_module["adapters"].bytes == pytest.approx(2 * n * fed.wire_bytes["adapters"])
    n_s = len(rec["participants"]["heads.sensor"])
    assert cost.per_module["heads.sensor"].bytes == pytest.approx(2 * n_s * fed.wire_bytes["heads.sensor"])


def test_moving_less_costs_less():
    costs = {}
    for kinds in (("heads",), tuple(_fed().kinds)):
        fed = _trained()
        fed.aggregate(kinds, "cloud")
        costs[kinds] = fed.end_round().cost
    small, big = costs.values()
    assert small.energy_j < big.energy_j and small.latency_s < big.latency_s


def test_star_leaves_edge_copies_and_paths_differ_in_cost():
    fed = _trained()
    topo = fed.topology
    edge_before = _rows(fed, "adapters", topo.tier_ids(1)).clone()
    fed.aggregate(["adapters"], "cloud", path="star")
    assert torch.equal(_rows(fed, "adapters", topo.tier_ids(1)), edge_before)
    results = {}
    for path in ("direct", "d2d"):
        f = _trained()
        f.aggregate(["adapters"], "cloud", path=path)
        results[path] = f.end_round().cost
    assert "d2d" in results["d2d"].per_link and "d2d" not in results["direct"].per_link


def test_aggregation_only_in_chosen_clusters():
    fed = _trained()
    topo = fed.topology
    other = topo.members(1)
    before = _rows(fed, "adapters", other).clone()
    fed.aggregate(["adapters"], "edge", clusters=[0])
    assert torch.equal(_rows(fed, "adapters", other), before)
    rows = _rows(fed, "adapters", topo.members(0))
    assert torch.allclose(rows, rows[:1].expand_as(rows), atol=1e-6)


def test_bad_operation_arguments_name_the_field():
    fed = _trained()
    with pytest.raises(Exception, match="scope must be one of"):
        fed.aggregate(["adapters"], "planet")
    with pytest.raises(Exception, match="path .*must be one of"):
        fed.aggregate(["adapters"], "edge", path="gossip")
    with pytest.raises(ValueError, match="module kind must be one of"):
        fed.aggregate(["wings"], "edge")
    with pytest.raises(ValueError, match="clusters must be in"):
        fed.aggregate(["adapters"], "edge", clusters=[7])
    with pytest.raises(Exception, match="rule must be one of"):
        fed.aggregate(["adapters"], "edge", rule="vote")
    fed.end_round()
    with pytest.raises(RuntimeError, match="begin_round"):
        fed.aggregate(["adapters"], "edge")


def test_round_result_reports_accuracy_and_costs_and_is_deterministic():
    def run(seed):
        fed = _fed(seed)
        out = [fed.run_round([Aggregate(("adapters", "heads"), "edge")]) for _ in range(2)]
        return out[-1]

    a, b, c = run(3), run(3), run(4)
    assert a.accuracy == b.accuracy and a.cost.energy_j == b.cost.energy_j and a.train_loss == b.train_loss
    assert a.accuracy != c.accuracy or a.cost.energy_j != c.cost.energy_j
    assert 0.0 <= a.mean_accuracy <= 1.0 and set(a.task_accuracy) <= {"scene_qa", "sensor"}
    assert a.cost.latency_s > 0 and a.cost.per_link and a.operations[0]["op"] == "aggregate"


def test_training_improves_accuracy_over_rounds():
    fed = _fed(0, federation__local_steps=4)
    first = fed.run_round([Aggregate(fed.kinds, "cloud")]).mean_accuracy
    for _ in range(5):
        last = fed.run_round([Aggregate(fed.kinds, "cloud")]).mean_accuracy
    assert last > first + 0.05


def test_local_epochs_read_each_shard_once_and_charge_what_was_trained():
    """``local_epochs=1``: every participant takes ceil(n/B) steps per task shard of
    n samples, sees each of its training samples in that epoch, and pays compute for
    the samples it really processed (so devices with more data train longer)."""
    from hffm_env.model.train import plan_batches, step_tasks

    fed = _fed(federation__local_epochs=1.0, federation__batch_size=4)
    view, B = fed.view(), 4
    devs = np.arange(fed.n_devices)
    plan = plan_batches(view, devs, 0, B, np.random.default_rng(0), epochs=1.0)
    steps = []
    for d in devs:
        shards = view.shards.train[d]
        seq = step_tasks(view, int(d), 0, B, 1.0)
        assert sorted(seq) == sorted(t for t, idx in shards.items() for _ in range(-(-len(idx) // B)))
        seen = {
            t: np.concatenate([idx for step in plan for dd, tt, idx in step if dd == d and tt == t]) for t in shards
        }
        assert all(set(seen[t].tolist()) == set(idx.tolist()) for t, idx in shards.items())
        steps.append(len(seq))
    assert len(set(steps)) > 1  # unequal shards, unequal budgets

    fed.run_round()
    rows = fed.ledger.records(fed.round_index)
    cycles = fed.scenario.network.compute.cycles_per_sample * np.array(steps) * B
    freq = fed.topology.cpu_freq_hz[: fed.n_devices]
    train = rows["stage"] == "train"
    np.testing.assert_allclose(rows["seconds"][train], (cycles / freq)[rows["src"][train]], rtol=1e-12)


def test_evaluation_set_is_fixed_so_only_the_model_moves_the_score():
    """The set scored each round is drawn once with the data: a round that changes no
    module scores exactly what the round before scored; a trained round changes it."""
    fed = _fed(federation__local_steps=0)
    shards = fed.eval_shards()
    first = fed.run_round()
    second = fed.run_round()
    assert all(np.array_equal(a[t], b[t]) for a, b in zip(shards, fed.eval_shards()) for t in a)
    assert first.p_correct == second.p_correct and first.accuracy == second.accuracy
    fed2 = _fed(federation__local_steps=1)
    assert fed2.run_round().p_correct != first.p_correct
    assert all(0.0 < p < 1.0 for per in first.p_correct.values() for p in per.values())

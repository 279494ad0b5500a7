"""The mechanisms that make each decision family matter: cold starts that persist,
requests a device cannot answer itself, and specialists that train more and pay for it."""

import numpy as np
import pytest
import torch

from hffm_env import ConfigError, make_scenario
from hffm_env.federation import Aggregate, Federation, Specialize


def _rows(fed, kind, rows):
    return torch.cat([fed.bank[n][torch.as_tensor(rows)].reshape(len(rows), -1) for n in fed.names_of([kind])], 1)


def _newcomer(seed=None, **ov):
    """A federation after a warm-up and a device that just got a task it never held."""
    if seed is None:
        seed = next(s for s in range(20) if not Federation(make_scenario("tiny"), seed=s).holds("heads.scene_qa").all())
    fed = Federation(make_scenario("tiny", **ov), seed=seed)
    for _ in range(2):
        fed.run_round([Aggregate(fed.kinds, "edge")])
    d = int(np.nonzero(~fed.holds("heads.scene_qa"))[0][0])
    fed.add_task(d, "scene_qa")
    return fed, d


# ---------------------------------------------------------------------- cold starts
def test_cold_start_persists_outside_the_aggregation_until_trained_long_enough():
    fed, d = _newcomer(federation__cold_start_rounds=3)
    head = "heads.scene_qa"
    assert fed.cold(head)[d]
    for r in range(3):
        res = fed.run_round([Aggregate(fed.kinds, "edge")])
        agg = next(op for op in res.operations if op["op"] == "aggregate")
        # the device trains the head from scratch but neither sends it nor receives the aggregate
        assert d not in agg["participants"][head]
        assert d in agg["participants"]["adapters"]
        if r < 2:
            assert [c.rounds for c in fed.cold_starts if (c.node, c.kind) == (d, head)] == [r + 1]
    # trained for cold_start_rounds rounds: it joins the head's federation
    assert not fed.cold(head)[d]
    res = fed.run_round([Aggregate(fed.kinds, "edge")])
    assert d in next(op for op in res.operations if op["op"] == "aggregate")["participants"][head]


def test_a_relay_ends_the_cold_start_at_once():
    fed, d = _newcomer()
    head = "heads.scene_qa"
    src = int(next(x for x in np.nonzero(fed.holds(head))[0] if not fed.cold(head)[x] and x != d))
    fed.begin_round()
    fed.relay(head, src, d, "edge")
    assert not fed.cold(head)[d]
    fed.train()
    rec = fed.aggregate(fed.kinds, "edge")
    fed.end_round()
    assert d in rec["participants"][head]
    assert not any((c.node, c.kind) == (d, head) for c in fed.cold_starts)


def test_cold_start_rounds_is_validated():
    with pytest.raises(ConfigError, match="cold_start_rounds"):
        make_scenario("tiny", federation__cold_start_rounds=0)


# ---------------------------------------------------------------------- who answers a request
def test_foreign_requests_go_to_tasks_the_requester_does_not_hold():
    fed = Federation(
        make_scenario(
            "tiny", federation__inference__requests_per_device=3.0, federation__inference__foreign_fraction=1.0
        ),
        seed=0,
    )
    req = fed.requests
    assert len(req)
    for d, t in zip(req.device, req.task):
        lacks = [x for x in fed.tasks if x not in fed.members.tasks[d]]
        # a device that holds every task asks about its own
        assert (t not in fed.members.tasks[d]) if lacks else (t in fed.members.tasks[d])
    own = Federation(
        make_scenario(
            "tiny", federation__inference__requests_per_device=3.0, federation__inference__foreign_fraction=0.0
        ),
        seed=0,
    )
    assert all(t in own.members.tasks[d] for d, t in zip(own.requests.device, own.requests.task))


def test_only_trained_copies_answer_and_the_peer_is_one_of_them():
    fed = Federation(make_scenario("tiny"), seed=0)
    holders = np.nonzero(fed.holds("heads.sensor"))[0]
    lacking = [d for d in range(fed.n_devices) if d not in holders]
    topo = fed.topology
    # nothing trained yet: no copy answers
    assert not any(fed.answers(d, "sensor") for d in range(fed.n_devices))
    fed.run_round([Aggregate(fed.kinds, "edge")])
    assert all(fed.answers(int(d), "sensor") for d in holders)
    assert not any(fed.answers(d, "sensor") for d in lacking)
    # an edge server answers once it aggregated the head, the cloud (never reached) does not
    for c in range(topo.n_clusters):
        has = np.isin(holders, topo.members(c)).any()
        assert fed.answers(int(topo.tier_offsets[1] + c), "sensor") == bool(has)
    assert not fed.answers(topo.top, "sensor")
    for d in lacking:
        peer = fed.peer_for(d, "sensor")
        mates = [p for p in topo.members(topo.cluster[d]) if p in holders and fed.can_host()[p] and p != d]
        if mates:
            assert peer in mates


def test_served_probability_follows_the_serving_copy():
    fed = Federation(
        make_scenario(
            "tiny", federation__inference__requests_per_device=2.0, federation__inference__foreign_fraction=0.5
        ),
        seed=0,
    )
    for _ in range(3):
        fed.run_round([Aggregate(fed.kinds, "edge")])
    fed.begin_round()
    req = fed.requests
    mask = fed.offload_mask()
    local = [i for i in range(len(req)) if mask[i, 0]]
    assert local
    res = fed.serve(tuple("local" if mask[i, 0] else "edge" for i in range(len(req))))
    assert res.mean_p_correct == pytest.approx(float(res.p_correct.mean()))
    # a request on one of its own tasks run locally gets what the requester's own copy
    # gives its input; one on a foreign task is answered by a copy never trained for it
    own = [i for i in local if req.task[i] in fed.active_tasks(int(req.device[i]))]
    assert own and len(own) < len(local)
    for i in local:
        d, t = int(req.device[i]), req.task[i]
        if i not in own:
            assert not fed.answers(d, t)
            continue
        test = tuple({t: req.sample[i : i + 1]} if x == d else {} for x in range(fed.n_devices))
        acc, prob = fed.measure(test=test, devices=[d])
        assert res.p_correct[i] == pytest.approx(prob[d][t], rel=1e-5)
        assert res.correct[i] == bool(acc[d][t])
    fed.end_round()


# ---------------------------------------------------------------------- specialists
def test_specialist_trains_more_pays_compute_and_no_download():
    def run(special: bool, steps: int):
        fed = Federation(make_scenario("tiny", federation__specialist_steps=steps), seed=0)
        spec = int(np.nonzero(fed.holds("heads.scene_qa"))[0][0])
        ops = [Specialize(spec, "heads.scene_qa"), Specialize(spec, "adapters")] if special else []
        res = fed.run_round(ops + [Aggregate(fed.kinds, "edge")])
        return fed, spec, res.cost

    plain, spec, plain_cost = run(False, 1)
    lazy, _, lazy_cost = run(True, 0)
    busy, _, busy_cost = run(True, 1)
    # one extra step on both owned modules together, charged once as compute
    assert "specialist" not in lazy_cost.per_module and "specialist" in busy_cost.per_module
    extra = busy_cost.per_module["specialist"]
    assert extra.seconds > 0 and extra.joules > 0
    assert busy_cost.energy_j > lazy_cost.energy_j
    for kind in ("heads.scene_qa", "adapters"):
        assert not torch.equal(_rows(busy, kind, [spec]), _rows(lazy, kind, [spec]))
    # modules it does not own are trained as everyone's
    assert torch.equal(_rows(busy, "prompts", [spec]), _rows(lazy, "prompts", [spec]))
    # it keeps its copies: the download of what it owns is not charged
    down = "edge->device"
    saved = plain_cost.per_link[down].bytes - lazy_cost.per_link[down].bytes
    assert saved == pytest.approx(plain.wire_bytes["heads.scene_qa"] + plain.wire_bytes["adapters"])

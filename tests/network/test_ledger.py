"""How charges combine: max over parallel lanes, sum within a lane and over stages, energy summed."""

import numpy as np
import pytest

from hffm_env.network import Ledger


def test_parallel_max_serial_sum_energy_sum():
    L = Ledger()
    L.begin_round(0)
    L.charge(
        stage="up",
        module="adapters",
        link="device->edge",
        src=[0, 1, 2],
        dst=10,
        nbytes=[1, 2, 3],
        seconds=[1.0, 3.0, 2.0],
        joules=[0.5, 0.5, 0.5],
    )
    # node 1 also sends heads in the same stage: its two rows run back to back
    L.charge(stage="up", module="heads", link="device->edge", src=1, dst=10, nbytes=1, seconds=0.5, joules=0.1)
    L.charge(stage="cloud", module="adapters", link="edge->cloud", src=10, dst=11, nbytes=6, seconds=4.0, joules=2.0)
    r = L.end_round()
    assert r.stage_latency_s == {"up": 3.5, "cloud": 4.0}
    assert r.latency_s == pytest.approx(7.5)
    assert r.energy_j == pytest.approx(3.6)
    assert r.per_module["heads"].joules == pytest.approx(0.1)
    assert r.per_module["adapters"].bytes == 12
    assert set(r.per_link) == {"device->edge", "edge->cloud"}


def test_lanes_override_sender():
    L = Ledger()
    L.begin_round(3)
    # one sender, three receivers on separate channels: parallel lanes
    L.charge(
        stage="down",
        module="m",
        link="edge->device",
        src=10,
        dst=[0, 1, 2],
        lane=[0, 1, 2],
        nbytes=1,
        seconds=[1.0, 2.0, 1.5],
        joules=1.0,
    )
    r = L.end_round()
    assert r.latency_s == 2.0 and r.energy_j == 3.0
    rec = L.records(3)
    assert list(rec["lane"]) == [0, 1, 2] and set(rec["stage"]) == {"down"}


def test_rounds_means_and_bounded_history():
    L = Ledger(keep_rounds=2)
    for r in range(5):
        L.begin_round(r)
        L.charge(stage="s", module="m", link="l", src=0, dst=1, nbytes=1, seconds=float(r), joules=2.0 * r)
        L.end_round()
    assert L.mean() == (2.0, 4.0)
    assert len(L.summaries) == 5
    with pytest.raises(KeyError):
        L.records(0)
    assert L.records(4)["seconds"][0] == 4.0
    assert L.module_totals()["m"].joules == 20.0


def test_bad_charges_raise():
    L = Ledger()
    with pytest.raises(RuntimeError, match="begin_round"):
        L.charge(stage="s", module="m", link="l", src=0, dst=1, nbytes=1, seconds=1, joules=1)
    L.begin_round(0)
    with pytest.raises(ValueError, match="seconds"):
        L.charge(stage="s", module="m", link="l", src=0, dst=1, nbytes=1, seconds=np.nan, joules=1)
    with pytest.raises(ValueError, match="joules"):
        L.charge(stage="s", module="m", link="l", src=0, dst=1, nbytes=1, seconds=1, joules=-1)
    L.end_round()
    with pytest.raises(ValueError, match="already recorded"):
        L.begin_round(0)


def test_empty_round():
    L = Ledger()
    L.begin_round(0)
    r = L.end_round()
    assert r.latency_s == 0.0 and r.energy_j == 0.0


def test_groups_proceed_independently_and_steps_in_series():
    L = Ledger()
    L.begin_round(0)
    # cluster 0: gather 1 s then broadcast 4 s; cluster 1: gather 3 s then broadcast 1 s
    L.charge(
        stage="consensus",
        step="gather",
        group=[0, 0, 1],
        module="m",
        link="d2d",
        src=[0, 1, 2],
        dst=9,
        nbytes=1,
        seconds=[1.0, 0.5, 3.0],
        joules=1.0,
    )
    L.charge(
        stage="consensus",
        step="broadcast",
        group=[0, 1],
        module="m",
        link="d2d",
        src=9,
        dst=[0, 2],
        lane=[0, 2],
        nbytes=1,
        seconds=[4.0, 1.0],
        joules=1.0,
    )
    L.charge(stage="cloud", module="m", link="backhaul", src=9, dst=10, nbytes=1, seconds=2.0, joules=1.0)
    r = L.end_round()
    # per-cluster chains: 1+4=5 and 3+1=4 -> 5, not max(gather)+max(broadcast)=7
    assert r.stage_latency_s == {"consensus": 5.0, "cloud": 2.0}
    assert r.latency_s == 7.0 and r.energy_j == 6.0
    assert set(L.records(0)["step"]) == {"gather", "broadcast", ""}

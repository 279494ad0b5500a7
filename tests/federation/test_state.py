"""The bank state as a public object: state_dict / load_state_dict round trip and refusals."""

import numpy as np
import pytest
import torch

from hffm_env import make_scenario
from hffm_env.federation import Aggregate, Federation


def _trained(seed=0, rounds=2):
    fed = Federation(make_scenario("tiny"), seed=seed)
    for _ in range(rounds):
        fed.run_round([Aggregate(fed.kinds, "edge")])
    return fed


def test_state_dict_round_trip_restores_banks_optimiser_and_trackers():
    fed, fresh = _trained(), Federation(make_scenario("tiny"), seed=0)
    fresh.run_round([])  # a run one round in: trackers are restored relative to its round
    fresh.state.load_state_dict(fed.state.state_dict(fed.round_index), fresh.round_index)
    for name, t in fed.bank.items():
        assert torch.equal(fresh.bank[name], t) and torch.equal(fresh.synced[name], fed.synced[name])
        assert torch.equal(fresh.adam.m[name], fed.adam.m[name]) and torch.equal(
            fresh.adam.step[name], fed.adam.step[name]
        )
    shift = fed.round_index - fresh.round_index
    np.testing.assert_array_equal(
        fresh.last_sync, np.where(fed.last_sync >= 0, np.maximum(fed.last_sync - shift, 0), -1)
    )
    np.testing.assert_array_equal(fresh.trained_ever, fed.trained_ever)


def test_a_bad_state_dict_is_refused_by_name_and_changes_nothing():
    fed, other = _trained(), Federation(make_scenario("tiny"), seed=0)
    before = {n: t.clone() for n, t in other.bank.items()}
    sd = fed.state.state_dict(fed.round_index)
    name = next(iter(fed.bank))
    bad = dict(sd, **{f"bank/{name}": sd[f"bank/{name}"][:1]})
    with pytest.raises(ValueError, match=f"'bank/{name}' has shape"):
        other.state.load_state_dict(bad, other.round_index)
    with pytest.raises(ValueError, match="'trained_ever' is missing"):
        other.state.load_state_dict({k: v for k, v in sd.items() if k != "trained_ever"}, other.round_index)
    with pytest.raises(ValueError, match="rounds ago"):
        other.state.load_state_dict(dict(sd, last_sync_ago=torch.full_like(sd["last_sync_ago"], -5)), 0)
    assert all(torch.equal(other.bank[n], t) for n, t in before.items())

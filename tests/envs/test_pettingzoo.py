"""The PettingZoo env: API tests, agents, per-agent rewards, determinism."""

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

from hffm_env.pettingzoo import hffm_v0


def test_parallel_api_with_edge_agents():
    parallel_api_test(hffm_v0.parallel_env(env__max_rounds=3), num_cycles=4)


def test_parallel_api_with_device_agents_and_own_rewards():
    env = hffm_v0.parallel_env(
        env__max_rounds=3,
        env__device_agents=True,
        env__shared_reward=False,
        federation__inference__requests_per_device=1.0,
    )
    parallel_api_test(env, num_cycles=4)


def test_aec_api_through_the_converter():
    api_test(hffm_v0.env(env__max_rounds=3), num_cycles=4)
    assert hffm_v0.raw_env is hffm_v0.HFFMParallelEnv


def _rollout(seed, **ov):
    env = hffm_v0.parallel_env(env__max_rounds=3, **ov)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    while env.agents:
        actions = {a: np.full(env.action_space(a).shape, 2, dtype=np.int64) for a in env.agents}
        obs, rew, term, trunc, info = env.step(actions)
        out.append((obs, rew))
    return env, out


def test_agents_spaces_and_determinism():
    env, a = _rollout(5)
    assert env.possible_agents == ["edge_0", "edge_1"]
    assert env.action_space("edge_0").nvec.tolist() == [7] * len(env.core.codec.groups)
    _, b = _rollout(5)
    _, c = _rollout(6)
    for x, y in zip(a[1:], b[1:]):
        assert all(np.array_equal(x[0][k], y[0][k]) for k in x[0]) and x[1] == y[1]
    assert any(not np.array_equal(a[1][0][k], c[1][0][k]) for k in a[1][0])


def test_shared_and_per_agent_rewards():
    _, shared = _rollout(1)
    assert len(set(shared[1][1].values())) == 1
    _, own = _rollout(1, env__shared_reward=False)
    assert len(set(own[1][1].values())) == 2


def test_bad_agent_action_is_named():
    env = hffm_v0.parallel_env()
    env.reset(seed=0)
    acts = {a: env.action_space(a).sample() for a in env.agents}
    acts["edge_1"] = np.full(env.action_space("edge_1").shape, 9)
    with pytest.raises(ValueError, match="action of edge_1 must be in"):
        env.step(acts)
    with pytest.raises(ValueError, match="missing"):
        env.step({})

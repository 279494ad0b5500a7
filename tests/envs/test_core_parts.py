"""The env core's three collaborators: the declared observation features, the action
codec and the reward registry, as the Gymnasium and PettingZoo fronts use them."""

import pathlib

import gymnasium as gym
import numpy as np
import pytest

import hffm_env  # noqa: F401 (registers the ids)
from agents import make_policy
from hffm_env import ConfigError, make_scenario
from hffm_env.envs import rewards
from hffm_env.envs.codec import AGG_OPTIONS
from hffm_env.envs.features import FEATURES, layout, spec_markdown
from hffm_env.federation import Aggregate, Federation
from hffm_env.federation.schedules import schedule_ops
from hffm_env.network.schedules import schedule_from_key, table1_schedules
from hffm_env.pettingzoo import hffm_v0

DOCS = pathlib.Path(__file__).parents[2] / "docs" / "environments.md"


def _make(env_id="hffm_env/HFFM-v0", **ov):
    return gym.make(env_id, preset="tiny", **{"env__max_rounds": 3, **ov})


# ---------------------------------------------------------------------- features
def test_the_docs_observation_table_is_the_generated_one():
    text = DOCS.read_text()
    start, end = "<!-- observation-table:start -->\n", "\n<!-- observation-table:end -->"
    assert text[text.index(start) + len(start) : text.index(end)] == spec_markdown()


def test_declared_features_tile_every_table_and_say_what_the_columns_hold():
    env = _make(env__max_requests=4)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(env.unwrapped.core.codec.default_action())
    core = env.unwrapped.core
    fed, cols = core.fed, layout(core)
    for table in FEATURES:
        slices = list(cols[table.key].values())
        assert [s.start for s in slices] == [0] + [s.stop for s in slices[:-1]]  # contiguous, in order
        assert slices[-1].stop == obs[table.key].shape[-1] == env.observation_space[table.key].shape[-1]
    dev = obs["devices"]
    np.testing.assert_array_equal(dev[:, cols["devices"]["is_head"]].ravel(), np.isin(np.arange(8), fed.topology.heads))
    np.testing.assert_array_equal(dev[:, cols["devices"]["active"]].ravel(), fed.members.active)
    score = dev[:, cols["devices"]["score"]]
    for d, per in core.score.items():
        for t, v in per.items():
            assert score[d, core.tasks.index(t)] == np.float32(v)
    n_req = min(len(fed.requests), 4)
    assert obs["requests"][:, cols["requests"]["present"]].sum() == n_req
    g = obs["globals"]
    assert g[cols["globals"]["round"]][0] == np.float32(1 / 3)
    assert g[cols["globals"]["mean_score"]][0] == np.float32(core.mean_score)


# ---------------------------------------------------------------------- codec
@pytest.mark.parametrize("key", ["edge_only", "hfm_2", "hfm_d2d_2", "star", "d2d_every_3"])
def test_a_schedule_policy_plays_exactly_the_schedules_operations(key):
    """Aggregation-v0 under the schedule's policy trains the same models as the
    federation run with the schedule's operations directly."""
    env = _make("hffm_env/Aggregation-v0")
    env.reset(seed=3)
    fed_seed = env.unwrapped.core.fed.seed
    policy = make_policy(key, env)
    for _ in range(3):
        action, _ = policy.predict(None)
        env.step(action)
    direct = Federation(env.unwrapped.scenario, seed=fed_seed)
    for r in range(1, 4):
        direct.run_round(schedule_ops(schedule_from_key(key), r, direct.kinds))
    via_env = env.unwrapped.core.fed
    for name, t in direct.bank.items():
        assert np.array_equal(t.numpy(), via_env.bank[name].numpy()), name


def test_encode_refuses_what_the_block_cannot_say():
    env = _make("hffm_env/Aggregation-v0")
    env.reset(seed=0)
    codec, kinds = env.unwrapped.core.codec, env.unwrapped.core.kinds
    hfm = schedule_ops(table1_schedules()["hfm_2"], 2, kinds)
    block = codec.encode_aggregation(hfm)
    assert set(block.tolist()) == {AGG_OPTIONS.index("cloud")}
    assert codec.decode_aggregation(block)[0].scope == "cloud"
    with pytest.raises(ValueError, match="gossip"):
        codec.encode_aggregation([Aggregate(kinds, "d2d", path="gossip")])
    with pytest.raises(ValueError, match="rule"):
        codec.encode_aggregation([Aggregate(kinds, "edge", rule="median")])
    with pytest.raises(ValueError, match="part of"):
        codec.encode_aggregation([Aggregate(("experts",), "edge")])
    with pytest.raises(ValueError, match="two operations"):
        codec.encode_aggregation([Aggregate(kinds, "edge"), Aggregate(("adapters",), "cloud")])
    some = codec.encode_aggregation([Aggregate(kinds, "cloud", path="d2d", d2d_clusters=(1,))]).reshape(2, -1)
    assert set(some[0]) == {AGG_OPTIONS.index("cloud")} and set(some[1]) == {AGG_OPTIONS.index("cloud_via_head")}


def test_default_action_is_the_default_policy_and_valid():
    env = _make()
    obs, _ = env.reset(seed=1)
    codec = env.unwrapped.core.codec
    for _ in range(2):
        action = codec.default_action()
        mask = env.unwrapped.action_masks()
        assert mask[np.cumsum(np.r_[0, env.action_space.nvec[:-1]]) + action].all()
        np.testing.assert_array_equal(action, make_policy("default", env).predict(obs)[0])
        obs, *_ = env.step(action)


# ---------------------------------------------------------------------- rewards
def test_reward_is_the_sum_of_the_configured_terms_and_terms_plug_in_by_name():
    rewards.register_reward_term("pending_cold_starts", lambda view, config: -0.5 * view.cold_starts)
    try:
        env = _make("hffm_env/Relaying-v0", env__reward_terms=("accuracy", "pending_cold_starts"))
        env.reset(seed=0)
        _, reward, *_, info = env.step(env.unwrapped.core.codec.default_action())
        assert list(info["reward_terms"]) == ["accuracy", "pending_cold_starts"]
        assert info["reward_terms"]["pending_cold_starts"] == -0.5 * len(env.unwrapped.core.fed.cold_starts)
        assert reward == sum(info["reward_terms"].values())
        with pytest.raises(ValueError, match="exists already"):
            rewards.register_reward_term("accuracy", lambda v, c: 0.0)
    finally:
        rewards.REWARD_TERMS.pop("pending_cold_starts")
    with pytest.raises(ConfigError, match="env.reward_terms"):
        make_scenario("tiny", env__reward_terms=("accuracy", "no_such_term"))


def test_per_agent_rewards_are_the_same_terms_over_each_agents_scope():
    env = hffm_v0.parallel_env("tiny", env__max_rounds=2, env__shared_reward=False, env__reward_terms=("accuracy",))
    env.reset(seed=0)
    before = {d: dict(v) for d, v in env.core.score.items()}
    edge = AGG_OPTIONS.index("edge")
    _, rew, *_ = env.step({a: np.full(env.action_space(a).shape, edge) for a in env.agents})
    # no events on this env, so the scores after the round are the core's
    after, topo, w = env.core.score, env.core.fed.topology, env.scenario.env.w_acc
    for c in range(topo.n_clusters):
        members = topo.members(c)
        delta = np.mean([v for d in members for v in after[d].values()]) - np.mean(
            [v for d in members for v in before[d].values()]
        )
        assert rew[f"edge_{c}"] == pytest.approx(w * delta)


# ---------------------------------------------------------------------- episode end
def test_step_after_the_episode_ended_raises_until_reset():
    env = _make("hffm_env/Aggregation-v0", env__max_rounds=1).unwrapped
    env.reset(seed=0)
    *_, truncated, _ = env.step(env.core.codec.default_action())
    assert truncated
    with pytest.raises(RuntimeError, match="truncated.*call reset"):
        env.step(env.core.codec.default_action())
    env.reset(seed=0)
    assert env.step(env.core.codec.default_action())[3]

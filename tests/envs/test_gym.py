"""The Gymnasium envs as a user meets them: gym.make, checkers, determinism, masks, reward, render."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

import hffm_env
from agents import sample_valid_action
from hffm_env.envs.codec import InvalidAction

IDS = list(hffm_env.ENV_IDS)


def _make(env_id, preset="tiny", **ov):
    return gym.make(env_id, preset=preset, **{"env__max_rounds": 3, **ov})


def _valid_action(env, rng):
    """A random action among the valid options of every dimension."""
    return sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass_on_tiny(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = _make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_checkers_pass_on_larger_presets(preset):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    # one specialist step and 4 evaluation samples keep the checkers' random actions quick
    env = _make(
        "hffm_env/HFFM-v0",
        preset,
        env__max_rounds=2,
        federation__specialist_steps=1,
        federation__local_steps=1,
        federation__eval_max_samples=4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)


def test_make_without_import_uses_the_module_prefix():
    code = (
        "import gymnasium as gym; e = gym.make('hffm_env:hffm_env/Aggregation-v0', preset='tiny'); "
        "o, _ = e.reset(seed=0); print(sorted(o))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "devices" in out


def test_every_id_is_one_entry_point_with_its_decisions_and_defaults():
    from hffm_env.envs import ENTRY_POINT
    from hffm_env.envs.config import EVENT_DEFAULTS, REQUEST_DEFAULTS

    specs = {i: gym.spec(i) for i in IDS}
    assert {s.entry_point for s in specs.values()} == {ENTRY_POINT}
    assert specs["hffm_env/Relaying-v0"].kwargs["decisions"] == ("relaying",)
    assert specs["hffm_env/HFFM-v0"].kwargs["scenario_defaults"] == {**EVENT_DEFAULTS, **REQUEST_DEFAULTS}
    env = gym.make("hffm_env/Relaying-v0", federation__events__join=0.0)
    events = env.unwrapped.scenario.federation.events
    assert events.task_arrival == EVENT_DEFAULTS["federation__events__task_arrival"] and events.join == 0.0
    assert env.unwrapped.core.decisions == ("relaying",)


def test_same_seed_same_trajectory_different_seed_differs():
    def run(seed):
        env = _make("hffm_env/HFFM-v0", env__max_rounds=4)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        traj = [obs]
        for _ in range(3):
            obs, r, te, tr, info = env.step(_valid_action(env, rng))
            traj.append((obs, r, info))
        return traj

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a[1:], b[1:]):
        assert all(np.array_equal(x[0][k], y[0][k]) for k in x[0])
        assert x[1] == y[1] and x[2] == y[2]
    assert any(not np.array_equal(a[1][0][k], c[1][0][k]) for k in a[1][0])


def test_reward_terms_info_and_truncation():
    env = _make("hffm_env/Aggregation-v0", env__max_rounds=2)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    cloud_all = np.full(env.action_space.shape, 4, dtype=np.int64)
    obs, r, te, tr, info = env.step(cloud_all)
    terms = info["reward_terms"]
    assert r == pytest.approx(sum(terms.values()))
    assert terms["latency"] < 0 and terms["energy"] < 0
    assert info["per_module"]["adapters"]["bytes"] > 0 and "device->edge" in info["per_link"]
    assert set(info["accuracy_per_task"]) <= {"scene_qa", "sensor"} and info["accuracy_per_node"]
    assert not tr
    nothing = np.zeros(env.action_space.shape, dtype=np.int64)
    aggregated_energy_j = info["energy_j"]
    obs, r2, te, tr, info = env.step(nothing)
    assert tr and not te
    # no aggregation: the round costs its local training's compute alone, and the
    # reward's energy term scales with the round's joules
    assert set(info["per_link"]) == {"compute"} and info["operations"] == []
    assert 0 < info["energy_j"] == pytest.approx(info["per_link"]["compute"]["joules"])
    assert info["energy_j"] < aggregated_energy_j
    assert info["reward_terms"]["energy"] / terms["energy"] == pytest.approx(info["energy_j"] / aggregated_energy_j)


def test_doing_nothing_costs_less_than_cloud_aggregation():
    costs = {}
    for choice in (0, 4):
        env = _make("hffm_env/Aggregation-v0")
        env.reset(seed=1)
        _, _, _, _, info = env.step(np.full(env.action_space.shape, choice, dtype=np.int64))
        costs[choice] = info["energy_j"]
    assert costs[0] < costs[4]


def test_energy_budget_terminates():
    env = _make("hffm_env/Aggregation-v0", env__max_rounds=10, env__energy_budget_j=1e-9)
    env.reset(seed=0)
    _, _, te, tr, info = env.step(np.full(env.action_space.shape, 4, dtype=np.int64))
    assert te and not tr and info["energy_spent_j"] > 1e-9


def test_out_of_space_raises_and_masked_raises_or_is_penalised():
    env = _make("hffm_env/Offloading-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match="outside"):
        env.step(np.full(env.action_space.shape, 9, dtype=np.int64))
    with pytest.raises(InvalidAction, match="shape"):
        env.step(np.zeros(3, dtype=np.int64))
    strict = _make("hffm_env/Offloading-v0", env__invalid_action="raise")
    strict.reset(seed=0)
    mask = strict.unwrapped.action_masks().reshape(-1, 4)
    bad = np.argmin(mask, axis=1)
    assert not mask.all()
    with pytest.raises(InvalidAction, match="offloading action\\[\\d+\\]=\\d is masked out; allowed"):
        strict.step(bad.astype(np.int64))
    env.reset(seed=0)
    _, r, _, _, info = env.step(bad.astype(np.int64))
    assert info["invalid_actions"] and info["reward_terms"]["invalid"] < 0


def test_masks_match_federation_state():
    env = _make("hffm_env/HFFM-v0")
    env.reset(seed=0)
    core = env.unwrapped.core
    mask = env.unwrapped.action_masks()
    assert mask.shape == (int(env.action_space.nvec.sum()),)
    spec = core.codec.masks("specialization")
    fed = core.fed
    for d in range(core.n_devices):
        for j, k in enumerate(core.codec.special_kinds):
            assert spec[d * len(core.codec.special_kinds) + j, 1] == fed.holds(k)[d]
    off = core.codec.masks("offloading")
    assert np.array_equal(off[: len(fed.requests)], fed.offload_mask()[: core.config.max_requests])


def test_relaying_env_serves_cold_starts():
    env = _make("hffm_env/Relaying-v0", env__max_rounds=8, federation__events__task_arrival=0.5)
    env.reset(seed=3)
    relayed = 0
    for _ in range(6):
        core = env.unwrapped.core
        pending = len(core.fed.cold_starts)
        mask = core.codec.masks("relaying")
        action = np.array([int(np.nonzero(m)[0][-1]) for m in mask], dtype=np.int64)
        _, _, _, _, info = env.step(action)
        relayed += info["operations"].count("relay")
        if pending and mask[:pending, 1:].any():
            assert "relay" in info["operations"]
    assert relayed > 0


def test_render_rgb_array_shows_traffic():
    env = _make("hffm_env/Aggregation-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, dtype=np.int64))
    quiet = env.render()
    env.step(np.full(env.action_space.shape, 4, dtype=np.int64))
    busy = env.render()
    assert quiet.shape == busy.shape and quiet.ndim == 3 and quiet.shape[2] == 3 and quiet.dtype == np.uint8
    assert np.abs(quiet.astype(int) - busy.astype(int)).sum() > 0
    env.close()


def test_flattened_observation_for_box_algorithms():
    from gymnasium.wrappers import FlattenObservation

    env = FlattenObservation(_make("hffm_env/Aggregation-v0"))
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1 and env.observation_space.contains(obs)


def test_bad_override_names_the_field():
    with pytest.raises(hffm_env.ConfigError, match="env.max_rounds must be an integer"):
        gym.make("hffm_env/Aggregation-v0", env__max_rounds=0)
    with pytest.raises(hffm_env.ConfigError, match="preset must be one of"):
        gym.make("hffm_env/Aggregation-v0", preset="huge")


def test_maskable_ppo_learns_a_few_steps():
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    models = {}
    for cls, env_id in ((MaskablePPO, "hffm_env/Offloading-v0"), (PPO, "hffm_env/Aggregation-v0")):
        env = _make(env_id, env__max_rounds=4)
        model = cls("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0)
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(8)
        assert model.num_timesteps == 8
        assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters())), cls
        models[cls] = model, env
    # the masked policy samples only options the mask allows (Offloading masks some out)
    model, env = models[MaskablePPO]
    obs, _ = env.reset(seed=1)
    nvec = env.action_space.nvec
    for _ in range(2):
        mask = env.unwrapped.action_masks()
        allowed = np.split(mask, np.cumsum(nvec)[:-1])
        assert not mask.all()
        for _ in range(5):
            action, _ = model.predict(obs, action_masks=mask, deterministic=False)
            assert all(allowed[i][a] for i, a in enumerate(action))
        obs, *_ = env.step(action)


def test_only_the_model_moves_the_accuracy_term_even_when_events_change_the_set():
    """No training, no aggregation, no relays: the model never changes, so the
    reward's accuracy term is exactly 0 every round, although task arrivals, joins and
    leaves change which (device, task) pairs are scored (the set is re-based on them)."""
    env = gym.make(
        "hffm_env/Relaying-v0",
        preset="tiny",
        federation__local_steps=0,
        env__default_schedule="none",
        federation__events__task_arrival=0.5,
        federation__events__join=0.3,
        federation__events__leave=0.3,
    )
    env.reset(seed=3)
    core = env.unwrapped.core
    events = 0
    for _ in range(6):
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.int64))
        events += len(info["events"])
        assert info["reward_terms"]["accuracy"] == 0.0
        _, fresh = core.fed.measure()
        assert core.score == fresh and core.mean_score == pytest.approx(
            np.mean([p for per in fresh.values() for p in per.values()])
        )
    assert events > 0

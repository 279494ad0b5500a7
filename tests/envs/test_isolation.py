"""Determinism across processes, isolation inside one.

* The same seeds give bit-identical trajectories in a stable-baselines3
  ``SubprocVecEnv`` (spawned workers) and a ``DummyVecEnv``, and in a child
  interpreter with another hash seed.
* Two envs in one process share nothing mutable: interleaving another env's steps
  does not change an env's trajectory, their module banks never share storage, and
  what they do share (the synthetic data pools, the frozen backbone) is read-only.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import hffm_env  # noqa: F401  (registers the ids)
from agents import sample_valid_action

torch.set_num_threads(1)

ENV_ID = "hffm_env/HFFM-v0"  # every decision, events and inference requests on
KW = {"preset": "tiny", "env__max_rounds": 20}
ROOT = Path(__file__).resolve().parents[2]


def _valid(env, rng: np.random.Generator) -> np.ndarray:
    return sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)


def _record(h: "hashlib._Hash", obs: dict, reward=None, info=None) -> None:
    for k in sorted(obs):
        h.update(k.encode())
        h.update(np.ascontiguousarray(obs[k]).tobytes())
    if reward is not None:
        h.update(np.float64(reward).tobytes())
        h.update(json.dumps(info, sort_keys=True, default=repr).encode())


def trajectory_digest(seed: int = 3, steps: int = 4) -> str:
    """SHA-256 of ``steps`` steps of ``ENV_ID`` (observations, rewards, infos, final banks)."""
    torch.set_num_threads(1)
    env = gym.make(ENV_ID, **KW)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    _record(h, obs)
    for _ in range(steps):
        obs, reward, _, _, info = env.step(_valid(env, rng))
        _record(h, obs, reward, info)
    bank = env.unwrapped.federation.bank
    for n in sorted(bank):
        h.update(n.encode())
        h.update(bank[n].numpy().tobytes())
    return h.hexdigest()


# ============================================================== across processes
def test_subproc_and_dummy_vec_envs_give_bit_identical_trajectories(monkeypatch):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned workers inherit it
    # gym.make with the module prefix: a spawned worker imports hffm_env itself
    fns = [functools.partial(gym.make, "hffm_env:" + ENV_ID, **KW) for _ in range(2)]
    dummy = DummyVecEnv(fns)
    sub = SubprocVecEnv(fns, start_method="spawn")
    try:
        dummy.seed(11)
        sub.seed(11)  # workers get seeds 11 and 12
        obs_d, obs_s = dummy.reset(), sub.reset()
        nvec = dummy.action_space.nvec
        rng = np.random.default_rng(0)
        for _ in range(4):
            for k in obs_d:
                assert obs_d[k].dtype == obs_s[k].dtype and obs_d[k].tobytes() == obs_s[k].tobytes(), k
            masks_d, masks_s = dummy.env_method("action_masks"), sub.env_method("action_masks")
            assert all(np.array_equal(a, b) for a, b in zip(masks_d, masks_s))
            actions = np.stack([sample_valid_action(m, nvec, rng) for m in masks_d])
            obs_d, rew_d, done_d, info_d = dummy.step(actions)
            obs_s, rew_s, done_s, info_s = sub.step(actions)
            # DummyVecEnv keeps rewards in a float32 buffer, SubprocVecEnv stacks the float64 ones;
            # the float64 rewards are checked through their terms, which both pass on untouched
            assert rew_d.tobytes() == rew_s.astype(rew_d.dtype).tobytes() and np.array_equal(done_d, done_s)
            assert [i["reward_terms"] for i in info_d] == [i["reward_terms"] for i in info_s]
            assert [sum(i["reward_terms"].values()) for i in info_s] == rew_s.tolist()
        # the two seeds do differ: the comparison above is not between constants
        assert not np.array_equal(obs_d["devices"][0], obs_d["devices"][1])
    finally:
        dummy.close()
        sub.close()


def test_child_interpreter_with_another_hash_seed_computes_the_same_trajectory():
    parent_seed = os.environ.get("PYTHONHASHSEED")
    child_seed = "1" if parent_seed == "0" else "0"
    code = (
        "from tests.envs.test_isolation import trajectory_digest; print(hash('hffm_env')); print(trajectory_digest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": child_seed, "OMP_NUM_THREADS": "1"},
    ).stdout.split()
    assert int(out[-2]) != hash("hffm_env"), "the child's string hashing must differ from the parent's"
    assert out[-1] == trajectory_digest()


# ============================================================== inside one process
def _trajectory(env, seed: int, steps: int, other=None) -> list:
    """``steps`` steps of ``env`` from ``seed``; ``other`` (a callable) runs between them."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [{k: v.copy() for k, v in obs.items()}]
    for _ in range(steps):
        if other is not None:
            other()
        obs, reward, _, _, info = env.step(_valid(env, rng))
        out.append(({k: v.copy() for k, v in obs.items()}, reward, json.dumps(info, sort_keys=True, default=repr)))
    out.append({n: t.clone() for n, t in env.unwrapped.federation.bank.items()})
    return out


def _same(a: list, b: list) -> bool:
    def eq(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, tuple):
            return all(eq(u, v) for u, v in zip(x, y))
        if isinstance(x, (np.ndarray, torch.Tensor)):
            return (
                x.dtype == y.dtype
                and x.shape == y.shape
                and bytes(x.numpy() if torch.is_tensor(x) else x) == bytes(y.numpy() if torch.is_tensor(y) else y)
            )
        return x == y

    return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))


def test_interleaved_steps_of_another_env_do_not_change_a_trajectory():
    alone = _trajectory(gym.make(ENV_ID, **KW), seed=1, steps=4)
    a = gym.make(ENV_ID, **KW)
    a.reset(seed=0)
    rng_a = np.random.default_rng(0)
    calls = []

    def step_a():  # env A steps (and once resets on a third seed) between B's steps
        calls.append(1)
        if len(calls) == 3:
            a.reset(seed=5)
        a.step(_valid(a, rng_a))

    interleaved = _trajectory(gym.make(ENV_ID, **KW), seed=1, steps=4, other=step_a)
    assert len(calls) == 4
    assert _same(alone, interleaved)
    assert not _same(alone, _trajectory(gym.make(ENV_ID, **KW), seed=0, steps=4))  # seeds matter


def _storages(fed) -> set[int]:
    banks = [fed.bank, fed.synced, fed.fresh, fed.adam.m, fed.adam.v, fed.adam.step]
    return {t.untyped_storage().data_ptr() for b in banks for t in b.values() if t.numel()}


def test_module_banks_of_two_envs_never_share_storage():
    a, b = gym.make(ENV_ID, **KW), gym.make(ENV_ID, **KW)
    rng = np.random.default_rng(0)
    for env in (a, b):
        env.reset(seed=0)  # the same seed: the same cached pools, the same draws
    for _ in range(2):
        assert _storages(a.unwrapped.federation).isdisjoint(_storages(b.unwrapped.federation))
        for env in (a, b):
            env.step(_valid(env, rng))
    fed_a = a.unwrapped.federation
    bank = {n: t.clone() for n, t in fed_a.bank.items()}
    b.step(_valid(b, rng))
    assert all(torch.equal(bank[n], t) for n, t in fed_a.bank.items())


def test_shared_data_pools_are_read_only():
    from hffm_env.data.digits import _digits

    a, b = gym.make(ENV_ID, **KW), gym.make(ENV_ID, **KW)
    digits = gym.make(ENV_ID, **KW, data__tasks=("digits_qa", "sensor"))
    for env in (a, b, digits):
        env.reset(seed=0)
    pools_a, pools_b = a.unwrapped.federation.data.pools, b.unwrapped.federation.data.pools
    assert all(pools_a[t] is pools_b[t] for t in pools_a)  # one cached pool per task, shared by both envs
    pools = (*pools_a.values(), *digits.unwrapped.federation.data.pools.values())
    arrays = [
        getattr(p, f)
        for p in pools
        for f in ("label", "image", "tokens", "attention", "sensor")
        if getattr(p, f) is not None
    ]
    arrays += list(_digits())
    for arr in arrays:
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = arr[0]


def test_frozen_backbone_is_shared_and_untouched_by_training():
    from hffm_env.federation.core import load_backbone

    a, b = gym.make(ENV_ID, **KW), gym.make(ENV_ID, **KW)
    a.reset(seed=0)
    b.reset(seed=1)
    bb = a.unwrapped.federation.backbone
    assert bb is b.unwrapped.federation.backbone is load_backbone(a.unwrapped.scenario.model)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    assert not any(p.requires_grad for p in bb.parameters()) and not bb.vilt.training
    rng = np.random.default_rng(0)
    for _ in range(3):
        for env in (a, b):
            info = env.step(_valid(env, rng))[-1]
            assert "train" in {k for k in info["per_link"]} | {k for k in info["per_module"]}  # it trained
    after = bb.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in bb.parameters()) and not bb.vilt.training


def test_reset_releases_the_previous_federation():
    import weakref

    env = gym.make(ENV_ID, **KW)
    env.reset(seed=0)
    old = weakref.ref(env.unwrapped.federation)
    env.step(_valid(env, np.random.default_rng(0)))
    env.reset(seed=1)
    gc.collect()
    assert old() is None, "something still holds the previous episode's federation"

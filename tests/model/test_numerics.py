"""Subnormals flushed to zero inside the package's torch work, on every thread, and nowhere else."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import hffm_env  # noqa: F401  (registers the ids)
from agents import sample_valid_action
from hffm_env.model import numerics

SUBNORMAL = 1e-39


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


POOL_CHECK = f"""
import torch
from hffm_env.model import numerics
torch.set_num_threads(2)
if numerics.flushing() or not numerics.pool_reachable():
    raise SystemExit(77)
x = torch.full((1 << 21,), {SUBNORMAL!r})          # large enough that torch splits it over its threads
assert bool((x != 0).all())
flushing, y = numerics.flush_denormals(lambda: (numerics.flushing(), x * 1.0))()
assert flushing
assert bool((y == 0).all()), "a thread of the pool still computed with subnormals"
assert not numerics.flushing()
assert bool((x * 1.0 != 0).all()), "the pool kept flushing after the scope"
"""


def test_the_scope_flushes_on_every_thread_and_restores_the_callers_state():
    # in a fresh process: the OpenMP pool's threads and their state are process-wide,
    # and other tests in a pytest worker change the thread count
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    run = subprocess.run([sys.executable, "-c", POOL_CHECK], capture_output=True, text=True, env=env)
    if run.returncode == 77:
        pytest.skip("this process already flushes subnormals, or torch's pool is not OpenMP here")
    assert run.returncode == 0, run.stderr


def test_the_state_is_restored_when_the_work_raises():
    if numerics.flushing():
        pytest.skip("this process already flushes subnormals")

    @numerics.flush_denormals
    def fails():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert not numerics.flushing()


def test_a_caller_that_flushes_itself_keeps_flushing():
    if numerics.flushing():
        pytest.skip("this process already flushes subnormals")
    torch.set_flush_denormal(True)
    try:
        assert numerics.flush_denormals(numerics.flushing)()
        assert numerics.flushing()
    finally:
        torch.set_flush_denormal(False)


def _trajectory(env_id, steps=4):
    env = gym.make(env_id, preset="tiny")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    out = [obs]
    for _ in range(steps):
        obs, reward, _, _, info = env.step(
            sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)
        )
        out.append((obs, reward, info["accuracy_per_node"], info["per_module"]))
    return out, env.unwrapped.federation


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("env_id", ["hffm_env/HFFM-v0"])
def test_flushing_leaves_observations_rewards_and_modules_as_they_were(env_id, two_threads, monkeypatch):
    flushed, fed = _trajectory(env_id)
    monkeypatch.setattr(numerics, "_set", lambda on: None)  # the package without the flush
    kept, fed_kept = _trajectory(env_id)
    assert _same(flushed, kept)
    # a module that is exactly 0 may take a subnormal-sized step without the flush (|Δ| < 1e-29)
    for name, t in fed.bank.items():
        diff = (t - fed_kept.bank[name]).abs()
        assert float(diff.max()) < 1e-29, name

"""Seeded trajectories of every id on ``tiny`` against a stored fingerprint.

A refactor must leave them unchanged. The fingerprint holds, per id and step, the
reward, the sum of every observation part, the mean accuracy, the latency and the
energy, taken with one torch thread and compared to 1e-5 (relative or absolute):
another thread count or CPU moves float sums by a few ULPs, which four rounds of
training grow to about 1e-6 in the reward; a real change moves them far more (a
learning rate 0.2 % higher moves the first reward by 1.5e-4). A change of the
numerics that is meant re-takes it:

    python -m tests.test_fingerprint --update
"""

import json
import pathlib
import sys

import gymnasium as gym
import numpy as np
import pytest

import hffm_env
from agents import sample_valid_action

FILE = pathlib.Path(__file__).parent / "data" / "fingerprint_tiny.json"
ROUNDS = 4


def trajectory(env_id: str) -> list[list[float]]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _trajectory(env_id)
    finally:
        torch.set_num_threads(threads)


def _trajectory(env_id: str) -> list[list[float]]:
    env = gym.make(env_id, preset="tiny", env__max_rounds=ROUNDS)
    obs, _ = env.reset(seed=7)
    rng = np.random.default_rng(7)
    rows = [[0.0, *(float(obs[k].sum(dtype=np.float64)) for k in sorted(obs)), 0.0, 0.0, 0.0]]
    for _ in range(ROUNDS):
        action = sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)
        obs, reward, _, _, info = env.step(action)
        rows.append(
            [
                float(reward),
                *(float(obs[k].sum(dtype=np.float64)) for k in sorted(obs)),
                float(info["mean_accuracy"]),
                float(info["latency_s"]),
                float(info["energy_j"]),
            ]
        )
    env.close()
    return rows


@pytest.mark.parametrize("env_id", list(hffm_env.ENV_IDS))
def test_seeded_trajectory_matches_the_stored_fingerprint(env_id):
    stored = json.loads(FILE.read_text())[env_id]
    np.testing.assert_allclose(trajectory(env_id), stored, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        raise SystemExit("usage: python -m tests.test_fingerprint --update")
    FILE.write_text(json.dumps({i: trajectory(i) for i in hffm_env.ENV_IDS}, indent=1) + "\n")
    print(f"wrote {FILE}")

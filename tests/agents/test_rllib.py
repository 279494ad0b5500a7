"""RLlib on the PettingZoo env: train on a local Ray instance with two env runners,
checkpoint, restore, evaluate (the ``rllib`` extra, which ``make test`` installs)."""

import json

import numpy as np
import pytest

from hffm_env import ConfigError
from training.rllib_train import RLlibPolicy, build_config, load_policy, main, restore_algorithm, save, train

ray = pytest.importorskip("ray", reason="the extra rllib (ray[rllib]) is not installed")
pytest.importorskip("ray.rllib", reason="the extra rllib (ray[rllib]) is not installed")


ROUNDS = 4  # rounds per episode: each env runner ends one episode per iteration
OVERRIDES = {"env__max_rounds": ROUNDS, "env__device_agents": True}
BATCH = 8  # env steps per iteration, 4 from each env runner


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance, shut down after the module's tests. RLlib's seed also seeds
    this process's global generators and turns on torch's deterministic algorithms:
    they are put back as they were, for the tests that run after these."""
    import random

    import torch

    saved = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.are_deterministic_algorithms_enabled(),
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])
    torch.use_deterministic_algorithms(saved[3])


def _weights(policy: RLlibPolicy) -> dict:
    return {(mid, name): t.detach().clone() for mid, m in policy.modules.items() for name, t in m.state_dict().items()}


def test_trains_on_two_env_runners_then_restores_and_evaluates(local_ray, tmp_path):
    from hffm_env.pettingzoo import hffm_v0

    algo = build_config("tiny", OVERRIDES, env_runners=2, batch=BATCH, seed=0).build_algo()
    try:
        assert algo.env_runner_group.num_remote_env_runners() == 2
        initial = _weights(RLlibPolicy.from_algorithm(algo))
        history = train(algo, 2)
        assert [row["env_steps_sampled"] for row in history] == [BATCH, BATCH]
        assert all(np.isfinite(row["episode_return_mean"]) for row in history)
        trained = RLlibPolicy.from_algorithm(algo)
        weights = _weights(trained)
        assert any(not np.array_equal(weights[k], initial[k]) for k in weights), "training changed no weight"
        checkpoint = save(algo, tmp_path / "run")
    finally:
        algo.stop()

    loaded = load_policy(checkpoint)
    restored_algo = restore_algorithm(checkpoint, build_config("tiny", OVERRIDES, env_runners=0, batch=BATCH, seed=1))
    try:
        restored = RLlibPolicy.from_algorithm(restored_algo)
    finally:
        restored_algo.stop()
    for policy in (loaded, restored):
        assert sorted(policy.modules) == ["device", "edge"]
        got = _weights(policy)  # the learner's copy also holds the value function
        assert weights.keys() <= got.keys() and all(np.array_equal(got[k], weights[k]) for k in weights)

    env = hffm_v0.parallel_env("tiny", **OVERRIDES)
    obs, _ = env.reset(seed=10_000)
    ret, rounds = 0.0, 0
    while env.agents:
        actions = loaded(obs)
        assert actions.keys() == set(env.agents)
        assert all(env.action_space(a).contains(act) for a, act in actions.items())
        for other in (trained, restored):
            assert all(np.array_equal(other(obs)[a], actions[a]) for a in actions)
        obs, rewards, *_ = env.step(actions)
        ret += sum(rewards.values())
        rounds += 1
    assert rounds == ROUNDS and np.isfinite(ret)

    # hffm evaluate scores the checkpoint against a fixed schedule on the same held-out seed
    from evaluation.evaluate import evaluate

    rows = evaluate("hffm_v0", "tiny", 1, [f"rllib:{checkpoint}", "hfm_2"], tmp_path / "ev", OVERRIDES, progress=False)
    assert [r["policy"] for r in rows] == [f"rllib:{checkpoint.name}", "hfm_2", "default"]
    # the team return of the episode played above (seed 10,000, every agent paid the shared reward)
    assert rows[0]["return_mean"] == pytest.approx(ret / len(env.possible_agents))

    other_env = build_config("tiny", {**OVERRIDES, "env__device_agents": False}, env_runners=0, batch=BATCH, seed=0)
    with pytest.raises(
        ConfigError, match=r"has the modules \['device', 'edge'\], the config's env has agents for \['edge'\]"
    ):
        restore_algorithm(checkpoint, other_env)

    # the script trains on from the checkpoint (in the Ray instance already running)
    out = tmp_path / "resumed"
    argv = ["--resume", str(checkpoint), "--iterations", "1", "--batch", str(ROUNDS), "--out", str(out)]
    for key, value in OVERRIDES.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    assert main(argv) == 0
    assert [row["iteration"] for row in json.loads((out / "history.json").read_text())] == [1]
    resumed = _weights(load_policy(out / "checkpoint"))
    assert not all(np.array_equal(resumed[k], weights[k]) for k in weights)


def test_load_policy_needs_an_algorithm_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint_dir .* is not an RLlib Algorithm checkpoint"):
        load_policy(tmp_path)

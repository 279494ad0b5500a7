"""Score multi-agent controllers of the PettingZoo env ``hffm_v0`` against the fixed
policies, on the same held-out seeds as the single-agent ids.

``hffm evaluate --env hffm_v0 --preset tiny --seeds 5 --policies edge_only,hfm_2,default,random,runs/ma/model.zip``

A multi-agent policy maps the live agents' observations to their actions:

* a Table I schedule key (or ``local_only``): every edge agent plays the schedule's
  aggregation for its own cluster (the schedule's operations of the round, encoded
  by the env's action codec and cut per cluster);
* ``default``: every agent plays the env's default fixed policy's choices;
* ``random``: uniform over the valid options of every agent's dimensions (seeded);
* a parameter-shared SB3 model trained by ``hffm train --env hffm_v0`` (``path.zip``):
  every agent acts with the one policy on its own observation;
* an RLlib checkpoint written by ``python -m training.rllib_train`` (``rllib:DIR``).

The team return of an episode is the sum over rounds of the agents' mean reward
(with ``env.shared_reward``, the default, every agent's reward is the team's);
each agent's own return is in the table too.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np

from evaluation import EVAL_SEED_BASE

MULTI_AGENT_ENV = "hffm_v0"


class JointPolicy:
    """A fixed policy of the single-agent ids, played through the parallel env: the
    policy's blocks for the env's core, cut into each agent's action."""

    def __init__(self, env, name: str, seed: int = 0):
        from agents import make_policy

        self.env, self.name = env, name
        # the fixed policies read the core through env.unwrapped.core, as they do on a gym env
        shim = types.SimpleNamespace(unwrapped=env)
        self.policy = make_policy(name, shim, seed)

    def act(self, observations: dict) -> dict:
        joint, _ = self.policy.predict(None, deterministic=True)
        return self.env.agent_actions(joint)


class SharedSB3Policy:
    """One SB3 policy shared by every agent (trained through SuperSuit), loaded without unpickling."""

    def __init__(self, env, spec: str):
        from stable_baselines3 import A2C, PPO

        from evaluation.evaluate import load_sb3_model

        prefix, _, path = spec.rpartition(":") if spec.split(":")[0] in ("ppo", "a2c") else ("", "", spec)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"policy {spec!r}: no saved model at {p}")
        if not prefix:
            meta = p.parent / "run.json"
            prefix = json.loads(meta.read_text())["algo"] if meta.is_file() else "ppo"
        if prefix not in ("ppo", "a2c"):
            raise ValueError(f"policy {spec!r}: a multi-agent SB3 model must be ppo or a2c, got {prefix!r}")
        agent = env.possible_agents[0]
        spaces = types.SimpleNamespace(
            observation_space=env.observation_space(agent), action_space=env.action_space(agent)
        )
        self.model = load_sb3_model({"ppo": PPO, "a2c": A2C}[prefix], p, spaces)
        self.name = f"{prefix}:{p.parent.name if p.name == 'model.zip' else p.stem}"
        self.monitor = p.parent / "monitor"

    def act(self, observations: dict) -> dict:
        return {a: self.model.predict(o, deterministic=True)[0] for a, o in observations.items()}


class RLlibCheckpoint:
    """An RLlib checkpoint of ``training.rllib_train`` (the optional ``rllib`` extra)."""

    def __init__(self, spec: str):
        from training.rllib_train import load_policy

        path = spec.split(":", 1)[1]
        if not Path(path).is_dir():
            raise FileNotFoundError(f"policy {spec!r}: no RLlib checkpoint directory at {path}")
        self.policy = load_policy(path)
        self.name = f"rllib:{Path(path).name}"

    def act(self, observations: dict) -> dict:
        return self.policy(observations)


def make_joint_policy(spec: str, env, seed: int = 0):
    """A multi-agent policy by spec (see the module docstring)."""
    if spec.startswith("rllib:"):
        return RLlibCheckpoint(spec)
    if spec.endswith(".zip") or ":" in spec:
        return SharedSB3Policy(env, spec)
    return JointPolicy(env, spec, seed)


def run_episode(env, policy, seed: int, on_round=None):
    """One episode on ``seed``: an :class:`~evaluation.evaluate.Episode` with the team
    return and each agent's return; ``on_round(1)`` is called after each round."""
    from evaluation.evaluate import Episode

    obs, _ = env.reset(seed=seed)
    ep = Episode(agent_returns={a: 0.0 for a in env.possible_agents})
    while env.agents:
        obs, rewards, _, _, infos = env.step(policy.act(obs))
        info = next(iter(infos.values()))
        ep.latency_s.append(info["latency_s"])
        ep.energy_j.append(info["energy_j"])
        ep.accuracy.append(info["mean_accuracy"])
        ep.ret += float(np.mean(list(rewards.values())))
        for a, r in rewards.items():
            ep.agent_returns[a] += float(r)
        if on_round is not None:
            on_round(1)
    return ep


def play(preset: str, seeds: int, specs: list[str], overrides: dict, rounds: int, bar):
    """Every policy on the held-out seeds: the episodes per policy name, the spec ->
    name map, and the learned policies' monitor folders (None for RLlib)."""
    from hffm_env.pettingzoo import hffm_v0

    env = hffm_v0.parallel_env(preset, **overrides)
    episodes, names, monitors = {}, {}, {}
    for spec in specs:
        policy = make_joint_policy(spec, env)
        name = names[spec] = policy.name
        if not isinstance(policy, JointPolicy):
            monitors[name] = getattr(policy, "monitor", None)
        episodes[name] = []
        for i in range(seeds):
            episodes[name].append(run_episode(env, policy, EVAL_SEED_BASE + i, on_round=bar.update))
            bar.update(rounds - len(episodes[name][-1].latency_s))  # the rounds an early end skipped
    env.close()
    return episodes, names, monitors

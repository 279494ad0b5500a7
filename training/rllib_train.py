"""Train the PettingZoo env with Ray RLlib (extra ``rllib``): PPO with one policy per
kind of agent, shared by every agent of that kind (``edge`` for the edge servers,
``device`` for the devices when ``env__device_agents=true``), on as many machines as
the Ray cluster has.

``python -m training.rllib_train --preset tiny --iterations 2 --env-runners 2``

Without ``--address`` it starts a local Ray instance. On a cluster, start Ray first
(``ray start --head`` on one machine, ``ray start --address=<head>:6379`` on each of
the others), then pass ``--address auto`` and ``--env-runners N``: Ray places the N
env runners, one CPU each, on the cluster's machines, and the learner trains on the
driver. Writes into ``--out``: ``checkpoint/`` (RLlib's Algorithm checkpoint) and
``history.json`` (the mean episode return of each iteration). ``--resume CHECKPOINT``
trains on from a checkpoint, with any number of env runners.

For evaluation, ``load_policy(checkpoint)`` turns a checkpoint into a callable from the
agents' observations to their greedy actions (dicts keyed by agent id, as
``parallel_env().step`` takes them); it needs no running Ray. RLlib's checkpoints
hold pickles: load only checkpoints you made.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from evaluation import EVAL_SEED_BASE
from hffm_env import ConfigError

ENV_NAME = "hffm_v0"


def module_for(agent_id: str, *args, **kwargs) -> str:
    """The policy (RLlib module id) that acts for ``agent_id``: its kind, ``edge_3`` -> ``edge``.

    RLlib calls it as ``policy_mapping_fn(agent_id, episode, **kwargs)``."""
    return agent_id.split("_", 1)[0]


def make_env(env_config: dict):
    """RLlib's env creator: ``hffm_v0.parallel_env(preset, **overrides)`` behind RLlib's wrapper."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from hffm_env.pettingzoo import hffm_v0

    return ParallelPettingZooEnv(hffm_v0.parallel_env(env_config["preset"], **env_config["overrides"]))


def build_config(preset: str, overrides: dict, env_runners: int, batch: int, seed: int):
    """PPO on ``hffm_v0``: ``batch`` env steps (rounds) per iteration, sampled by
    ``env_runners`` remote env runners (0: by the driver), one module per agent kind."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    from hffm_env.scenario import make_scenario

    if env_runners < 0:
        raise ConfigError(f"env_runners must be an integer >= 0, got {env_runners}")
    if batch < 1:
        raise ConfigError(f"batch must be an integer >= 1, got {batch}")
    if not 0 <= seed < EVAL_SEED_BASE:
        raise ConfigError(
            f"seed must be in [0, {EVAL_SEED_BASE - 1}] (evaluation holds out seeds >= {EVAL_SEED_BASE}), got {seed}"
        )
    # validates the preset and the overrides here, before any Ray worker starts
    kinds = ["edge", "device"] if make_scenario(preset, **overrides).env.device_agents else ["edge"]
    register_env(ENV_NAME, make_env)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config={"preset": preset, "overrides": overrides})
        .multi_agent(policies=set(kinds), policy_mapping_fn=module_for)
        .env_runners(num_env_runners=env_runners)
        .training(train_batch_size=batch, minibatch_size=min(64, batch), num_epochs=2)
        .debugging(seed=seed)
    )


def train(algo, iterations: int) -> list[dict]:
    """``iterations`` calls of ``algo.train()``; per iteration the mean episode return
    (None until an episode has ended) and the env steps sampled."""
    history = []
    for i in range(iterations):
        result = algo.train()
        runners = result.get("env_runners", {})
        ret = runners.get("episode_return_mean")
        row = {
            "iteration": i + 1,
            "episode_return_mean": float(ret) if ret is not None and np.isfinite(ret) else None,
            "env_steps_sampled": int(runners.get("num_env_steps_sampled", 0)),
        }
        history.append(row)
        print(f"iteration {row['iteration']}: episode_return_mean={row['episode_return_mean']}", flush=True)
    return history


def save(algo, out: Path) -> Path:
    """The Algorithm's checkpoint in ``out/checkpoint``; returns that path."""
    path = Path(out).resolve() / "checkpoint"
    path.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str(path))
    return path


class RLlibPolicy:
    """Greedy actions of trained RLlib modules: ``policy({agent: obs}) -> {agent: action}``.

    Each agent is acted for by the module ``module_for(agent)``; agents of one module
    are batched into one forward pass."""

    def __init__(self, modules: dict):
        self.modules = dict(modules)

    @classmethod
    def from_algorithm(cls, algo) -> RLlibPolicy:
        return cls({mid: algo.get_module(mid) for mid in sorted(algo.config.policies)})

    def __call__(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        from ray.rllib.core.columns import Columns

        groups: dict[str, list[str]] = {}
        for agent in observations:
            groups.setdefault(module_for(agent), []).append(agent)
        actions = {}
        for mid, agents in groups.items():
            if mid not in self.modules:
                raise KeyError(
                    f"agent {agents[0]!r} is acted for by module {mid!r}, which this policy lacks "
                    f"(it has: {', '.join(sorted(self.modules))})"
                )
            module = self.modules[mid]
            obs = np.stack([np.asarray(observations[a], dtype=np.float32) for a in agents])
            if obs.shape[1:] != module.observation_space.shape:
                raise ValueError(
                    f"observation of agent {agents[0]!r} has shape {obs.shape[1:]}, module {mid!r} "
                    f"takes {module.observation_space.shape}"
                )
            with torch.no_grad():
                out = module.forward_inference({Columns.OBS: torch.from_numpy(obs)})
            dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            chosen = dist.to_deterministic().sample().numpy().astype(np.int64)
            actions.update(zip(agents, chosen))
        return actions


def _module_dir(checkpoint_dir: str | Path) -> Path:
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

    path = Path(checkpoint_dir) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint_dir {str(checkpoint_dir)!r} is not an RLlib Algorithm checkpoint (no {path.as_posix()})"
        )
    return path


def load_policy(checkpoint_dir: str | Path) -> RLlibPolicy:
    """The trained modules of an Algorithm checkpoint (the learner's copy) as an
    :class:`RLlibPolicy`. Needs no running Ray."""
    from ray.rllib.core.rl_module import RLModule

    multi = RLModule.from_checkpoint(_module_dir(checkpoint_dir))
    return RLlibPolicy({mid: multi[mid] for mid in multi.keys()})


def _module_spaces(config) -> dict[str, tuple]:
    """Per module id, the (observation, action) spaces its agents have in ``config``'s env."""
    from hffm_env.pettingzoo import hffm_v0

    env = hffm_v0.parallel_env(config.env_config["preset"], **config.env_config["overrides"])
    return {module_for(a): (env.observation_space(a), env.action_space(a)) for a in env.possible_agents}


def restore_algorithm(checkpoint_dir: str | Path, config):
    """A new Algorithm built from ``config`` (any number of env runners) in the state
    saved at ``checkpoint_dir``: weights, optimizer, counters.

    ``config``'s env must give every module the spaces it was trained on."""
    saved = {mid: (m.observation_space, m.action_space) for mid, m in load_policy(checkpoint_dir).modules.items()}
    wanted = _module_spaces(config)
    if saved.keys() != wanted.keys():
        raise ConfigError(
            f"checkpoint {str(checkpoint_dir)!r} has the modules {sorted(saved)}, the config's env has "
            f"agents for {sorted(wanted)} (env__device_agents differs?)"
        )
    for mid, (obs_space, act_space) in wanted.items():
        if saved[mid] != (obs_space, act_space):
            raise ConfigError(
                f"module {mid!r} was trained on observation {saved[mid][0]} and action {saved[mid][1]}, "
                f"the config's env has {obs_space} and {act_space} (same preset and overrides?)"
            )
    algo = config.build_algo()
    try:
        algo.restore_from_path(str(Path(checkpoint_dir).resolve()))
    except BaseException:
        algo.stop()
        raise
    return algo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rllib_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", help="scenario preset: tiny, small, paper (default tiny)")
    p.add_argument("--iterations", type=int, default=10, help="RLlib training iterations (default 10)")
    p.add_argument("--batch", type=int, default=128, help="train batch: env steps (rounds) per iteration")
    p.add_argument("--env-runners", type=int, default=0, help="remote env runners (0: the driver samples)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto': the cluster this node joined)")
    p.add_argument("--seed", type=int, default=0, help=f"training seed, < {EVAL_SEED_BASE} (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT", help="train on from this checkpoint")
    p.add_argument("--out", default="runs/rllib", help="output directory (default runs/rllib)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iterations < 1:
        raise ConfigError(f"--iterations must be an integer >= 1, got {args.iterations}")

    import ray

    from training.train import parse_override

    overrides = dict(parse_override(o) for o in args.overrides)
    config = build_config(args.preset, overrides, args.env_runners, args.batch, args.seed)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, include_dashboard=False)
    try:
        algo = restore_algorithm(args.resume, config) if args.resume else config.build_algo()
        try:
            history = train(algo, args.iterations)
            checkpoint = save(algo, Path(args.out))
        finally:
            algo.stop()
    finally:
        if started:
            ray.shutdown()
    (checkpoint.parent / "history.json").write_text(json.dumps(history, indent=2))
    print(f"checkpoint: {checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

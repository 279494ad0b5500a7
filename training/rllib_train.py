"""Train the PettingZoo env with Ray RLlib (optional extra ``rllib``): one PPO policy
shared by every edge-server agent, on as many machines as the Ray cluster has.

``python -m training.rllib_train --preset tiny --iterations 2 --env-runners 0``

Install with ``pip install -e ".[rllib]"`` (Ray pins its own Gymnasium release, so a
separate virtual environment is the safe place for it). On a cluster, start Ray
(``ray start --head`` / ``ray start --address=...``) and pass ``--address auto`` and
``--env-runners N``: the env runners then spread over the machines. Writes a
checkpoint to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def build_config(preset: str, overrides: dict, env_runners: int, batch: int, seed: int):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    def make(cfg):
        from hffm_env.pettingzoo import hffm_v0

        return ParallelPettingZooEnv(hffm_v0.parallel_env(cfg["preset"], **cfg["overrides"]))

    register_env("hffm_v0", make)
    return (
        PPOConfig()
        .environment("hffm_v0", env_config={"preset": preset, "overrides": overrides})
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *args, **kwargs: "shared")
        .env_runners(num_env_runners=env_runners)
        .training(train_batch_size=batch, minibatch_size=min(64, batch), num_epochs=2)
        .debugging(seed=seed)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rllib_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--iterations", type=int, default=10, help="RLlib training iterations")
    p.add_argument("--batch", type=int, default=128, help="train batch size (agent steps)")
    p.add_argument("--env-runners", type=int, default=0, help="remote env runners (0: in the driver)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' to join a running cluster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/rllib")
    args = p.parse_args(argv)

    import ray

    from training.train import parse_override

    overrides = dict(parse_override(o) for o in args.overrides)
    ray.init(address=args.address, include_dashboard=False, ignore_reinit_error=True)
    algo = build_config(args.preset, overrides, args.env_runners, args.batch, args.seed).build_algo()
    history = []
    for i in range(args.iterations):
        result = algo.train()
        ret = result.get("env_runners", {}).get("episode_return_mean")
        history.append({"iteration": i + 1, "episode_return_mean": ret})
        print(f"iteration {i + 1}: episode_return_mean={ret}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str(out / "checkpoint"))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    print(f"checkpoint: {out / 'checkpoint'}")
    algo.stop()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train a controller with stable-baselines3 on an hffm-env id (or the PettingZoo env).

``hffm train --algo ppo --env hffm_env/Aggregation-v0 --preset tiny --steps 5000 --seed 0``

Every hyper-parameter is a flag. Writes into ``--out`` (default
``runs/<env>-<algo>-seed<S>``): ``model.zip`` (the final model), ``checkpoints/``
(every ``--checkpoint-every`` steps), ``tb/`` (TensorBoard), ``monitor/`` (SB3
Monitor CSVs: the learning curve) and ``run.json`` (the command's settings).

* ``--algo``: ``ppo``, ``a2c``, ``maskable_ppo`` (sb3-contrib, uses ``action_masks()``),
  ``dqn`` (needs a ``Discrete`` action space: none of the ids has one, so it stops
  with an error saying so).
* ``--n-envs K``: K envs, in ``SubprocVecEnv`` worker processes when K > 1.
* ``--env hffm_v0``: the PettingZoo env with parameter sharing: every agent is one
  env of a SuperSuit vector env (``pettingzoo_env_to_vec_env_v1`` +
  ``concat_vec_envs_v1``) and one shared SB3 policy learns from all of them.

Training seeds must be below 10,000: ``hffm evaluate`` holds out seeds 10,000 and up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation import EVAL_SEED_BASE

ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo")
MULTI_AGENT_ENV = "hffm_v0"


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON when it parses (``3``, ``0.1``, ``true``), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set needs key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="hffm train", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default="ppo", help=f"one of {', '.join(ALGOS)} (default ppo)")
    p.add_argument("--env", default="hffm_env/Aggregation-v0", help=f"env id, or {MULTI_AGENT_ENV} (PettingZoo)")
    p.add_argument("--preset", default="tiny", help="scenario preset: tiny, small, paper (default tiny)")
    p.add_argument("--steps", type=int, default=5000, help="environment steps (rounds) in total (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="training seed, < 10000 (default 0)")
    p.add_argument("--n-envs", type=int, default=1, help="parallel envs; > 1 uses SubprocVecEnv (default 1)")
    p.add_argument("--out", default=None, help="output directory (default runs/<env>-<algo>-seed<S>)")
    p.add_argument("--n-steps", type=int, default=128, help="rollout length per env (ppo, maskable_ppo, a2c)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (ppo, maskable_ppo, dqn)")
    p.add_argument("--n-epochs", type=int, default=10, help="epochs per rollout (ppo, maskable_ppo)")
    p.add_argument("--learning-rate", type=float, default=3e-4, help="optimiser learning rate")
    p.add_argument("--gamma", type=float, default=0.99, help="discount factor")
    p.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus (ppo, maskable_ppo, a2c)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument(
        "--set",
        dest="overrides",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override, e.g. --set env__max_rounds=10 (repeatable)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (in a terminal) or progress lines (elsewhere, see HFFM_PROGRESS_INTERVAL_S)",
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    from hffm_env import ENV_IDS, PRESETS, ConfigError

    if args.algo not in ALGOS:
        raise ConfigError(f"--algo must be one of {', '.join(ALGOS)}, got {args.algo!r}")
    if args.env not in ENV_IDS and args.env != MULTI_AGENT_ENV:
        raise ConfigError(f"--env must be one of {', '.join(list(ENV_IDS) + [MULTI_AGENT_ENV])}, got {args.env!r}")
    if args.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    for name, low in (
        ("steps", 1),
        ("n_envs", 1),
        ("n_steps", 1),
        ("batch_size", 1),
        ("n_epochs", 1),
        ("checkpoint_every", 1),
    ):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {getattr(args, name)}")
    if not 0 <= args.seed < EVAL_SEED_BASE:
        raise ConfigError(
            f"--seed must be in [0, {EVAL_SEED_BASE - 1}] (evaluation holds out seeds >= "
            f"{EVAL_SEED_BASE}), got {args.seed}"
        )
    if args.algo == "dqn":
        raise ConfigError(
            "--algo dqn needs a Discrete action space; every hffm-env id acts with MultiDiscrete "
            "(use ppo, a2c or maskable_ppo)"
        )
    if args.algo == "maskable_ppo" and args.env == MULTI_AGENT_ENV:
        raise ConfigError("--algo maskable_ppo is for the Gymnasium ids; the PettingZoo env trains with ppo or a2c")


def make_env_fn(env_id: str, preset: str, overrides: dict):
    def _make():
        import gymnasium as gym
        import torch

        import hffm_env  # noqa: F401  (registers the ids in worker processes)

        torch.set_num_threads(1) if overrides.get("_one_thread") else None
        return gym.make(env_id, preset=preset, **{k: v for k, v in overrides.items() if not k.startswith("_")})

    return _make


def make_vec_env_for(args: argparse.Namespace, overrides: dict):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    out = Path(args.out)
    if args.env == MULTI_AGENT_ENV:
        import supersuit as ss

        from hffm_env.pettingzoo import hffm_v0

        env = hffm_v0.parallel_env(args.preset, **overrides)
        env.reset(seed=args.seed)  # later resets continue the env's own seeded stream
        vec = ss.pettingzoo_env_to_vec_env_v1(env)
        vec = ss.concat_vec_envs_v1(vec, args.n_envs, num_cpus=0, base_class="stable_baselines3")
        # SuperSuit's vector env cannot be re-seeded; the seed went in through reset above
        vec.seed = lambda seed=None: [None] * vec.num_envs
        (out / "monitor").mkdir(parents=True, exist_ok=True)
        return VecMonitor(vec, str(out / "monitor" / "multiagent"))
    many = args.n_envs > 1
    fn = make_env_fn(args.env, args.preset, {**overrides, **({"_one_thread": True} if many else {})})
    return make_vec_env(
        fn,
        n_envs=args.n_envs,
        seed=args.seed,
        monitor_dir=str(out / "monitor"),
        vec_env_cls=SubprocVecEnv if many else DummyVecEnv,
    )


def progress_lines_callback():
    """An SB3 callback that prints :class:`hffm_cli.progress.Progress` lines (steps done,
    steps/s, ETA): SB3's own progress bar draws only in a terminal."""
    from stable_baselines3.common.callbacks import BaseCallback

    from hffm_cli.progress import Progress

    class ProgressLines(BaseCallback):
        def _on_training_start(self) -> None:
            total = self.locals["total_timesteps"] - self.model.num_timesteps
            self.progress = Progress(total, "steps", "hffm train", bar=False).__enter__()

        def _on_step(self) -> bool:
            self.progress.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.progress.__exit__(None, None, None)

    return ProgressLines()


def train(args: argparse.Namespace) -> Path:
    """Train as ``args`` say; returns the path of the final model."""
    check_args(args)
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import CheckpointCallback

    overrides = dict(args.overrides)
    args.out = args.out or f"runs/{args.env.split('/')[-1]}-{args.algo}-seed{args.seed}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("overrides", "func", "command")}
    (out / "run.json").write_text(json.dumps({**settings, "overrides": overrides}, indent=2))
    env = make_vec_env_for(args, overrides)
    policy = "MlpPolicy" if args.env == MULTI_AGENT_ENV else "MultiInputPolicy"
    common = dict(
        learning_rate=args.learning_rate, gamma=args.gamma, seed=args.seed, verbose=0, tensorboard_log=str(out / "tb")
    )
    if args.algo == "a2c":
        model = A2C(policy, env, n_steps=args.n_steps, ent_coef=args.ent_coef, **common)
    else:
        cls = PPO
        if args.algo == "maskable_ppo":
            from sb3_contrib import MaskablePPO as cls
        batch = min(args.batch_size, args.n_steps * env.num_envs)
        model = cls(
            policy,
            env,
            n_steps=args.n_steps,
            batch_size=batch,
            n_epochs=args.n_epochs,
            ent_coef=args.ent_coef,
            **common,
        )
    checkpoints = CheckpointCallback(
        save_freq=max(args.checkpoint_every // env.num_envs, 1), save_path=str(out / "checkpoints"), name_prefix="model"
    )
    from hffm_cli.progress import in_terminal

    bar = not args.no_progress and in_terminal()
    callbacks = [checkpoints] + ([progress_lines_callback()] if not (args.no_progress or bar) else [])
    model.learn(total_timesteps=args.steps, callback=callbacks, progress_bar=bar, tb_log_name=args.algo)
    path = out / "model.zip"
    model.save(str(path))
    env.close()
    return path


def main(argv: list[str] | None = None) -> int:
    from hffm_env import ConfigError

    args = build_parser().parse_args(argv)
    try:
        path = train(args)
    except ConfigError as e:
        print(f"hffm train: error: {e}", file=sys.stderr)
        return 2
    print(f"model: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

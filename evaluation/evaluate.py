"""Compare fixed and learned policies on held-out seeds: a Table-I-style table and plots.

``hffm evaluate --env hffm_env/Aggregation-v0 --preset tiny --seeds 5 --policies star,hfm_2,random,runs/x/model.zip``

Each policy runs one episode on each of the held-out seeds 10,000, 10,001, … (training
uses seeds below 10,000). Per policy the table gives latency per round (s), energy
per round (J), final accuracy (%) and the episode return, each as mean ± the half
width of a 95 % confidence interval (Student t over seeds), and the paired
difference in return against ``--baseline`` (default ``default``, the env's own
default policy; ``best`` picks the fixed policy of highest mean return): per seed,
the policy's return minus the baseline's on that seed, then mean ± 95 % CI of those
differences. Seeds move returns far more than policies do, so the paired interval
separates policies that the unpaired ones do not. Written to ``--out`` as
``table.md`` and ``table.csv``, with plots: ``accuracy_vs_energy.png`` (mean accuracy
against cumulative energy, per policy), ``pareto.png`` (final accuracy against
energy per round, the non-dominated policies joined) and, for saved models with a
``monitor/`` folder beside them, ``learning_curves.png``.

A policy is a fixed-policy name (see :func:`agents.make_policy`) or a saved SB3 model:
``path.zip`` or ``algo:path.zip`` (``ppo``, ``a2c``, ``maskable_ppo``; without the
prefix the algorithm is read from the ``run.json`` beside the model).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation import EVAL_SEED_BASE
from evaluation.multiagent import MULTI_AGENT_ENV


@dataclass
class Episode:
    latency_s: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    ret: float = 0.0
    agent_returns: dict[str, float] = field(default_factory=dict)  # the multi-agent env's, per agent


# What SB3 pickles into a model's ``data`` entry, and what we put there instead, so a
# model file never runs code when it is loaded (its weights load with weights_only=True).
_PICKLED_ENTRIES = (
    "policy_class",
    "observation_space",
    "action_space",
    "lr_schedule",
    "clip_range",
    "rollout_buffer_class",
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
)


def _zero(_progress: float) -> float:
    return 0.0


def load_sb3_model(cls, path, env):
    """Load a saved SB3 model of class ``cls`` for ``env`` without unpickling anything.

    SB3 stores the policy class, the spaces and the schedules of a model with
    cloudpickle; unpickling a file can run arbitrary code. Every such entry is
    replaced by the value this package knows it must have (``MultiInputPolicy`` or
    ``MlpPolicy`` from the data's ``policy_class`` name, the env's spaces, constant
    schedules, which inference does not use; A2C's default RMSprop settings); a model
    file with any other pickled entry is refused with an error naming it.
    """
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    pickled = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    known = set(_PICKLED_ENTRIES)
    custom: dict = {}
    if cls.__name__ == "A2C":
        # A2C pickles its default RMSprop settings (hffm train sets no other policy_kwargs)
        import torch

        known.add("policy_kwargs")
        custom["policy_kwargs"] = {
            "optimizer_class": torch.optim.RMSprop,
            "optimizer_kwargs": {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0},
        }
    unknown = sorted(set(pickled) - known)
    if unknown:
        raise ValueError(
            f"{path}: refusing to unpickle the entries {unknown} of this model file (only "
            f"{', '.join(_PICKLED_ENTRIES)} are replaced on load)"
        )
    doc = str(data.get("policy_class", {}).get("__doc__", ""))
    alias = "MultiInputPolicy" if "MultiInput" in doc else "MlpPolicy"
    custom.update({k: None for k in _PICKLED_ENTRIES})
    custom.update(
        policy_class=cls.policy_aliases[alias],
        observation_space=env.observation_space,
        action_space=env.action_space,
        lr_schedule=_zero,
        clip_range=_zero,
    )
    return cls.load(str(path), device="cpu", custom_objects=custom)


class LearnedPolicy:
    """A saved SB3 model behind the same ``predict`` as the fixed policies (loaded
    with :func:`load_sb3_model`: nothing in the file is unpickled)."""

    def __init__(self, spec: str, env):
        from stable_baselines3 import A2C, PPO

        algo, _, path = spec.rpartition(":") if spec.split(":")[0] in ("ppo", "a2c", "maskable_ppo") else ("", "", spec)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"policy {spec!r}: no saved model at {p}")
        if not algo:
            meta = p.parent / "run.json"
            algo = json.loads(meta.read_text())["algo"] if meta.is_file() else "ppo"
        classes = {"ppo": PPO, "a2c": A2C}
        if algo == "maskable_ppo":
            from sb3_contrib import MaskablePPO

            classes["maskable_ppo"] = MaskablePPO
        self.model = load_sb3_model(classes[algo], p, env)
        self.masked = algo == "maskable_ppo"
        self.env = env
        self.name = f"{algo}:{p.parent.name if p.name == 'model.zip' else p.stem}"
        self.monitor = p.parent / "monitor"

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        if self.masked:
            return self.model.predict(
                observation, state, episode_start, deterministic, action_masks=self.env.unwrapped.action_masks()
            )
        return self.model.predict(observation, state, episode_start, deterministic)


def make_any_policy(spec: str, env, seed: int = 0):
    from agents import make_policy

    if spec.endswith(".zip") or ":" in spec:
        return LearnedPolicy(spec, env)
    return make_policy(spec, env, seed)


def run_episode(env, policy, seed: int, on_round=None) -> Episode:
    """One episode of ``policy`` from ``env.reset(seed=seed)``; ``on_round(1)`` is called after each round."""
    obs, _ = env.reset(seed=seed)
    ep = Episode()
    done = False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        ep.latency_s.append(info["latency_s"])
        ep.energy_j.append(info["energy_j"])
        ep.accuracy.append(info["mean_accuracy"])
        ep.ret += reward
        done = terminated or truncated
        if on_round is not None:
            on_round(1)
    return ep


def _play(env_id, preset, seeds, specs, overrides, rounds, bar):
    """Every policy on the held-out seeds of a Gymnasium id: the episodes per policy
    name, the spec -> name map, and the learned policies' monitor folders."""
    import gymnasium as gym

    import hffm_env  # noqa: F401

    episodes: dict[str, list[Episode]] = {}
    names: dict[str, str] = {}
    monitors: dict[str, Path | None] = {}
    env = gym.make(env_id, preset=preset, **overrides)
    env.reset(seed=EVAL_SEED_BASE)
    for spec in specs:
        policy = make_any_policy(spec, env)
        name = names[spec] = getattr(policy, "name", spec)
        if isinstance(policy, LearnedPolicy):
            monitors[name] = policy.monitor
        episodes[name] = []
        for i in range(seeds):
            episodes[name].append(run_episode(env, policy, EVAL_SEED_BASE + i, on_round=bar.update))
            bar.update(rounds - len(episodes[name][-1].latency_s))  # the rounds an early end skipped
    env.close()
    return episodes, names, monitors


def _play_multiagent(env_id, preset, seeds, specs, overrides, rounds, bar):
    from evaluation import multiagent

    return multiagent.play(preset, seeds, specs, overrides, rounds, bar)


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half width of its 95 % confidence interval (Student t)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half)


BEST_FIXED = "best"


def evaluate(
    env_id: str,
    preset: str,
    seeds: int,
    policies: list[str],
    out: Path,
    overrides: dict | None = None,
    progress: bool = True,
    baseline: str = "default",
) -> list[dict]:
    """Run every policy on the same ``seeds`` held-out seeds; write the table and plots;
    return the rows. ``baseline`` (a policy spec, run too if ``policies`` lacks it, or
    ``"best"``: the fixed policy of highest mean return) is what the paired
    differences in return are taken against."""
    overrides = overrides or {}
    specs = list(dict.fromkeys(policies))
    if baseline != BEST_FIXED and baseline not in specs:
        specs.append(baseline)
    out.mkdir(parents=True, exist_ok=True)
    from hffm_cli.progress import Progress
    from hffm_env import make_scenario

    play = _play_multiagent if env_id == MULTI_AGENT_ENV else _play
    rounds = make_scenario(preset, **overrides).env.max_rounds
    with Progress(len(specs) * seeds * rounds, "rounds", "hffm evaluate", enabled=progress) as bar:
        episodes, names, monitors = play(env_id, preset, seeds, specs, overrides, rounds, bar)
    learned = set(monitors)
    monitors = {n: m for n, m in monitors.items() if m is not None and m.is_dir()}
    if baseline == BEST_FIXED:
        fixed = [n for n in episodes if n not in learned]
        if not fixed:
            raise ValueError("baseline 'best' needs at least one fixed policy among the policies")
        base = max(fixed, key=lambda n: np.mean([e.ret for e in episodes[n]]))
    else:
        base = names[baseline]
    rows = []
    for name, eps in episodes.items():
        lat = mean_ci([np.mean(e.latency_s) for e in eps])
        en = mean_ci([np.mean(e.energy_j) for e in eps])
        acc = mean_ci([100.0 * e.accuracy[-1] for e in eps])
        ret = mean_ci([e.ret for e in eps])
        diff = mean_ci([e.ret - b.ret for e, b in zip(eps, episodes[base])])
        rows.append(
            {
                "policy": name,
                "latency_s": lat[0],
                "latency_s_ci95": lat[1],
                "energy_j": en[0],
                "energy_j_ci95": en[1],
                "final_accuracy_pct": acc[0],
                "final_accuracy_pct_ci95": acc[1],
                "return_mean": ret[0],
                "return_ci95": ret[1],
                "baseline": base,
                "paired_diff_mean": diff[0],
                "paired_diff_ci95": diff[1],
                "episodes": len(eps),
                **{f"return_{a}": float(np.mean([e.agent_returns[a] for e in eps])) for a in eps[0].agent_returns},
            }
        )
    _write_tables(rows, out, env_id, preset, seeds)
    _plots(episodes, rows, monitors, out)
    return rows


def read_monitor(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Episode lengths and returns from the SB3 Monitor CSVs in ``folder`` (in time order)."""
    rows = []
    for path in sorted(Path(folder).glob("*.monitor.csv")):
        with open(path) as f:
            next(f)  # the JSON header line
            for rec in csv.DictReader(f):
                rows.append((float(rec["t"]), float(rec["l"]), float(rec["r"])))
    rows.sort()
    return np.array([r[1] for r in rows]), np.array([r[2] for r in rows])


def _fmt(mean: float, half: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if np.isfinite(half) else f"{mean:.{digits}f}"


def _paired(r: dict) -> str:
    if r["policy"] == r["baseline"]:
        return "(baseline)"
    text = _fmt(r["paired_diff_mean"], r["paired_diff_ci95"], 3)
    half = r["paired_diff_ci95"]
    if np.isfinite(half) and abs(r["paired_diff_mean"]) > half:
        text += " *"
    return text


def table_markdown(rows: list[dict], env_id: str, preset: str, seeds: int) -> str:
    base = rows[0]["baseline"]
    lines = [
        f"Policies on `{env_id}`, preset `{preset}`, {seeds} held-out seeds "
        f"({EVAL_SEED_BASE}–{EVAL_SEED_BASE + seeds - 1}); mean ± 95 % CI; paired difference in return "
        f"against `{base}` on the same seeds (* : its 95 % CI excludes 0)",
        "",
        "| policy | latency per round (s) | energy per round (J) | final accuracy (%) | return | "
        f"return − {base} (paired) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {_fmt(r['latency_s'], r['latency_s_ci95'], 3)} | "
            f"{_fmt(r['energy_j'], r['energy_j_ci95'], 3)} | "
            f"{_fmt(r['final_accuracy_pct'], r['final_accuracy_pct_ci95'], 1)} | "
            f"{_fmt(r['return_mean'], r['return_ci95'], 3)} | {_paired(r)} |"
        )
    agents = [
        k[len("return_") :] for k in rows[0] if k.startswith("return_") and k not in ("return_mean", "return_ci95")
    ]
    if agents:
        lines += [
            "",
            "Return per agent (mean over seeds; the table's return is the team's: the sum over rounds of the "
            "agents' mean reward)",
            "",
            "| policy | " + " | ".join(agents) + " |",
            "| --- | " + " | ".join("---" for _ in agents) + " |",
        ]
        for r in rows:
            lines.append(f"| {r['policy']} | " + " | ".join(f"{r['return_' + a]:.3f}" for a in agents) + " |")
    return "\n".join(lines) + "\n"


def _write_tables(rows, out: Path, env_id, preset, seeds) -> None:
    (out / "table.md").write_text(table_markdown(rows, env_id, preset, seeds))
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plots(episodes, rows, monitors, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, eps in episodes.items():
        energy = np.mean([np.cumsum(e.energy_j) for e in eps], axis=0)
        acc = np.mean([e.accuracy for e in eps], axis=0)
        ax.plot(energy, 100 * acc, marker=".", label=name)
    ax.set_xlabel("cumulative energy (J)")
    ax.set_ylabel("mean accuracy (%)")
    ax.set_title("accuracy vs energy (mean over held-out seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_energy.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    e = np.array([r["energy_j"] for r in rows])
    a = np.array([r["final_accuracy_pct"] for r in rows])
    ax.scatter(e, a)
    for r in rows:
        ax.annotate(r["policy"], (r["energy_j"], r["final_accuracy_pct"]), fontsize=7)
    front = [
        i
        for i in range(len(rows))
        if not any((e[j] <= e[i] and a[j] >= a[i]) and (e[j] < e[i] or a[j] > a[i]) for j in range(len(rows)))
    ]
    front.sort(key=lambda i: e[i])
    ax.plot(e[front], a[front], "r--", label="Pareto front")
    ax.set_xlabel("energy per round (J)")
    ax.set_ylabel("final accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=100)
    plt.close(fig)

    curves = {name: read_monitor(folder) for name, folder in monitors.items()}
    curves = {name: c for name, c in curves.items() if len(c[0])}
    if curves:
        fig, ax = plt.subplots(figsize=(7, 5))
        for name, (lengths, r) in curves.items():
            steps = np.cumsum(lengths)
            k = max(1, len(r) // 10)
            smooth = np.convolve(r, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, label=name)
        ax.set_xlabel("training steps (rounds)")
        ax.set_ylabel("episode return (moving mean)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "learning_curves.png", dpi=100)
        plt.close(fig)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="hffm evaluate")
    p.add_argument("--env", default="hffm_env/Aggregation-v0", help="env id (default hffm_env/Aggregation-v0)")
    p.add_argument("--preset", default="tiny", help="scenario preset (default tiny)")
    p.add_argument("--seeds", type=int, default=5, help="held-out seeds (default 5)")
    p.add_argument(
        "--policies",
        default=None,
        help="comma-separated fixed-policy names and saved models (default: every fixed baseline)",
    )
    p.add_argument(
        "--baseline",
        default="default",
        help="policy the paired differences in return are taken against: a policy name or saved model "
        "(run too if --policies lacks it), or 'best' for the fixed policy of highest mean return "
        "(default: default, the env's own default policy)",
    )
    p.add_argument("--out", default="results", help="output directory (default results)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override, e.g. --set env__max_rounds=10 (repeatable)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from agents import BASELINES, applies
    from hffm_env import ENV_IDS, ConfigError
    from training.train import parse_override

    args = build_parser().parse_args(argv)
    try:
        if args.env not in (*ENV_IDS, MULTI_AGENT_ENV):
            raise ConfigError(f"--env must be one of {', '.join(ENV_IDS)}, {MULTI_AGENT_ENV}, got {args.env!r}")
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be an integer >= 1, got {args.seeds}")
        policies = (
            [p for p in BASELINES if args.env == MULTI_AGENT_ENV or applies(p, args.env)]
            if args.policies is None
            else [p.strip() for p in args.policies.split(",") if p.strip()]
        )
        evaluate(
            args.env,
            args.preset,
            args.seeds,
            policies,
            Path(args.out),
            dict(parse_override(o) for o in args.overrides),
            baseline=args.baseline,
        )
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"hffm evaluate: error: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "table.md").read_text())
    for name in ("table.csv", "accuracy_vs_energy.png", "pareto.png", "learning_curves.png"):
        if (Path(args.out) / name).is_file():
            print(f"wrote {Path(args.out) / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

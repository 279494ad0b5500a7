"""Signal benchmark: does each env's reward sit above its own noise?

Run as ``hffm bench signal [--presets tiny small] [--seeds 10] [--redraws 8]
[--rounds N] [--set KEY=VALUE] [--json]``. For every env id and preset it measures two per-round
reward scales and their ratio:

* **noise** — how much the reward of one round moves when only the evaluation set
  changes. The reward's accuracy term is ``w_acc·Δscore``, the change of the mean
  score over (device, task) pairs on an evaluation set fixed for the episode
  (``federation.eval_max_samples`` held-out samples per pair). During the episodes of
  the envs' default schedule (``env.default_schedule``, edge-only), the bank is copied before every step; when the
  round scores itself (after its operations, before the events it draws for the next
  round), ``redraws`` fresh evaluation sets of the same structure and sizes as
  ``fed.eval_shards()`` are dealt from each task's held-out part as the env deals
  its own (``deal_shares``, per ``data.eval_shares``; from the union of the task's
  current shares where there is no held-out part, as with
  ``data.eval_split="local"``), the bank before and after the round is scored
  on each (``env.reward_metric``), and ``w_acc·(after − before)`` is that redraw's
  reward. The latency and energy terms do not depend on the set and drop out. noise =
  sqrt(mean over steps and seeds of the variance over the redraws, ddof=1). The
  draws use their own generator, seeded by (seed, round, redraw), and the env's bank
  is put back as it was, so the episode runs exactly as it would unmeasured.
* **gap** — how far apart the fixed policies' rewards are. Each of the seven Table I
  schedules drives the env (``gym.make(id, env__default_schedule=k)`` played by
  :class:`agents.BasePolicy`, which also plays the schedule in the aggregation block
  of the ids that expose it) for one episode on each held-out seed 10,000 + i; a
  schedule's score is its mean per-round reward. best and worst are the schedules of
  highest and lowest mean over seeds; gap = mean over seeds of best − worst (paired),
  with the half width of its 95 % confidence interval (Student t). The default
  schedule's episodes are the ones the noise is measured on.

The target is noise/gap ≤ 0.1 (``TARGET``) for every id on ``tiny`` and ``small``.
The text output is one row per (preset, id) and a last line naming the worst id
(highest noise/gap) and whether the target is met. ``--json`` prints one object:
``{"rows": [row, ...], "worst": {"env_id", "preset", "noise_over_gap", "target",
"met"}}``, a row holding ``preset``, ``env_id``, ``noise``, ``gap``, ``gap_ci95``
(the half width), ``noise_over_gap``, ``best``, ``worst``, ``rounds`` (the most steps
an episode ran), ``seeds``, ``redraws`` and ``schedule_means`` (schedule -> mean
per-round reward); non-finite numbers are ``null``. A line per (preset, id,
schedule) goes to stderr as it finishes, with the seconds elapsed, and each row as
one JSON line when its id is done. It measures; it asserts nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from agents import SCHEDULE_KEYS, BasePolicy
from evaluation import EVAL_SEED_BASE
from evaluation.evaluate import mean_ci
from hffm_env.data.partition import deal_shares
from hffm_env.envs import ENV_IDS, EnvConfig
from hffm_env.federation.core import pair_mean

TARGET = 0.1
NOISE_SCHEDULE = EnvConfig().default_schedule  # the env's default aggregation: its episodes carry the noise


def redraw_eval_set(fed, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], ...]:
    """A fresh evaluation set shaped like ``fed.eval_shards()``: per task, the task's
    held-out part dealt out again (``deal_shares``, stratified or not as
    ``data.eval_shares`` says), one share per device scored on the task, each as long
    as that device's current share."""
    shards = fed.eval_shards()
    out: list[dict[str, np.ndarray]] = [{} for _ in shards]
    test_part = fed.data.shards.test_part
    stratified = fed.data.config.eval_shares == "stratified"
    for task in fed.tasks:
        holders = [d for d, x in enumerate(shards) if task in x]
        if not holders:
            continue
        part = test_part.get(task)
        if part is None or not len(part):
            part = np.unique(np.concatenate([shards[d][task] for d in holders]))
        sizes = [len(shards[d][task]) for d in holders]
        for d, share in zip(holders, deal_shares(part, fed.data.pools[task].label, sizes, rng, stratified)):
            out[d][task] = share
    return tuple(out)


def _score(measured, metric: str) -> float:
    accuracy, p_correct = measured
    m = pair_mean(p_correct if metric == "p_correct" else accuracy)
    return m if np.isfinite(m) else 0.0  # as the env scores a round with no (device, task) pair


def redrawn_rewards(core, before: dict, seed: int, redraws: int, measure) -> np.ndarray:
    """The accuracy term of the round being closed, ``w_acc·(after − before)``, on
    ``redraws`` re-drawn evaluation sets; ``before`` is a copy of the bank taken before
    the step, ``measure`` the federation's own scoring. ``fed.bank`` is the same
    object afterwards."""
    fed, cfg = core.fed, core.config
    after = fed.bank
    out = np.empty(redraws)
    for r in range(redraws):
        test = redraw_eval_set(fed, np.random.default_rng([seed, core.round, r]))
        s_after = _score(measure(test), cfg.reward_metric)
        fed.state.bank = before
        try:
            s_before = _score(measure(test), cfg.reward_metric)
        finally:
            fed.state.bank = after
        out[r] = cfg.w_acc * (s_after - s_before)
    return out


def _step_measured(env, action, seed: int, redraws: int):
    """``env.step(action)``, and the variance of its accuracy term over ``redraws``
    re-drawn evaluation sets, scored when the round scores itself (after the round's
    operations, before the events it draws for the next round change who holds what)."""
    core = env.unwrapped.core
    fed = core.fed
    before = {n: t.clone() for n, t in fed.bank.items()}
    own = fed.measure
    found: list[float] = []

    def measure(test=None, devices=None):
        if test is None and devices is None and not found:  # the round scoring itself
            found.append(float(np.var(redrawn_rewards(core, before, seed, redraws, own), ddof=1)))
        return own(test, devices)

    fed.measure = measure
    try:
        out = env.step(action)
    finally:
        del fed.measure  # the class's method again
    return out, found[0]


def run_episode(env, policy, seed: int, redraws: int = 0) -> tuple[list[float], list[float]]:
    """One episode of ``policy`` on ``seed``: the per-round rewards and, with
    ``redraws`` >= 2, per round the variance of the reward over that many re-drawn
    evaluation sets (else an empty list)."""
    obs, _ = env.reset(seed=seed)
    rewards: list[float] = []
    variances: list[float] = []
    done = False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        if redraws >= 2:
            (obs, reward, terminated, truncated, _), var = _step_measured(env, action, seed, redraws)
            variances.append(var)
        else:
            obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        done = terminated or truncated
    return rewards, variances


def measure_id(
    env_id: str,
    preset: str,
    seeds: int = 10,
    redraws: int = 8,
    rounds: int | None = None,
    schedules: tuple[str, ...] = SCHEDULE_KEYS,
    progress=None,
    overrides: dict | None = None,
    on_episode=None,
) -> dict:
    """The row of one (preset, id): noise, gap and its CI, noise/gap, best and worst
    schedule. ``schedules`` must hold the default schedule (the noise is measured on its
    episodes); ``progress(schedule, seconds)`` is called after each schedule,
    ``on_episode(1)`` after each episode."""
    import gymnasium as gym

    import hffm_env  # noqa: F401  (registers the ids)

    if NOISE_SCHEDULE not in schedules:
        raise ValueError(f"schedules must include {NOISE_SCHEDULE!r} (the noise is measured on it), got {schedules}")
    if redraws < 2:
        raise ValueError(f"redraws must be >= 2 (a variance over the redraws), got {redraws}")
    overrides = {**(overrides or {}), **({} if rounds is None else {"env__max_rounds": rounds})}
    per_seed: dict[str, np.ndarray] = {}
    variances: list[float] = []
    steps = 0
    for key in schedules:
        t0 = time.perf_counter()
        env = gym.make(env_id, preset=preset, env__default_schedule=key, **overrides)
        policy = BasePolicy(env)
        means = []
        for i in range(seeds):
            rewards, var = run_episode(env, policy, EVAL_SEED_BASE + i, redraws if key == NOISE_SCHEDULE else 0)
            means.append(np.mean(rewards))
            variances += var
            steps = max(steps, len(rewards))
            if on_episode is not None:
                on_episode(1)
        env.close()
        per_seed[key] = np.array(means)
        if progress is not None:
            progress(key, time.perf_counter() - t0)
    avg = {k: float(v.mean()) for k, v in per_seed.items()}
    best, worst = max(avg, key=avg.get), min(avg, key=avg.get)
    gap, half = mean_ci(per_seed[best] - per_seed[worst])
    noise = math.sqrt(float(np.mean(variances)))
    return {
        "preset": preset,
        "env_id": env_id,
        "noise": noise,
        "gap": gap,
        "gap_ci95": half,
        "noise_over_gap": noise / gap if gap > 0 else float("inf"),
        "best": best,
        "worst": worst,
        "rounds": steps,
        "seeds": seeds,
        "redraws": redraws,
        "schedule_means": avg,
    }


def worst_row(rows: list[dict]) -> dict:
    """The row of highest noise/gap."""
    return max(rows, key=lambda r: r["noise_over_gap"])


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def main(
    presets=("tiny", "small"),
    seeds: int = 10,
    redraws: int = 8,
    rounds: int | None = None,
    json_out: bool = False,
    env_ids: tuple[str, ...] = tuple(ENV_IDS),
    schedules: tuple[str, ...] = SCHEDULE_KEYS,
    overrides: dict | None = None,
) -> int:
    from hffm_cli.progress import Progress

    start = time.perf_counter()
    rows = []
    episodes = len(presets) * len(env_ids) * len(schedules) * seeds
    with Progress(episodes, "episodes", "hffm bench signal", stream=sys.stderr) as bar:
        for preset in presets:
            for env_id in env_ids:

                def progress(key, seconds, _p=preset, _id=env_id):
                    note = f" (+ noise, {redraws} redraws)" if key == NOISE_SCHEDULE else ""
                    print(
                        f"bench signal: {_p} {_id} {key}{note}: {seconds:.1f} s, "
                        f"{time.perf_counter() - start:.0f} s elapsed",
                        file=sys.stderr,
                        flush=True,
                    )

                rows.append(
                    measure_id(env_id, preset, seeds, redraws, rounds, schedules, progress, overrides, bar.update)
                )
                # each row as soon as it is measured: a long run that is stopped keeps what it has
                print(f"bench signal: row {json.dumps(_finite(rows[-1]))}", file=sys.stderr, flush=True)
    w = worst_row(rows)
    met = w["noise_over_gap"] <= TARGET
    if json_out:
        worst = {
            "env_id": w["env_id"],
            "preset": w["preset"],
            "noise_over_gap": w["noise_over_gap"],
            "target": TARGET,
            "met": met,
        }
        print(json.dumps(_finite({"rows": rows, "worst": worst}), indent=2))
        return 0
    last = EVAL_SEED_BASE + seeds - 1
    print(
        f"hffm bench signal: per-round reward against its noise; held-out seeds {EVAL_SEED_BASE}-{last}, "
        f"{redraws} re-drawn evaluation sets per round of {NOISE_SCHEDULE} (noise), the seven Table I "
        "schedules (gap = best - worst, paired over seeds, ± 95 % CI)"
    )
    print(
        f"{'preset':<7} {'env id':<27} {'rounds':>6} {'seeds':>5} {'noise':>8} {'gap':>8} {'± ci95':>8} "
        f"{'noise/gap':>9}  {'best':<13} worst"
    )
    for r in rows:
        print(
            f"{r['preset']:<7} {r['env_id']:<27} {r['rounds']:>6} {r['seeds']:>5} {r['noise']:>8.4f} "
            f"{r['gap']:>8.4f} {r['gap_ci95']:>8.4f} {r['noise_over_gap']:>9.3f}  {r['best']:<13} {r['worst']}"
        )
    if overrides:
        print("scenario overrides: " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
    print(
        f"noise/gap {w['noise_over_gap']:.3f} for the worst id ({w['env_id']}, {w['preset']}): "
        f"target <= {TARGET} {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    from hffm_cli.main import main as hffm

    raise SystemExit(hffm(["bench", "signal", *sys.argv[1:]]))

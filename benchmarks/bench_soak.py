"""Soak benchmark: memory of a long run, many episodes, one process.

Run as ``hffm bench soak`` (or ``python -m benchmarks.bench_soak --steps 10000``).
It steps one env with random valid actions (drawn from ``action_masks()``),
resetting whenever an episode ends, and reads the process's resident set size
(``VmRSS`` of ``/proc/self/status``; psutil where there is no ``/proc``) every
``every`` steps. It prints one row per reading (step, RSS in MiB, steps/s since the
previous reading) and the RSS growth from the first reading at or after the warm-up
(step 1,000, or half the run when it is shorter) to the last, against the target
of < 5 %. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

WARMUP_STEPS = 1_000
TARGET_GROWTH = 0.05


def rss_bytes() -> int:
    """This process's resident set size in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    import psutil  # only where /proc is missing

    return int(psutil.Process().memory_info().rss)


def soak(steps: int, env_id: str, preset: str, every: int, seed: int, on_step=None):
    """Yield (step, rss_bytes, steps/s since the last reading, episodes so far) every ``every`` steps;
    ``on_step(1)`` is called after each step."""
    import gymnasium as gym

    import hffm_env  # noqa: F401  (registers the ids)
    from agents import sample_valid_action  # here: `hffm -h` builds this module's parser without torch

    env = gym.make(env_id, preset=preset)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    episodes = 1
    t, last = time.perf_counter(), 0
    yield 0, rss_bytes(), float("nan"), episodes
    for i in range(1, steps + 1):
        action = sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
            episodes += 1
        if on_step is not None:
            on_step(1)
        if i % every == 0 or i == steps:
            now = time.perf_counter()
            rate = (i - last) / (now - t)
            t, last = now, i
            yield i, rss_bytes(), rate, episodes
    env.close()


def growth(readings: list[tuple[int, int]], warmup: int) -> tuple[int, int, float] | None:
    """(base step, last step, relative RSS growth) from the first reading at or after
    ``warmup`` to the last; None when no reading follows the base."""
    after = [(s, r) for s, r in readings if s >= warmup]
    if len(after) < 2:
        return None
    (s0, r0), (s1, r1) = after[0], after[-1]
    return s0, s1, (r1 - r0) / r0


def main(
    steps: int = 10_000, env_id: str = "hffm_env/HFFM-v0", preset: str = "tiny", every: int = 500, seed: int = 0
) -> int:
    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1, got steps={steps}, every={every}")
    import torch

    from hffm_cli.progress import Progress

    print(
        f"hffm bench soak: {env_id} on {preset!r}, {steps} steps of random valid actions, resets included, "
        f"seed {seed} ({torch.get_num_threads()} threads)"
    )
    print(f"{'step':>7} {'RSS MiB':>9} {'steps/s':>8} {'episodes':>9}")
    readings = []
    with Progress(steps, "steps", "hffm bench soak") as progress:
        for step, rss, rate, episodes in soak(steps, env_id, preset, every, seed, progress.update):
            readings.append((step, rss))
            print(f"{step:>7} {rss / 2**20:>9.1f} {rate:>8.1f} {episodes:>9}", flush=True)
    warmup = min(WARMUP_STEPS, steps // 2)
    g = growth(readings, warmup)
    if g is None:
        print(f"RSS growth after warm-up (step {warmup}): too few readings (lower --every)")
        return 0
    s0, s1, rel = g
    verdict = "met" if rel < TARGET_GROWTH else "NOT met"
    print(f"RSS growth from step {s0} to step {s1}: {rel:+.1%} (target < {TARGET_GROWTH:.0%}) -> {verdict}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`main` (``--steps``, ``--env-id``, ``--preset``, ``--every``, ``--seed``)."""
    p.add_argument("--steps", type=int, default=10_000, help="env steps in all (default 10000)")
    p.add_argument("--env-id", default="hffm_env/HFFM-v0", help="Gymnasium id (default hffm_env/HFFM-v0)")
    p.add_argument("--preset", default="tiny", help="scenario preset (default tiny)")
    p.add_argument("--every", type=int, default=500, help="steps between RSS readings (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the env and of the actions (default 0)")


def run(a: argparse.Namespace) -> int:
    return main(steps=a.steps, env_id=a.env_id, preset=a.preset, every=a.every, seed=a.seed)


def cli(argv: list[str] | None = None) -> int:
    """``main`` from command-line flags (see :func:`add_arguments`)."""
    p = argparse.ArgumentParser(prog="bench_soak", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(cli())

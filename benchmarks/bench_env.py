"""Benchmark of the environments: steps per second of every id on ``tiny`` and ``paper``.

Run as ``hffm bench env`` (or ``python -m benchmarks.bench_env``). For each id and
preset it resets once, then times ``steps`` steps with random valid actions (drawn
from ``action_masks()``), resetting when an episode ends (resets included in the
time). The time inside a step is split by timing the federation's phases: local
training (with the specialists'), aggregation operations, evaluation, the ledger
(round summary, relays' and inference charges are in "other"), and the env's own
observation/masking work. ``--backbone-dtype bfloat16`` times the same with the
frozen backbone's matmuls in bf16 (``model.backbone_dtype``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

from agents import sample_valid_action

TARGETS = {"tiny": 20.0, "paper": 2.0}


@contextmanager
def _timed(totals):
    from hffm_env.envs.core import EnvCore
    from hffm_env.federation.core import Federation
    from hffm_env.network.ledger import Ledger

    patched = [(Federation, "train", "training"), (Federation, "aggregate", "aggregation"),
               (Federation, "evaluate", "evaluation"), (Ledger, "end_round", "ledger"),
               (EnvCore, "observe", "observation"), (EnvCore, "action_masks", "observation")]
    saved = []
    for cls, name, label in patched:
        fn = getattr(cls, name)
        saved.append((cls, name, fn))

        def wrapper(*a, _fn=fn, _label=label, **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                totals[_label] += time.perf_counter() - t

        setattr(cls, name, wrapper)
    try:
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


def bench(env_id: str, preset: str, steps: int, seed: int = 0, **overrides) -> dict:
    import gymnasium as gym

    import hffm_env  # noqa: F401  (registers the ids)

    env = gym.make(env_id, preset=preset, **overrides)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    env.step(_valid(env, rng))          # warm-up: backbone, first-round caches
    totals: dict[str, float] = defaultdict(float)
    with _timed(totals):
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, te, tr, _ = env.step(_valid(env, rng))
            if te or tr:
                env.reset()
        wall = time.perf_counter() - t0
    env.close()
    split = {k: v / wall for k, v in totals.items()}
    split["other"] = max(0.0, 1.0 - sum(split.values()))
    return {"id": env_id, "preset": preset, "steps_per_s": steps / wall, "split": split}


def _valid(env, rng: np.random.Generator) -> np.ndarray:
    return sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)


def main(presets=("tiny", "paper"), steps: dict | None = None, backbone_dtype: str = "float32") -> int:
    import torch

    from hffm_env import ENV_IDS

    steps = steps or {"tiny": 60, "paper": 12}
    print(f"hffm bench env: steps/s with random valid actions, resets included ({torch.get_num_threads()} threads, "
          f"backbone matmuls in {backbone_dtype})")
    print(f"{'id':<30} {'preset':<7} {'steps/s':>8}  time split: training aggregation evaluation ledger "
          "observation other")
    worst = {}
    for preset in presets:
        for env_id in ENV_IDS:
            r = bench(env_id, preset, steps.get(preset, 10), model__backbone_dtype=backbone_dtype)
            s = r["split"]
            print(f"{env_id:<30} {preset:<7} {r['steps_per_s']:>8.1f}  "
                  + " ".join(f"{s.get(k, 0.0):>5.0%}" for k in ("training", "aggregation", "evaluation", "ledger",
                                                               "observation", "other")))
            worst[preset] = min(worst.get(preset, np.inf), r["steps_per_s"])
    for preset, w in worst.items():
        target = TARGETS.get(preset)
        if target:
            print(f"target {preset} >= {target:g} steps/s ({backbone_dtype} backbone): slowest id {w:.1f} -> "
                  f"{'met' if w >= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

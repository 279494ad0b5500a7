"""Heterogeneity: which modalities and tasks each device has, and a Dirichlet non-IID
split of every task's samples over the devices that hold it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hffm_env.data.config import DataConfig
from hffm_env.data.registry import MODALITIES, task_spec


@dataclass(frozen=True)
class Shards:
    """Per device and task: indices into the task's pool, for training and for test.

    ``train[d][t]`` / ``test[d][t]`` are int64 arrays (empty when device ``d`` does not
    hold task ``t``); ``modalities[d]`` and ``tasks[d]`` what device ``d`` has.
    """

    tasks: tuple[tuple[str, ...], ...]
    modalities: tuple[tuple[str, ...], ...]
    train: tuple[dict[str, np.ndarray], ...]
    test: tuple[dict[str, np.ndarray], ...]

    def counts(self, task: str) -> np.ndarray:
        """Training samples of ``task`` per device."""
        return np.array([len(t.get(task, ())) for t in self.train])


def assign_tasks(config: DataConfig, n_devices: int, rng: np.random.Generator):
    """Modalities each device senses and the tasks it draws among those they allow.

    Every task of the suite is held by at least one device; a device always senses
    what its tasks need.
    """
    avail = np.array(config.modality_availability)
    specs = [task_spec(t) for t in config.tasks]
    lo, hi = config.tasks_per_device
    dev_tasks: list[list[str]] = []
    for _ in range(n_devices):
        has = rng.uniform(size=len(MODALITIES)) < avail
        feasible = [s.name for s in specs if all(has[MODALITIES.index(m)] for m in s.modalities)]
        if not feasible:  # a device senses something: give it a task it can do
            feasible = [specs[rng.integers(len(specs))].name]
        k = min(int(rng.integers(lo, hi + 1)), len(feasible))
        dev_tasks.append(sorted(rng.choice(feasible, size=k, replace=False).tolist()))
    for t in config.tasks:  # every task has a holder
        if not any(t in d for d in dev_tasks):
            d = int(rng.integers(n_devices))
            dev_tasks[d] = sorted(set(dev_tasks[d]) | {t})
    dev_mods = [tuple(m for m in MODALITIES if any(m in task_spec(t).modalities for t in ts)) for ts in dev_tasks]
    return tuple(tuple(t) for t in dev_tasks), tuple(dev_mods)


def dirichlet_split(labels: np.ndarray, holders: np.ndarray, alpha: float, min_size: int,
                    rng: np.random.Generator, max_tries: int = 200) -> list[np.ndarray]:
    """Split sample indices over ``holders``: for every class, proportions ~ Dirichlet(α·1).

    Redrawn until every holder has at least ``min_size`` samples; raises a clear error
    when that is impossible (too few samples or too many holders).
    """
    m = len(holders)
    if m * min_size > len(labels):
        raise ValueError(f"cannot give {m} devices {min_size} samples each from {len(labels)} samples: "
                         "raise pool_size or lower min_shard")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(m)]
        for k in classes:
            idx = rng.permutation(np.nonzero(labels == k)[0])
            cuts = (np.cumsum(rng.dirichlet(np.full(m, alpha))) * len(idx)).astype(int)[:-1]
            for j, chunk in enumerate(np.split(idx, cuts)):
                parts[j].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ValueError(f"no Dirichlet(alpha={alpha}) split gave all {m} devices >= {min_size} samples in "
                     f"{max_tries} draws: raise pool_size or dirichlet_alpha, or lower min_shard")


def partition(config: DataConfig, pools: dict, n_devices: int, rng: np.random.Generator) -> Shards:
    """Assign tasks/modalities and split every task's pool non-IID over its holders."""
    tasks, mods = assign_tasks(config, n_devices, rng)
    train: list[dict[str, np.ndarray]] = [{} for _ in range(n_devices)]
    test: list[dict[str, np.ndarray]] = [{} for _ in range(n_devices)]
    min_size = int(np.ceil(config.min_shard / (1.0 - config.test_fraction)))
    for t in config.tasks:
        holders = np.array([d for d in range(n_devices) if t in tasks[d]])
        shards = dirichlet_split(pools[t].label, holders, config.dirichlet_alpha, min_size, rng)
        for d, idx in zip(holders, shards):
            idx = rng.permutation(idx)
            n_test = max(1, int(round(config.test_fraction * len(idx))))
            test[d][t], train[d][t] = np.sort(idx[:n_test]), np.sort(idx[n_test:])
    return Shards(tasks, mods, tuple(train), tuple(test))

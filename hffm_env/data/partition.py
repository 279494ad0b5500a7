"""Heterogeneity: which modalities and tasks each device has, and a Dirichlet non-IID
split of every task's samples over the devices that hold it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hffm_env._validation import ConfigError
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


def assign_tasks(config: DataConfig, n_devices: int, rng: np.random.Generator, max_tries: int = 100):
    """Modalities each device senses and the tasks it draws among those they allow.

    A device senses modality ``m`` with probability ``modality_availability[m]`` (its
    draw is repeated until it allows at least ``tasks_per_device[0]`` tasks), then
    holds between ``tasks_per_device[0]`` and ``tasks_per_device[1]`` of them. The
    whole draw is repeated until every task of the suite has a holder. A config under
    which that does not happen in ``max_tries`` draws raises a ConfigError.
    """
    avail = np.array(config.modality_availability)
    specs = [task_spec(t) for t in config.tasks]
    lo, hi = config.tasks_per_device
    for _ in range(max_tries):
        dev_tasks: list[tuple[str, ...]] = []
        for _ in range(n_devices):
            for _ in range(max_tries):
                has = rng.uniform(size=len(MODALITIES)) < avail
                feasible = [s.name for s in specs if all(has[MODALITIES.index(m)] for m in s.modalities)]
                if len(feasible) >= lo:
                    break
            else:
                raise ConfigError(f"modality_availability={config.modality_availability} rarely lets a device do "
                                  f"tasks_per_device[0]={lo} of the tasks {config.tasks}: raise the availability "
                                  "or lower tasks_per_device[0]")
            k = int(rng.integers(lo, min(hi, len(feasible)) + 1))
            dev_tasks.append(tuple(sorted(rng.choice(feasible, size=k, replace=False).tolist())))
        if all(any(t in d for d in dev_tasks) for t in config.tasks):
            mods = tuple(tuple(m for m in MODALITIES if any(m in task_spec(t).modalities for t in ts))
                         for ts in dev_tasks)
            return tuple(dev_tasks), mods
    raise ConfigError(f"in {max_tries} draws, some task of {config.tasks} had no holder among {n_devices} devices: "
                      "raise tasks_per_device[1] or modality_availability, or add devices")


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

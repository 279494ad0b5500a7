"""Data: the synthetic M3T task suite, a real-data task, VQA folders, non-IID partition.

``task_pool(name, n, seed, config)`` builds (and caches, read-only) a pool of ``n``
samples of a registered task; ``make_federated_data`` draws every device's
modalities, tasks and Dirichlet shards.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hffm_env.data import digits as _digits  # noqa: F401  (registers digits_qa)
from hffm_env.data import synthetic as _synthetic  # noqa: F401  (registers the synthetic suite)
from hffm_env.data.config import DataConfig
from hffm_env.data.partition import Shards, assign_tasks, dirichlet_split, partition
from hffm_env.data.registry import (
    MODALITIES,
    TaskData,
    TaskSpec,
    build_task,
    register_task,
    registered_tasks,
    task_spec,
)
from hffm_env.data.tokenizer import WordTokenizer
from hffm_env.data.vqa_folder import load_vqa_folder, register_vqa_folder


@lru_cache(maxsize=32)
def _cached_pool(name: str, n: int, seed: int, config: DataConfig) -> TaskData:
    # each task draws from its own stream of the seed, keyed by a stable hash of its name
    data = build_task(name, n, np.random.default_rng([seed, zlib.crc32(name.encode())]), config)
    for arr in (data.label, data.image, data.tokens, data.attention, data.sensor):
        if arr is not None:
            arr.flags.writeable = False
    return data


def task_pool(name: str, n: int, seed: int, config: DataConfig) -> TaskData:
    """``n`` samples of task ``name`` drawn from ``seed``; cached and read-only."""
    return _cached_pool(name, int(n), int(seed), config)


@dataclass(frozen=True)
class FederatedData:
    """The pools of every task of the suite and every device's shards of them."""

    config: DataConfig
    pools: dict[str, TaskData]
    shards: Shards

    def device_data(self, device: int, task: str, split: str = "train") -> TaskData:
        idx = (self.shards.train if split == "train" else self.shards.test)[device].get(task)
        if idx is None:
            raise KeyError(f"device {device} does not hold task {task!r} (it holds {self.shards.tasks[device]})")
        return self.pools[task].subset(idx)


def make_federated_data(config: DataConfig, n_devices: int, seed: int) -> FederatedData:
    """Pools (seeded by ``seed``) and a partition over ``n_devices`` (also from ``seed``)."""
    pools = {t: task_pool(t, config.pool_size, seed, config) for t in config.tasks}
    shards = partition(config, pools, n_devices, np.random.default_rng([seed, 0x5EED]))
    return FederatedData(config, pools, shards)


__all__ = [
    "DataConfig",
    "FederatedData",
    "MODALITIES",
    "Shards",
    "TaskData",
    "TaskSpec",
    "WordTokenizer",
    "assign_tasks",
    "build_task",
    "dirichlet_split",
    "load_vqa_folder",
    "make_federated_data",
    "partition",
    "register_task",
    "register_vqa_folder",
    "registered_tasks",
    "task_pool",
    "task_spec",
]

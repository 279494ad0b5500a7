"""Heterogeneity: which modalities and tasks each device has, and a Dirichlet non-IID
split of every task's samples over the devices that hold it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hffm_env._validation import ConfigError
from hffm_env.data.config import DataConfig
from hffm_env.data.registry import MODALITIES, task_spec


@dataclass(frozen=True)
class Shards:
    """Per device and task: indices into the task's pool, for training and for test.

    ``train[d][t]`` / ``test[d][t]`` are int64 arrays (absent when device ``d`` does not
    hold task ``t``); ``modalities[d]`` and ``tasks[d]`` what device ``d`` has.
    ``test_part[t]``: the indices of task ``t``'s pool set aside for testing before the
    split (``eval_split="global"``), from which the devices' test shares are drawn;
    empty with ``eval_split="local"``.
    """

    tasks: tuple[tuple[str, ...], ...]
    modalities: tuple[tuple[str, ...], ...]
    train: tuple[dict[str, np.ndarray], ...]
    test: tuple[dict[str, np.ndarray], ...]
    test_part: dict[str, np.ndarray] = field(default_factory=dict)

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
                raise ConfigError(
                    f"modality_availability={config.modality_availability} rarely lets a device do "
                    f"tasks_per_device[0]={lo} of the tasks {config.tasks}: raise the availability "
                    "or lower tasks_per_device[0]"
                )
            k = int(rng.integers(lo, min(hi, len(feasible)) + 1))
            dev_tasks.append(tuple(sorted(rng.choice(feasible, size=k, replace=False).tolist())))
        if all(any(t in d for d in dev_tasks) for t in config.tasks):
            mods = tuple(
                tuple(m for m in MODALITIES if any(m in task_spec(t).modalities for t in ts)) for ts in dev_tasks
            )
            return tuple(dev_tasks), mods
    raise ConfigError(
        f"in {max_tries} draws, some task of {config.tasks} had no holder among {n_devices} devices: "
        "raise tasks_per_device[1] or modality_availability, or add devices"
    )


def dirichlet_split(
    labels: np.ndarray, holders: np.ndarray, alpha: float, min_size: int, rng: np.random.Generator, max_tries: int = 200
) -> list[np.ndarray]:
    """Split sample indices over ``holders``: for every class, proportions ~ Dirichlet(α·1).

    Redrawn until every holder has at least ``min_size`` samples; raises a clear error
    when that is impossible (too few samples or too many holders).
    """
    m = len(holders)
    if m * min_size > len(labels):
        raise ValueError(
            f"cannot give {m} devices {min_size} samples each from {len(labels)} samples: "
            "raise pool_size or lower min_shard"
        )
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
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave all {m} devices >= {min_size} samples in "
        f"{max_tries} draws: raise pool_size or dirichlet_alpha, or lower min_shard"
    )


def partition(config: DataConfig, pools: dict, n_devices: int, rng: np.random.Generator) -> Shards:
    """Assign tasks/modalities and split every task's pool non-IID over its holders.

    ``eval_split="global"`` (the reference's protocol): each task's pool is split once
    into a test part (``test_fraction``) and a train part; only the train part is
    Dirichlet-split over the task's holders, and the test part is dealt out in
    near-equal shares (``deal_shares``, stratified by answer unless
    ``eval_shares="random"``), so every device is scored on the task's global answer
    distribution. ``eval_split="local"``: each device's Dirichlet shard is split into
    train and test, so a device is scored on its own skewed labels (personalisation).
    """
    tasks, mods = assign_tasks(config, n_devices, rng)
    train: list[dict[str, np.ndarray]] = [{} for _ in range(n_devices)]
    test: list[dict[str, np.ndarray]] = [{} for _ in range(n_devices)]
    test_part: dict[str, np.ndarray] = {}
    for t in config.tasks:
        holders = np.array([d for d in range(n_devices) if t in tasks[d]])
        labels = pools[t].label
        if config.eval_split == "global":
            order = rng.permutation(len(labels))
            n_test = test_part_size(config, len(labels), len(holders))
            part, rest = np.sort(order[:n_test]), np.sort(order[n_test:])
            shards = dirichlet_split(labels[rest], holders, config.dirichlet_alpha, config.min_shard, rng)
            sizes = [len(x) for x in np.array_split(part, len(holders))]
            shares = deal_shares(part, labels, sizes, rng, config.eval_shares == "stratified")
            for d, idx, share in zip(holders, shards, shares):
                train[d][t], test[d][t] = rest[idx], share
            test_part[t] = part
            continue
        min_size = int(np.ceil(config.min_shard / (1.0 - config.test_fraction)))
        shards = dirichlet_split(labels, holders, config.dirichlet_alpha, min_size, rng)
        for d, idx in zip(holders, shards):
            idx = rng.permutation(idx)
            n_test = max(1, int(round(config.test_fraction * len(idx))))
            test[d][t], train[d][t] = np.sort(idx[:n_test]), np.sort(idx[n_test:])
    return Shards(tasks, mods, tuple(train), tuple(test), test_part)


def deal_shares(
    part: np.ndarray, labels: np.ndarray, sizes, rng: np.random.Generator, stratified: bool = True
) -> list[np.ndarray]:
    """Shares of ``part`` (indices into a pool whose answers are ``labels``), one of
    each length in ``sizes``, from one random permutation of ``part``.

    ``stratified``: the permutation is sorted by answer (stably, so ties stay in
    random order) and share ``j`` takes every ``1/sizes[j]``-th place of it, so each
    share's count of every answer is its proportional count to within one (a sample
    stratified by answer). Else consecutive slices of the permutation (a simple
    random split). Where ``sizes`` add up to more than ``part``, further permutations
    are appended, and samples may then repeat.
    """
    sizes = np.asarray(sizes, dtype=int)
    if (sizes < 0).any():
        raise ValueError(f"sizes must be >= 0, got {sizes.tolist()}")
    order = np.empty(0, dtype=np.int64)
    while len(order) < sizes.sum():
        block = rng.permutation(part)
        if stratified:
            block = block[np.argsort(labels[block], kind="stable")]
        order = np.concatenate([order, block])
    if not stratified:
        return [np.sort(order[start : start + n]) for start, n in zip(np.cumsum(sizes) - sizes, sizes)]
    # share j's i-th sample sits at (i + 1/2) / sizes[j] of the way through the order
    owner = np.concatenate([np.full(n, j) for j, n in enumerate(sizes)] or [np.empty(0, int)])
    place = np.concatenate([(np.arange(n) + 0.5) / n for n in sizes] or [np.empty(0)])
    taken = owner[np.argsort(place, kind="stable")]
    picked = order
    if len(order) > len(taken):  # a systematic sample of the order, from a random start
        step = len(order) / len(taken)
        picked = order[np.floor((np.arange(len(taken)) + rng.random()) * step).astype(int)]
    return [np.sort(picked[taken == j]) for j in range(len(sizes))]


def test_part_size(config: DataConfig, pool_size: int, n_holders: int) -> int:
    """Samples of a task's pool set aside for testing under ``eval_split="global"``:
    ``test_fraction`` of the pool, at least one per holder."""
    n_test = max(int(round(config.test_fraction * pool_size)), n_holders)
    if pool_size - n_test < n_holders * config.min_shard:
        raise ValueError(
            f"cannot give {n_holders} devices {config.min_shard} training samples each from the "
            f"{pool_size - n_test} samples left after the test part: raise pool_size or lower min_shard"
        )
    return n_test

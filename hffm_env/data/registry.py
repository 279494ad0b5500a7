"""Tasks: what a task's data looks like, and the registry users add tasks to.

A task is a function ``builder(n, rng, config) -> TaskData`` registered under a name.
Built-in tasks register themselves when ``hffm_env.data`` is imported; a user adds one
without editing the package::

    from hffm_env.data import register_task, TaskData

    @register_task("my_task", modalities=("image", "text"), answers=("yes", "no"))
    def build(n, rng, config):
        ...
        return TaskData(...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hffm_env._validation import ConfigError

MODALITIES = ("image", "text", "sensor")


@dataclass(frozen=True)
class TaskData:
    """A pool of samples of one task.

    ``image``: uint8 ``[N, H, W, 3]``; ``tokens`` / ``attention``: int64 ``[N, L]``;
    ``sensor``: float32 ``[N, T]``; ``label``: int64 ``[N]`` indexing ``answers``. A
    modality the task does not use is None.
    """

    name: str
    answers: tuple[str, ...]
    label: np.ndarray
    image: np.ndarray | None = None
    tokens: np.ndarray | None = None
    attention: np.ndarray | None = None
    sensor: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.label)
        if self.label.dtype.kind not in "iu" or (n and (self.label.min() < 0 or self.label.max() >= len(self.answers))):
            raise ValueError(f"task {self.name!r}: labels must be integers in [0, {len(self.answers) - 1}]")
        for field in ("image", "tokens", "attention", "sensor"):
            arr = getattr(self, field)
            if arr is not None and len(arr) != n:
                raise ValueError(f"task {self.name!r}: {field} has {len(arr)} rows, labels have {n}")
        if (self.tokens is None) != (self.attention is None):
            raise ValueError(f"task {self.name!r}: tokens and attention come together")

    @property
    def modalities(self) -> tuple[str, ...]:
        present = {"image": self.image, "text": self.tokens, "sensor": self.sensor}
        return tuple(m for m in MODALITIES if present[m] is not None)

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, idx: np.ndarray) -> "TaskData":
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        return TaskData(
            self.name,
            self.answers,
            self.label[idx],
            take(self.image),
            take(self.tokens),
            take(self.attention),
            take(self.sensor),
        )


@dataclass(frozen=True)
class TaskSpec:
    name: str
    modalities: tuple[str, ...]
    answers: tuple[str, ...]
    builder: Callable[..., TaskData]
    description: str = ""


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(
    name: str, *, modalities: tuple[str, ...], answers: tuple[str, ...], description: str = "", replace: bool = False
):
    """Decorator registering ``builder(n, rng, config) -> TaskData`` under ``name``."""
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise ConfigError(f"modalities of task {name!r} must be a non-empty subset of {MODALITIES}, got {modalities!r}")
    if len(set(answers)) != len(answers) or len(answers) < 2:
        raise ConfigError(f"answers of task {name!r} must be at least 2 distinct strings, got {answers!r}")

    def wrap(builder: Callable[..., TaskData]) -> Callable[..., TaskData]:
        if name in _REGISTRY and not replace:
            raise ConfigError(f"task {name!r} is already registered (pass replace=True to override)")
        _REGISTRY[name] = TaskSpec(name, tuple(modalities), tuple(answers), builder, description)
        return builder

    return wrap


def task_spec(name: str) -> TaskSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"task must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def registered_tasks() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build_task(name: str, n: int, rng: np.random.Generator, config) -> TaskData:
    """Build ``n`` samples of a registered task and check they match its declaration."""
    spec = task_spec(name)
    data = spec.builder(n, rng, config)
    if data.answers != spec.answers or set(data.modalities) != set(spec.modalities):
        raise ValueError(
            f"task {name!r} built data with answers/modalities {data.answers}/{data.modalities}, "
            f"declared {spec.answers}/{spec.modalities}"
        )
    return data

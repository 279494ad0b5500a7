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


def _first_rows(bad: np.ndarray) -> str:
    """``k of n rows (first: [...])`` for a bool mask over rows."""
    rows = np.nonzero(bad)[0]
    return f"{rows.size} of {bad.size} rows (first: {rows[:5].tolist()})"


@dataclass(frozen=True)
class TaskData:
    """A pool of samples of one task.

    ``image``: uint8 ``[N, H, W, 3]``; ``tokens`` / ``attention``: int64 ``[N, L]``;
    ``sensor``: float32 ``[N, T]``; ``label``: int64 ``[N]`` indexing ``answers``. A
    modality the task does not use is None.

    Construction checks what can go wrong at the door, so that bad data never
    reaches training: a malformed array, a label outside the answers, a negative
    token id, an attention mask other than 0/1, a non-finite sensor value. The
    error names the task, the field and the first offending rows.
    :func:`build_task` checks the rest against the data config (image size, token
    ids below the vocabulary size, signal length).
    """

    name: str
    answers: tuple[str, ...]
    label: np.ndarray
    image: np.ndarray | None = None
    tokens: np.ndarray | None = None
    attention: np.ndarray | None = None
    sensor: np.ndarray | None = None

    def __post_init__(self) -> None:
        what = f"task {self.name!r}"
        shapes = {
            "label": ("integer [N]", 1, "iu"),
            "image": ("uint8 [N, H, W, 3]", 4, "u"),
            "tokens": ("integer [N, L]", 2, "iu"),
            "attention": ("integer [N, L]", 2, "iub"),
            "sensor": ("float [N, T]", 2, "f"),
        }
        for field, (form, ndim, kinds) in shapes.items():
            arr = getattr(self, field)
            if arr is None and field != "label":
                continue
            if (
                not isinstance(arr, np.ndarray)
                or arr.ndim != ndim
                or arr.dtype.kind not in kinds
                or (field == "image" and (arr.dtype != np.uint8 or arr.shape[-1] != 3 or 0 in arr.shape[1:]))
            ):
                got = f"{arr.dtype} {list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"{what}: {field} must be a {form} array, got {got}")
        n = len(self.label)
        for field in ("image", "tokens", "attention", "sensor"):
            arr = getattr(self, field)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{what}: {field} has {len(arr)} rows, labels have {n}")
        if (self.tokens is None) != (self.attention is None):
            raise ValueError(f"{what}: tokens and attention come together")
        bad = (self.label < 0) | (self.label >= len(self.answers))
        if bad.any():
            raise ValueError(f"{what}: label must be in [0, {len(self.answers) - 1}], not in {_first_rows(bad)}")
        if self.tokens is not None:
            if self.attention.shape != self.tokens.shape:
                raise ValueError(
                    f"{what}: attention must have the shape of tokens {list(self.tokens.shape)}, "
                    f"got {list(self.attention.shape)}"
                )
            bad = (self.tokens < 0).any(1)
            if bad.any():
                raise ValueError(f"{what}: tokens must be ids >= 0, not in {_first_rows(bad)}")
            bad = ((self.attention != 0) & (self.attention != 1)).any(1)
            if bad.any():
                raise ValueError(f"{what}: attention must be 0 or 1, not in {_first_rows(bad)}")
        if self.sensor is not None:
            bad = ~np.isfinite(self.sensor).all(1)
            if bad.any():
                raise ValueError(f"{what}: sensor must be finite, NaN or ±inf in {_first_rows(bad)}")

    def check_fits(self, config) -> None:
        """Check the pool fits the data ``config`` the model is built for: images of
        ``image_size`` pixels square, token ids below ``vocab_size`` in at most
        ``max_question_tokens`` columns, signals of ``sensor_length`` samples."""
        what = f"task {self.name!r}"
        size = config.image_size
        if self.image is not None and self.image.shape[1:3] != (size, size):
            raise ValueError(
                f"{what}: image must be {size}x{size} pixels (data.image_size), "
                f"got {self.image.shape[1]}x{self.image.shape[2]}"
            )
        if self.tokens is not None:
            if self.tokens.shape[1] > config.max_question_tokens:
                raise ValueError(
                    f"{what}: tokens must have at most {config.max_question_tokens} columns "
                    f"(data.max_question_tokens), got {self.tokens.shape[1]}"
                )
            bad = (self.tokens >= config.vocab_size).any(1)
            if bad.any():
                raise ValueError(
                    f"{what}: tokens must be ids in [0, {config.vocab_size - 1}] (data.vocab_size), "
                    f"not in {_first_rows(bad)}"
                )
        if self.sensor is not None and self.sensor.shape[1] != config.sensor_length:
            raise ValueError(
                f"{what}: sensor must have {config.sensor_length} samples per row (data.sensor_length), "
                f"got {self.sensor.shape[1]}"
            )

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
    """Build ``n`` samples of a registered task and check they match its declaration
    and fit ``config`` (:meth:`TaskData.check_fits`)."""
    spec = task_spec(name)
    data = spec.builder(n, rng, config)
    if not isinstance(data, TaskData):
        raise TypeError(f"task {name!r}: its builder must return a TaskData, got {type(data).__name__}")
    data.check_fits(config)
    if data.answers != spec.answers or set(data.modalities) != set(spec.modalities):
        raise ValueError(
            f"task {name!r} built data with answers/modalities {data.answers}/{data.modalities}, "
            f"declared {spec.answers}/{spec.modalities}"
        )
    return data

"""The records of a federation: what a round returns, cold starts, requests, and the
membership and role state the round's parts share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hffm_env.data import task_spec
from hffm_env.network.ledger import RoundCost


def pair_mean(per_device: dict[int, dict[str, float]]) -> float:
    """Mean of a per-device, per-task metric over (device, task) pairs (NaN if none),
    summed in (device, task) order whatever the dicts' order: the same values give the
    same mean to the bit."""
    vals = [per_device[d][t] for d in sorted(per_device) for t in sorted(per_device[d])]
    return float(np.mean(vals)) if vals else float("nan")


SPECIALIST_GROUP = 2_000_000  # ledger groups of specialists' extra steps: one per device, apart from clusters


@dataclass(frozen=True)
class ColdStart:
    """A module device ``node`` needs and has never trained (paper Sec. V-B). It
    lasts until the module is relayed to the device or the device has trained it
    from scratch for ``federation.cold_start_rounds`` rounds (``rounds`` so far);
    meanwhile the device is outside the module's aggregations."""

    node: int
    kind: str
    cause: str  # "task_arrival" | "modality_on" | "join"
    rounds: int = 0


@dataclass(frozen=True)
class Requests:
    """This round's inference requests: requester, task, sample index in the task's pool."""

    device: np.ndarray
    task: tuple[str, ...]
    sample: np.ndarray

    def __len__(self) -> int:
        return len(self.device)


@dataclass(frozen=True)
class InferenceResult:
    """What serving the round's requests gave: per request the target, whether the
    answer was right, and the end-to-end seconds (input, compute, answer)."""

    targets: tuple[str, ...]
    correct: np.ndarray
    latency_s: np.ndarray
    failed: np.ndarray | None = None  # requests a fault left unserved (counted wrong)
    p_correct: np.ndarray | None = None  # probability the serving copy gave the right answer (0 if failed)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    @property
    def mean_p_correct(self) -> float:
        """Mean probability of the right answer over the requests (the smooth twin of :attr:`accuracy`)."""
        if self.p_correct is None or not len(self.p_correct):
            return float("nan")
        return float(self.p_correct.mean())


@dataclass(frozen=True)
class RoundResult:
    """One round: accuracy and mean probability of the right answer per device and
    task, its cost, and what changed."""

    round: int
    accuracy: dict[int, dict[str, float]]
    cost: RoundCost
    train_loss: float
    operations: tuple[dict, ...] = ()
    events: tuple[dict, ...] = ()
    inference: InferenceResult | None = None
    cold_starts: tuple[ColdStart, ...] = ()
    faults: tuple[dict, ...] = ()
    p_correct: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        """Mean over (device, task) pairs."""
        return pair_mean(self.accuracy)

    @property
    def mean_p_correct(self) -> float:
        """Mean probability of the right answer over (device, task) pairs."""
        return pair_mean(self.p_correct)

    @property
    def task_accuracy(self) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for per in self.accuracy.values():
            for t, a in per.items():
                out.setdefault(t, []).append(a)
        return {t: float(np.mean(v)) for t, v in sorted(out.items())}

    @property
    def latency_s(self) -> float:
        return self.cost.latency_s

    @property
    def energy_j(self) -> float:
        return self.cost.energy_j


@dataclass
class Membership:
    """Who is active, which modalities are on, which tasks each device holds (with shards)."""

    active: np.ndarray
    modalities: list[set[str]]
    tasks: list[list[str]]
    train: list[dict[str, np.ndarray]]
    test: list[dict[str, np.ndarray]]
    version: int = 0

    def active_tasks(self, d: int) -> list[str]:
        if not self.active[d]:
            return []
        return [t for t in self.tasks[d] if set(task_spec(t).modalities) <= self.modalities[d]]


@dataclass
class Roles:
    """Who specialises in which modules, and which devices attack (with what strength)."""

    specialists: set[tuple[int, str]] = field(default_factory=set)
    attack: dict[int, tuple[str, float]] = field(default_factory=dict)

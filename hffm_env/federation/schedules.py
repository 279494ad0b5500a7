"""The paper's Table I schedules as sequences of federation operations, run with real training.

A schedule (:class:`~hffm_env.network.schedules.AggregationSchedule`) says which
level aggregates in which round; :func:`schedule_ops` turns one round of it into
:class:`~hffm_env.federation.ops.Aggregate` records, and :func:`run_schedules`
runs every schedule on the same seeded scenario (same topology, data and initial
modules), reporting latency and energy per round and the final accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hffm_env._validation import check_int
from hffm_env.federation.ops import Aggregate
from hffm_env.network.schedules import AggregationSchedule, table1_schedules
from hffm_env.scenario import Scenario


def schedule_ops(schedule: AggregationSchedule, round_number: int, kinds: tuple[str, ...]) -> list[Aggregate]:
    """The aggregations of round ``round_number`` (1-based) of ``schedule`` for module ``kinds``.

    Tier-1 aggregation is the edge server's (or, with ``d2d``, the cluster head's by
    D2D gather and broadcast); any higher level aggregates at the cloud, through the
    edge servers (with ``d2d``, the heads talk to them); ``star`` sends every
    device's modules straight to the cloud each round.
    """
    if schedule.star:
        return [Aggregate(kinds, "cloud", path="star")]
    level = schedule.level(round_number)
    if level == 0:
        return []
    if level == 1:
        return [Aggregate(kinds, "d2d", path="gather")] if schedule.d2d else [Aggregate(kinds, "edge", path="direct")]
    return [Aggregate(kinds, "cloud", path="d2d" if schedule.d2d else "direct")]


LOCAL_ONLY = "local_only"


@dataclass(frozen=True)
class ScheduleRun:
    """One schedule's run: per-round latency (s), energy (J), mean accuracy and mean
    probability of the right answer, and the majority-answer rate of what was scored."""

    key: str
    name: str
    latency_s: np.ndarray
    energy_j: np.ndarray
    accuracy: np.ndarray
    p_correct: np.ndarray
    majority_rate: float

    @property
    def mean_latency_s(self) -> float:
        return float(self.latency_s.mean())

    @property
    def mean_energy_j(self) -> float:
        return float(self.energy_j.mean())

    @property
    def first_accuracy(self) -> float:
        return float(self.accuracy[0])

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1])


def run_schedule(
    scenario: Scenario,
    schedule: AggregationSchedule | None,
    rounds: int,
    seed: int | None = None,
    key: str = "",
    kinds: tuple[str, ...] | None = None,
    progress=None,
) -> ScheduleRun:
    """Run ``rounds`` federated rounds of ``schedule`` (every module kind unless
    ``kinds``); ``schedule`` None never aggregates (local training only)."""
    from hffm_env.federation.core import Federation

    check_int("rounds", rounds, low=1)
    fed = Federation(scenario, seed=seed)
    kinds = fed.kinds if kinds is None else fed.expand_kinds(kinds)
    majority = fed.majority_rate()
    lat, en, acc, prob = [], [], [], []
    for r in range(1, rounds + 1):
        res = fed.run_round(schedule_ops(schedule, r, kinds) if schedule is not None else [])
        lat.append(res.latency_s)
        en.append(res.energy_j)
        acc.append(res.mean_accuracy)
        prob.append(res.mean_p_correct)
        if progress is not None:
            progress()
    name = schedule.name if schedule is not None else "No aggregation (local training only)"
    return ScheduleRun(key, name, np.array(lat), np.array(en), np.array(acc), np.array(prob), majority)


def schedule_keys() -> tuple[str, ...]:
    """The Table I schedules' keys and ``local_only``."""
    return (*table1_schedules(), LOCAL_ONLY)


def run_schedules(
    scenario: Scenario, rounds: int, seed: int | None = None, keys: tuple[str, ...] | None = None, progress=None
) -> dict[str, ScheduleRun]:
    """Every Table I schedule and ``local_only`` (or those in ``keys``) on the same
    seeded scenario (same topology, data, initial modules and evaluation set)."""
    schedules = table1_schedules()
    keys = schedule_keys() if keys is None else keys
    unknown = [k for k in keys if k not in schedules and k != LOCAL_ONLY]
    if unknown:
        raise ValueError(f"schedules must be among {', '.join(schedule_keys())}, got {unknown}")
    return {k: run_schedule(scenario, schedules.get(k), rounds, seed, key=k, progress=progress) for k in keys}


def schedule_table(scenario: Scenario, rounds: int, seeds: tuple[int, ...], progress=None) -> list[dict]:
    """One row per schedule (:func:`schedule_keys`), means over ``seeds``: ``method``,
    ``name``, ``first_accuracy`` (after round 1), ``final_accuracy``,
    ``final_p_correct``, ``majority_rate`` (the share of the scored samples whose
    answer is their task's most common one: what answering it always would score),
    ``latency_s`` and ``energy_j`` per round; ``final_accuracy_per_seed`` too."""
    runs = [run_schedules(scenario, rounds, seed=s, progress=progress) for s in seeds]
    rows = []
    for k in schedule_keys():
        per = [r[k] for r in runs]
        rows.append(
            {
                "method": k,
                "name": per[0].name,
                "first_accuracy": float(np.mean([r.first_accuracy for r in per])),
                "final_accuracy": float(np.mean([r.final_accuracy for r in per])),
                "final_p_correct": float(np.mean([r.p_correct[-1] for r in per])),
                "majority_rate": float(np.mean([r.majority_rate for r in per])),
                "latency_s": float(np.mean([r.mean_latency_s for r in per])),
                "energy_j": float(np.mean([r.mean_energy_j for r in per])),
                "final_accuracy_per_seed": [r.final_accuracy for r in per],
            }
        )
    return rows

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


@dataclass(frozen=True)
class ScheduleRun:
    """One schedule's run: per-round latency (s), energy (J) and mean accuracy."""

    key: str
    name: str
    latency_s: np.ndarray
    energy_j: np.ndarray
    accuracy: np.ndarray

    @property
    def mean_latency_s(self) -> float:
        return float(self.latency_s.mean())

    @property
    def mean_energy_j(self) -> float:
        return float(self.energy_j.mean())

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1])


def run_schedule(scenario: Scenario, schedule: AggregationSchedule, rounds: int, seed: int | None = None,
                 key: str = "", kinds: tuple[str, ...] | None = None, progress=None) -> ScheduleRun:
    """Run ``rounds`` federated rounds of ``schedule`` (every module kind unless ``kinds``)."""
    from hffm_env.federation.core import Federation

    check_int("rounds", rounds, low=1)
    fed = Federation(scenario, seed=seed)
    kinds = fed.kinds if kinds is None else fed.expand_kinds(kinds)
    lat, en, acc = [], [], []
    for r in range(1, rounds + 1):
        res = fed.run_round(schedule_ops(schedule, r, kinds))
        lat.append(res.latency_s)
        en.append(res.energy_j)
        acc.append(res.mean_accuracy)
        if progress is not None:
            progress()
    return ScheduleRun(key, schedule.name, np.array(lat), np.array(en), np.array(acc))


def run_schedules(scenario: Scenario, rounds: int, seed: int | None = None, keys: tuple[str, ...] | None = None,
                  progress=None) -> dict[str, ScheduleRun]:
    """Every Table I schedule (or those in ``keys``) on the same seeded scenario."""
    schedules = table1_schedules()
    keys = tuple(schedules) if keys is None else keys
    unknown = [k for k in keys if k not in schedules]
    if unknown:
        raise ValueError(f"schedules must be among {', '.join(schedules)}, got {unknown}")
    return {k: run_schedule(scenario, schedules[k], rounds, seed, key=k, progress=progress) for k in keys}

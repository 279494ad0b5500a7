"""Fixed controllers for the hffm-env environments: the paper's Table I schedules,
heuristics for relaying, specialization and offloading, and a random policy, all
with SB3's ``predict`` signature. See :mod:`agents.policies`."""

from agents.policies import (
    BASELINES,
    SCHEDULE_KEYS,
    BasePolicy,
    applies,
    make_policy,
    sample_valid_action,
    schedule_from_key,
)

__all__ = [
    "BASELINES",
    "BasePolicy",
    "SCHEDULE_KEYS",
    "applies",
    "make_policy",
    "sample_valid_action",
    "schedule_from_key",
]

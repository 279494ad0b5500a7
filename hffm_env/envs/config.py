"""Configuration of the RL environments: episode, reward weights and normalisation, slot counts."""

from __future__ import annotations

from dataclasses import dataclass

from hffm_env._validation import (
    MAX_COUNT,
    MAX_DURATION_S,
    MAX_ENERGY_J,
    MAX_FACTOR,
    ConfigError,
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
)
from hffm_env.envs.rewards import DEFAULT_REWARD_TERMS, check_reward_terms
from hffm_env.network.schedules import TABLE1_KEYS

DECISIONS = ("aggregation", "relaying", "specialization", "offloading")
REWARD_METRICS = ("p_correct", "accuracy")
DEFAULT_SCHEDULES = TABLE1_KEYS + ("none",)

# Scenario defaults of the ids whose decisions need something to decide on (an
# explicit override still wins): events make cold starts, requests make offloading.
EVENT_DEFAULTS = {
    "federation__events__task_arrival": 0.1,
    "federation__events__modality_on": 0.05,
    "federation__events__modality_off": 0.05,
    "federation__events__join": 0.02,
    "federation__events__leave": 0.02,
}
REQUEST_DEFAULTS = {"federation__inference__requests_per_device": 1.0}

# The registered ids: the decisions each exposes and its scenario defaults (the
# keyword arguments ``gym.make`` passes to ``HFFMEnv``).
ENV_SPECS = {
    "hffm_env/Aggregation-v0": {"decisions": ("aggregation",), "scenario_defaults": {}},
    "hffm_env/Relaying-v0": {"decisions": ("relaying",), "scenario_defaults": EVENT_DEFAULTS},
    "hffm_env/Specialization-v0": {"decisions": ("specialization",), "scenario_defaults": EVENT_DEFAULTS},
    "hffm_env/Offloading-v0": {"decisions": ("offloading",), "scenario_defaults": REQUEST_DEFAULTS},
    "hffm_env/HFFM-v0": {"decisions": DECISIONS, "scenario_defaults": {**EVENT_DEFAULTS, **REQUEST_DEFAULTS}},
}


@dataclass(frozen=True)
class EnvConfig:
    """How a federated round becomes an RL step.

    Reward of a step (one round)::

        w_acc · Δscore + w_inference · served_score
            − w_latency · latency_s / latency_scale_s − w_energy · energy_j / energy_scale_j

    ``Δscore`` is the change of the mean held-out score over (device, task) pairs, on
    an evaluation set fixed for the episode (drawn with the data at ``reset``), so
    only the model moves it. ``reward_metric`` chooses the score: ``"p_correct"``
    (default), the mean probability the model gives the right answer, smooth and far
    less noisy than ``"accuracy"``, the share of right answers (always in ``info``);
    ``served_score`` the same metric over this round's inference requests: the mean
    probability the serving copy gave the right answer (``"p_correct"``) or the
    share answered right (0 without requests; ``info["served_accuracy"]`` is the
    share either way). ``latency_scale_s``/``energy_scale_j`` None: the cost
    of one cloud aggregation of every module by every device on the episode's network
    (``Federation.reference_round_cost``), so 1 means "as much as a full FedAvg round".

    An episode ends by truncation after ``max_rounds`` rounds, or by termination once
    the energy spent exceeds ``energy_budget_j`` (None: no budget). ``max_requests`` and
    ``max_cold_starts`` are the fixed numbers of slots the observation and the action
    have for pending inference requests and cold starts (the rest are served by the
    default policy). ``default_schedule`` is the aggregation a non-aggregating env
    runs (a Table I schedule key, or ``none``): edge-only by default, under which
    copies differ across clusters, so where a module is relayed from and where a
    request runs change the answer, not only the cost.

    ``reward_terms`` names the terms a step sums, from the registry of
    :mod:`hffm_env.envs.rewards` (a term of your own is registered there by name).

    A choice its mask rules out (``action_masks()``) either raises ``InvalidAction``
    (``invalid_action="raise"``) or is replaced by the default policy's choice for that
    dimension, costs ``invalid_penalty`` of reward and is listed in
    ``info["invalid_actions"]`` (``"penalize"``, the default, so that algorithms
    without masking can train). An action outside the space always raises.
    """

    max_rounds: int = 20
    energy_budget_j: float | None = None
    reward_metric: str = "p_correct"
    w_acc: float = 10.0
    w_inference: float = 1.0
    w_latency: float = 0.1
    w_energy: float = 0.1
    latency_scale_s: float | None = None
    energy_scale_j: float | None = None
    max_requests: int = 16
    max_cold_starts: int = 16
    default_schedule: str = "edge_only"
    invalid_action: str = "penalize"
    invalid_penalty: float = 0.01
    shared_reward: bool = True
    reward_terms: tuple[str, ...] = DEFAULT_REWARD_TERMS
    device_agents: bool = False

    def __post_init__(self) -> None:
        check_int("env.max_rounds", self.max_rounds, low=1, high=MAX_COUNT)
        check_choice("env.reward_metric", self.reward_metric, REWARD_METRICS)
        if self.energy_budget_j is not None:
            check_positive("env.energy_budget_j", self.energy_budget_j, MAX_ENERGY_J)
        for name in ("w_acc", "w_inference", "w_latency", "w_energy"):
            check_non_negative(f"env.{name}", getattr(self, name), MAX_FACTOR)
        for name, high in (("latency_scale_s", MAX_DURATION_S), ("energy_scale_j", MAX_ENERGY_J)):
            if getattr(self, name) is not None:
                check_positive(f"env.{name}", getattr(self, name), high)
        check_int("env.max_requests", self.max_requests, low=1, high=MAX_COUNT)
        check_int("env.max_cold_starts", self.max_cold_starts, low=1, high=MAX_COUNT)
        check_choice("env.default_schedule", self.default_schedule, DEFAULT_SCHEDULES)
        check_choice("env.invalid_action", self.invalid_action, ("penalize", "raise"))
        object.__setattr__(self, "reward_terms", check_reward_terms(self.reward_terms))
        check_non_negative("env.invalid_penalty", self.invalid_penalty, MAX_FACTOR)
        for name in ("shared_reward", "device_agents"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"env.{name} must be True or False, got {getattr(self, name)!r}")

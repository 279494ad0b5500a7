"""The reward, as named terms: :data:`REWARD_TERMS` maps a name to a function of a
:class:`RewardView` (one round seen by a team or by one agent) and the
:class:`~hffm_env.envs.config.EnvConfig`. ``env__reward_terms`` chooses which terms
a step sums; the Gymnasium env uses the team's view, the PettingZoo env the team's
or each agent's (``env__shared_reward``). Every term is in ``info["reward_terms"]``.

The built-in terms::

    accuracy   w_acc · Δscore                    (the change of the mean held-out score)
    inference  w_inference · served score        (over the round's inference requests)
    latency   −w_latency · latency_s / latency_scale_s
    energy    −w_energy · energy_j / energy_scale_j
    invalid   −invalid_penalty · replaced choices (only when a masked choice was replaced)

A term of your own is a function registered under a new name before the env is made::

    from hffm_env.envs.rewards import register_reward_term
    register_reward_term("cold_starts", lambda view, config: -0.1 * view.cold_starts)
    env = gym.make("hffm_env/Relaying-v0", env__reward_terms=("accuracy", "cold_starts"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hffm_env._validation import ConfigError

DEFAULT_REWARD_TERMS = ("accuracy", "inference", "latency", "energy", "invalid")


@dataclass(frozen=True)
class RewardView:
    """One round as a team or one agent sees it. ``delta_score``: the change of the
    mean score over the scope's (device, task) pairs; ``served_score``: the mean
    score of the scope's served requests (0 without); ``latency``/``energy``: the
    round's latency and the scope's energy in reference rounds (1 = a full FedAvg
    round for that scope); ``invalid``: the scope's replaced choices;
    ``cold_starts``: its pending cold starts after the round; ``result`` the
    :class:`~hffm_env.federation.records.RoundResult`."""

    delta_score: float
    served_score: float
    latency: float
    energy: float
    invalid: int
    cold_starts: int
    result: object = None


RewardTerm = Callable[[RewardView, object], float]

REWARD_TERMS: dict[str, RewardTerm] = {
    "accuracy": lambda v, c: c.w_acc * v.delta_score,
    "inference": lambda v, c: c.w_inference * v.served_score,
    "latency": lambda v, c: -c.w_latency * v.latency,
    "energy": lambda v, c: -c.w_energy * v.energy,
    "invalid": lambda v, c: -c.invalid_penalty * v.invalid,
}


def register_reward_term(name: str, term: RewardTerm) -> None:
    """Add ``term`` under ``name`` (a new name; the built-in ones cannot be replaced)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"reward term name must be an identifier, got {name!r}")
    if name in REWARD_TERMS:
        raise ValueError(f"reward term {name!r} exists already; registered: {sorted(REWARD_TERMS)}")
    if not callable(term):
        raise ValueError(f"reward term {name!r} must be callable (view, config) -> float, got {term!r}")
    REWARD_TERMS[name] = term


def check_reward_terms(names) -> tuple[str, ...]:
    """``names`` as a tuple, each a registered term."""
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise ConfigError(f"env.reward_terms must be a tuple of term names from {sorted(REWARD_TERMS)}, got {names!r}")
    names = tuple(names)
    unknown = [n for n in names if n not in REWARD_TERMS]
    if unknown or not names:
        raise ConfigError(f"env.reward_terms must be a non-empty subset of {sorted(REWARD_TERMS)}, got {names!r}")
    return names


def reward_terms(view: RewardView, config) -> dict[str, float]:
    """The weighted terms of ``config.reward_terms`` (``invalid`` only when a choice was replaced)."""
    return {
        name: float(REWARD_TERMS[name](view, config))
        for name in config.reward_terms
        if name != "invalid" or view.invalid
    }

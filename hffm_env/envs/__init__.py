"""Gymnasium and PettingZoo environments over the federated round.

``import hffm_env`` registers the ids below with Gymnasium (the env classes, and
torch, load on ``gym.make``). ``EnvConfig`` is the ``env`` part of a scenario.
"""

from hffm_env.envs.config import DECISIONS, ENV_SPECS, EnvConfig

ENV_IDS = tuple(ENV_SPECS)
ENTRY_POINT = "hffm_env.envs.hffm_env:HFFMEnv"


def register_envs() -> None:
    """Register every id with Gymnasium (idempotent): one entry point, the id's
    decisions and scenario defaults as its keyword arguments."""
    import gymnasium as gym

    for env_id, kwargs in ENV_SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs))


__all__ = ["DECISIONS", "ENV_IDS", "EnvConfig", "register_envs"]

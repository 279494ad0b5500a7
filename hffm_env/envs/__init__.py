"""Gymnasium and PettingZoo environments over the federated round.

``import hffm_env`` registers the ids below with Gymnasium (the env classes, and
torch, load on ``gym.make``). ``EnvConfig`` is the ``env`` part of a scenario.
"""

from hffm_env.envs.config import DECISIONS, EnvConfig

ENV_IDS = {
    "hffm_env/Aggregation-v0": "hffm_env.envs.hffm_env:AggregationEnv",
    "hffm_env/Relaying-v0": "hffm_env.envs.hffm_env:RelayingEnv",
    "hffm_env/Specialization-v0": "hffm_env.envs.hffm_env:SpecializationEnv",
    "hffm_env/Offloading-v0": "hffm_env.envs.hffm_env:OffloadingEnv",
    "hffm_env/HFFM-v0": "hffm_env.envs.hffm_env:FullEnv",
}


def register_envs() -> None:
    """Register every id with Gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


__all__ = ["DECISIONS", "ENV_IDS", "EnvConfig", "register_envs"]

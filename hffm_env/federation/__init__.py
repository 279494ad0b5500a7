"""One federated round: local training, aggregation, consensus, relaying, specialization, inference.

Every operation changes the module banks and charges the fog network's ledger with
the bytes it really moves. See :class:`Federation` and the operation records in
:mod:`hffm_env.federation.ops`; :mod:`hffm_env.federation.schedules` expresses the
paper's Table I schedules with them; :mod:`hffm_env.federation.checkpoint` saves and
loads a federation's learned state as safetensors. The configs and records import
no torch; the rest loads on first use.
"""

from hffm_env.federation.config import (
    AdversaryConfig,
    EventConfig,
    FaultConfig,
    FederationConfig,
    InferenceConfig,
    PrivacyConfig,
)
from hffm_env.federation.ops import OFFLOAD_TARGETS, PATHS, RELAY_PATHS, SCOPES, Aggregate, Offload, Relay, Specialize

_CORE = ("Federation", "RoundResult", "ColdStart", "InferenceResult", "Requests", "load_backbone")
_CHECKPOINT = ("CheckpointError", "load_checkpoint", "save_checkpoint")


def __getattr__(name: str):
    if name in _CORE:
        from hffm_env.federation import core

        return getattr(core, name)
    if name in _CHECKPOINT:
        from hffm_env.federation import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'hffm_env.federation' has no attribute {name!r}")


__all__ = [
    "AdversaryConfig",
    "Aggregate",
    "CheckpointError",
    "ColdStart",
    "EventConfig",
    "FaultConfig",
    "Federation",
    "FederationConfig",
    "InferenceConfig",
    "InferenceResult",
    "OFFLOAD_TARGETS",
    "Offload",
    "PATHS",
    "PrivacyConfig",
    "RELAY_PATHS",
    "Relay",
    "Requests",
    "RoundResult",
    "SCOPES",
    "Specialize",
    "load_backbone",
    "load_checkpoint",
    "save_checkpoint",
]

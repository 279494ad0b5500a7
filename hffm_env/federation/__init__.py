"""One federated round: local training, aggregation, consensus, relaying, specialization, inference.

Every operation changes the module banks and charges the fog network's ledger with
the bytes it really moves. See :class:`Federation` and the operation records in
:mod:`hffm_env.federation.ops`; :mod:`hffm_env.federation.schedules` expresses the
paper's Table I schedules with them. The configs and records import no torch; the
rest loads on first use.
"""

from hffm_env.federation.config import (
    AdversaryConfig,
    EventConfig,
    FederationConfig,
    InferenceConfig,
    PrivacyConfig,
)
from hffm_env.federation.ops import OFFLOAD_TARGETS, PATHS, RELAY_PATHS, SCOPES, Aggregate, Offload, Relay, Specialize

_CORE = ("Federation", "RoundResult", "ColdStart", "InferenceResult", "Requests", "load_backbone")


def __getattr__(name: str):
    if name in _CORE:
        from hffm_env.federation import core

        return getattr(core, name)
    raise AttributeError(f"module 'hffm_env.federation' has no attribute {name!r}")


__all__ = [
    "AdversaryConfig", "Aggregate", "ColdStart", "EventConfig", "Federation", "FederationConfig", "InferenceConfig",
    "InferenceResult", "OFFLOAD_TARGETS", "Offload", "PATHS", "PrivacyConfig", "RELAY_PATHS", "Relay", "Requests",
    "RoundResult", "SCOPES", "Specialize", "load_backbone",
]

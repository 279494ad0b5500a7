"""The modular M3T foundation model: frozen ViLT backbone, module banks, batched training.

``ModelConfig`` imports nothing heavy; the torch-based parts load on first use.
"""

from hffm_env.model.config import SHIPPED_ARCHITECTURE, ModelConfig

_LAZY = {"Bank", "MODULE_KINDS", "init_bank", "kind_of", "payload_bytes"}


def __getattr__(name: str):
    if name in _LAZY:
        from hffm_env.model import banks

        return getattr(banks, name)
    raise AttributeError(f"module 'hffm_env.model' has no attribute {name!r}")


__all__ = ["Bank", "MODULE_KINDS", "ModelConfig", "SHIPPED_ARCHITECTURE", "init_bank", "kind_of", "payload_bytes"]

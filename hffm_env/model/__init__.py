"""The modular M3T foundation model: frozen ViLT backbone, module banks, batched training."""

from hffm_env.model.banks import MODULE_KINDS, Bank, init_bank, kind_of, payload_bytes
from hffm_env.model.config import ModelConfig

__all__ = ["Bank", "MODULE_KINDS", "ModelConfig", "init_bank", "kind_of", "payload_bytes"]

"""The frozen ViLT backbone, run layer by layer so trainable modules can sit between.

It wraps a ``transformers.ViltModel`` and reuses its weights, but embeds images with
one vectorised operation: the stock ``visual_embed`` loops over samples and shuffles
patches with ``torch.multinomial`` on the *global* RNG, which breaks seeded runs.
Every image here is full-size, so the stock position-embedding interpolation is the
identity and the patch order does not change the output (attention is
permutation-equivariant over keys, and the pooler reads the text ``[CLS]`` token);
a test checks the pooled output against ``ViltModel.forward``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hffm_env.model.config import SHIPPED_ARCHITECTURE, ModelConfig  # noqa: F401  (re-exported)

SENSOR_TYPE = 2  # modality-type id of sensor tokens (0 text, 1 image)


def vilt_config(config: ModelConfig):
    from transformers import ViltConfig

    return ViltConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        image_size=config.image_size, patch_size=config.patch_size, max_position_embeddings=config.max_text_tokens,
        modality_type_vocab_size=3, max_image_length=-1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def check_architecture(config: ModelConfig, loaded) -> None:
    """A loaded ViLT must have the shapes the ModelConfig promises the trainable modules."""
    from hffm_env._validation import ConfigError

    pairs = {"hidden_size": loaded.hidden_size, "num_layers": loaded.num_hidden_layers,
             "image_size": loaded.image_size, "patch_size": loaded.patch_size, "vocab_size": loaded.vocab_size}
    for name, value in pairs.items():
        if getattr(config, name) != value:
            raise ConfigError(f"{name} must be {value} to match the backbone in {config.backbone!r}, "
                              f"got {getattr(config, name)!r}")
    if config.max_text_tokens > loaded.max_position_embeddings:
        raise ConfigError(f"max_text_tokens must be <= {loaded.max_position_embeddings} (the backbone's text "
                          f"positions), got {config.max_text_tokens}")
    if loaded.modality_type_vocab_size < 3:
        raise ConfigError("the backbone must have modality_type_vocab_size >= 3 (text, image, sensor); "
                          f"{config.backbone!r} has {loaded.modality_type_vocab_size}")


SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "backbone.safetensors"


def build_vilt(config: ModelConfig):
    """A ``ViltModel``: the shipped pretrained one, a fresh one from ``init_seed``, or a local directory."""
    from transformers import ViltModel

    if config.backbone not in ("default", "random"):
        path = Path(config.backbone)
        if not path.is_dir():
            raise FileNotFoundError(f"backbone directory {path} not found (ModelConfig.backbone must be 'default', "
                                    "'random' or a local directory written by ViltModel.save_pretrained)")
        model = ViltModel.from_pretrained(str(path), local_files_only=True)
        check_architecture(config, model.config)
        return model
    with torch.random.fork_rng(devices=[]):
        # CPU generator only (torch.manual_seed would also queue a CUDA reseed); the
        # fork restores it after this block
        torch.default_generator.manual_seed(config.init_seed)
        model = ViltModel(vilt_config(config))
    if config.backbone == "default":
        from safetensors.torch import load_file

        if not SHIPPED_WEIGHTS.is_file():
            raise FileNotFoundError(f"{SHIPPED_WEIGHTS} is missing: rebuild it with "
                                    "`python -m training.pretrain_backbone --out hffm_env/assets`")
        model.load_state_dict(load_file(str(SHIPPED_WEIGHTS)), strict=True)
    return model


class FrozenBackbone(nn.Module):
    """Embeddings, transformer layers and pooler of a ViLT, all frozen."""

    def __init__(self, vilt):
        super().__init__()
        self.vilt = vilt.eval()
        for p in self.vilt.parameters():
            p.requires_grad_(False)
        cfg = vilt.config
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_hidden_layers
        self.patch_size = cfg.patch_size
        self.image_size = cfg.image_size

    @property
    def layers(self):
        return self.vilt.encoder.layer

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.vilt.embeddings
        x = e.text_embeddings(input_ids=tokens)
        return x + e.token_type_embeddings.weight[0]

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: float ``[N, 3, H, W]`` → ``[N, 1 + patches, hidden]`` ([CLS] first)."""
        e = self.vilt.embeddings
        x = e.patch_embeddings(pixels).flatten(2).transpose(1, 2)
        cls = e.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + e.position_embeddings
        return x + e.token_type_embeddings.weight[1]

    def type_embedding(self, index: int) -> torch.Tensor:
        return self.vilt.embeddings.token_type_embeddings.weight[index]

    def attention_bias(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive attention mask ``[N, 1, 1, T]`` from a 0/1 token mask."""
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def layer_output(self, layer, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One ViLT layer up to its output (residual included), as ``ViltLayer.forward``."""
        attn = layer.attention(layer.layernorm_before(h), bias)[0]
        h = attn + h
        return layer.output(layer.intermediate(layer.layernorm_after(h)), h)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        h = self.vilt.layernorm(h)
        return self.vilt.pooler(h)

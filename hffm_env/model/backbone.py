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

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hffm_env.model.config import SHIPPED_ARCHITECTURE, ModelConfig  # noqa: F401  (re-exported)

SENSOR_TYPE = 2  # modality-type id of sensor tokens (0 text, 1 image)


def vilt_config(config: ModelConfig):
    from transformers import ViltConfig

    return ViltConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        image_size=config.image_size,
        patch_size=config.patch_size,
        max_position_embeddings=config.max_text_tokens,
        modality_type_vocab_size=3,
        max_image_length=-1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def check_architecture(config: ModelConfig, loaded) -> None:
    """A loaded ViLT must have the shapes the ModelConfig promises the trainable modules."""
    from hffm_env._validation import ConfigError

    if not 1 <= config.num_layers <= loaded.num_hidden_layers:
        raise ConfigError(
            f"num_layers must be in 1..{loaded.num_hidden_layers} (the layers of the backbone in "
            f"{config.backbone!r}), got {config.num_layers!r}"
        )
    pairs = {
        "hidden_size": loaded.hidden_size,
        "image_size": loaded.image_size,
        "patch_size": loaded.patch_size,
        "vocab_size": loaded.vocab_size,
    }
    for name, value in pairs.items():
        if getattr(config, name) != value:
            raise ConfigError(
                f"{name} must be {value} to match the backbone in {config.backbone!r}, got {getattr(config, name)!r}"
            )
    if config.max_text_tokens > loaded.max_position_embeddings:
        raise ConfigError(
            f"max_text_tokens must be <= {loaded.max_position_embeddings} (the backbone's text "
            f"positions), got {config.max_text_tokens}"
        )
    if loaded.modality_type_vocab_size < 3:
        raise ConfigError(
            "the backbone must have modality_type_vocab_size >= 3 (text, image, sensor); "
            f"{config.backbone!r} has {loaded.modality_type_vocab_size}"
        )


SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "backbone.safetensors"


def build_vilt(config: ModelConfig):
    """A ``ViltModel``: the shipped pretrained one, a fresh one from ``init_seed``, or a local directory."""
    from transformers import ViltModel

    if config.backbone not in ("default", "random"):
        path = Path(config.backbone)
        if not path.is_dir():
            raise FileNotFoundError(
                f"backbone directory {path} not found (ModelConfig.backbone must be 'default', "
                "'random' or a local directory written by ViltModel.save_pretrained)"
            )
        model = ViltModel.from_pretrained(str(path), local_files_only=True)
        check_architecture(config, model.config)
        return truncated(model, config.num_layers)
    shipped = config.backbone == "default"
    with torch.random.fork_rng(devices=[]):
        # CPU generator only (torch.manual_seed would also queue a CUDA reseed); the
        # fork restores it after this block
        torch.default_generator.manual_seed(config.init_seed)
        model = ViltModel(
            vilt_config(replace(config, num_layers=SHIPPED_ARCHITECTURE["num_layers"]) if shipped else config)
        )
    if shipped:
        from safetensors.torch import load_file

        if not SHIPPED_WEIGHTS.is_file():
            raise FileNotFoundError(
                f"{SHIPPED_WEIGHTS} is missing: rebuild it with "
                "`python -m training.pretrain_backbone --out hffm_env/assets`"
            )
        model.load_state_dict(load_file(str(SHIPPED_WEIGHTS)), strict=True)
    return truncated(model, config.num_layers)


def truncated(model, num_layers: int):
    """``model`` with only its first ``num_layers`` transformer layers (its final layer
    norm and pooler kept): a shallower backbone that keeps the pretrained features of
    those layers, at a proportional fraction of the compute."""
    if num_layers < model.config.num_hidden_layers:
        model.encoder.layer = model.encoder.layer[:num_layers]
        model.config.num_hidden_layers = num_layers
    return model


class _FrozenLayer(nn.Module):
    """One ViLT layer up to its output (residual included), computed as
    ``ViltLayer.forward`` computes it (the same operations in the same order).

    With ``dtype`` the ViLT's own, the layer reads the ViLT's weights. With another
    ``dtype`` (``torch.bfloat16``), it keeps frozen copies of the six projections in
    that dtype and runs only the matmuls (and the activation between two of them) there:
    the residual stream, layer norms, attention scores and softmax stay in the
    hidden states' dtype, as mixed-precision fine-tuning of a frozen model does.
    """

    PROJECTIONS = ("query", "key", "value", "attn_out", "inter", "out")

    def __init__(self, layer, dtype: torch.dtype):
        super().__init__()
        att = layer.attention.attention
        self.num_heads = att.num_attention_heads
        linears = (
            att.query,
            att.key,
            att.value,
            layer.attention.output.dense,
            layer.intermediate.dense,
            layer.output.dense,
        )
        self.own = linears[0].weight.dtype == dtype
        # plain dicts: the ViLT's modules are not registered a second time
        self.linears = dict(zip(self.PROJECTIONS, linears))
        self.norms = {"before": layer.layernorm_before, "after": layer.layernorm_after}
        self.activation = {"fn": layer.intermediate.intermediate_act_fn}  # the ViLT's own (exact GELU by default)
        if not self.own:
            for name, lin in self.linears.items():
                self.register_buffer(f"{name}_w", lin.weight.detach().to(dtype))
                self.register_buffer(f"{name}_b", None if lin.bias is None else lin.bias.detach().to(dtype))
        # the query, key and value projections stacked, for passes without a graph (one
        # matmul gives each element exactly as the three do; their input gradients would not)
        qkv = linears[:3]
        self.register_buffer("qkv_w", torch.cat([lin.weight.detach() for lin in qkv]).to(dtype))
        self.register_buffer(
            "qkv_b",
            None if any(lin.bias is None for lin in qkv) else torch.cat([lin.bias.detach() for lin in qkv]).to(dtype),
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the projections' matmuls."""
        return self.linears["query"].weight.dtype if self.own else self.query_w.dtype

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.own:
            lin = self.linears[name]
            return F.linear(x, lin.weight, lin.bias)
        return F.linear(x, getattr(self, f"{name}_w"), getattr(self, f"{name}_b"))

    def _norm(self, which: str, h: torch.Tensor) -> torch.Tensor:
        ln = self.norms[which]
        return F.layer_norm(h, ln.normalized_shape, ln.weight, ln.bias, ln.eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """The layer's output ``[N, T, H]``; with ``first_only`` that of the first token
        alone, ``[N, 1, H]`` (it still attends to every token): what a last layer
        needs when only that token is read afterwards."""
        n, t, hid = h.shape
        low = self.dtype
        x = self._norm("before", h).to(low)
        if x.requires_grad:
            qkv = [self._linear("query", x[:, :1] if first_only else x)] + [
                self._linear(p, x) for p in ("key", "value")
            ]
        else:
            w, b = self.qkv_w, self.qkv_b
            if first_only:
                q_w, kv_w = w[:hid], w[hid:]
                q_b, kv_b = (None, None) if b is None else (b[:hid], b[hid:])
                qkv = [F.linear(x[:, :1], q_w, q_b), *F.linear(x, kv_w, kv_b).split(hid, dim=-1)]
            else:
                qkv = F.linear(x, w, b).split(hid, dim=-1)
        q, k, v = (y.reshape(n, -1, self.num_heads, hid // self.num_heads).transpose(1, 2) for y in qkv)
        scores = torch.matmul(q, k.transpose(-1, -2)).to(h.dtype) / math.sqrt(q.shape[-1]) + bias
        context = torch.matmul(scores.softmax(-1).to(low), v).permute(0, 2, 1, 3).reshape(n, q.shape[2], hid)
        if first_only:
            h = h[:, :1]
        h = self._linear("attn_out", context).to(h.dtype) + h
        x = self._norm("after", h).to(low)
        return self._linear("out", self.activation["fn"](self._linear("inter", x))).to(h.dtype) + h


class FrozenBackbone(nn.Module):
    """Embeddings, transformer layers and pooler of a ViLT, all frozen.

    ``compute_dtype`` is the dtype of the layers' matmuls (default: the ViLT's own);
    ``torch.bfloat16`` runs them on the CPU's bf16 units where it has them, with the
    residual stream, layer norms and softmax kept in the hidden states' dtype.
    """

    def __init__(self, vilt, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.vilt = vilt.eval()
        for p in self.vilt.parameters():
            p.requires_grad_(False)
        cfg = vilt.config
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_hidden_layers
        self.patch_size = cfg.patch_size
        self.image_size = cfg.image_size
        dtype = compute_dtype or next(vilt.parameters()).dtype
        self.layers = nn.ModuleList(_FrozenLayer(layer, dtype) for layer in vilt.encoder.layer)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the layers' matmuls run in."""
        return self.layers[0].dtype

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

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        h = self.vilt.layernorm(h)
        return self.vilt.pooler(h)

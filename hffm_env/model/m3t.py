"""The modular M3T model over a bank: one batched pass for many holders at once.

``forward`` takes per-holder parameters already gathered to a leading axis ``D`` (one
row per holder in the pass) and inputs shaped ``[D, B, ...]``; the frozen backbone
runs on all ``D·B`` samples together and every trainable module is applied by a
batched matmul with its holder's weights. A holder's output depends only on its own
weights and samples, so a pass over ``D`` holders gives each exactly what a pass
over that holder alone gives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hffm_env.model.backbone import SENSOR_TYPE, FrozenBackbone


def to_pixels(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` → float ``[..., 3, H, W]`` in [-1, 1] (ViLT's normalisation)."""
    x = images.to(dtype).movedim(-1, -3) / 255.0
    return (x - 0.5) / 0.5


def _encode(params: dict[str, torch.Tensor], kind: str, x: torch.Tensor, d: int) -> torch.Tensor:
    """A holder's residual modality encoder on frozen embeddings ``x [D·B, T, H]``."""
    n, t, hid = x.shape
    z = x.reshape(d, -1, hid)
    z = z + torch.baddbmm(params[f"{kind}.b"][:, None], z, params[f"{kind}.w"])
    return z.reshape(n, t, hid)


def embed(
    backbone: FrozenBackbone,
    params: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    modalities: tuple[str, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings ``[D·B, T, H]`` and token mask ``[D·B, T]`` of one task group.

    Text always contributes at least its ``[CLS]`` token, which the pooler reads.
    Trailing text columns that are padding in every sample of the pass are dropped:
    a masked token gets zero attention weight and the pooler never reads it, so no
    output changes (up to float rounding), and the pass runs on fewer tokens.
    """
    d, b = next(inputs[k] for k in ("tokens", "image", "sensor") if k in inputs).shape[:2]
    dtype = params["adapters.down_w"].dtype
    parts, masks = [], []
    if "text" in modalities:
        attention = inputs["attention"].flatten(0, 1)
        used = torch.nonzero(attention.any(0))
        # a sample with no token at all attends uniformly to every column: keep them all then
        width = int(used[-1]) + 1 if len(used) and bool(attention.any(1).all()) else attention.shape[1]
        tokens = inputs["tokens"].flatten(0, 1)[:, :width]
        parts.append(_encode(params, "text_encoder", backbone.embed_text(tokens), d))
        masks.append(attention[:, :width])
    else:
        cls = torch.ones(d * b, 1, dtype=torch.long)
        parts.append(backbone.embed_text(cls))
        masks.append(torch.ones(d * b, 1, dtype=torch.long))
    if "image" in modalities:
        x = backbone.embed_image(to_pixels(inputs["image"].flatten(0, 1), dtype))
        x = _encode(params, "image_encoder", x, d)
        parts.append(x)
        masks.append(torch.ones(x.shape[:2], dtype=torch.long))
    if "sensor" in modalities:
        sig = inputs["sensor"].to(dtype)  # [D, B, T]
        patches = sig.view(d, b, -1, params["sensor_encoder.w"].shape[1])  # [D, B, S, p]
        x = torch.einsum("dbsp,dph->dbsh", patches, params["sensor_encoder.w"])
        x = x + params["sensor_encoder.b"][:, None, None] + params["sensor_encoder.pos"][:, None]
        x = x.flatten(0, 1) + backbone.type_embedding(SENSOR_TYPE)
        parts.append(x)
        masks.append(torch.ones(x.shape[:2], dtype=torch.long))
    prompts = params["prompts.tokens"]  # [D, P, H]
    if prompts.shape[1]:
        parts.append(prompts.repeat_interleave(b, dim=0))
        masks.append(torch.ones(d * b, prompts.shape[1], dtype=torch.long))
    return torch.cat(parts, dim=1), torch.cat(masks, dim=1)


def mixture_of_experts(params: dict[str, torch.Tensor], z: torch.Tensor, top_k: int) -> torch.Tensor:
    """Residual MoE on tokens ``z [D, N, H]``: the gate's softmax, kept on each token's
    ``top_k`` experts and renormalised, weighs the experts' bottleneck outputs."""
    gate = torch.baddbmm(params["experts.gate_b"][:, None], z, params["experts.gate_w"]).softmax(-1)  # [D, N, E]
    top, which = gate.topk(top_k, dim=-1)
    weights = torch.zeros_like(gate).scatter(-1, which, top / top.sum(-1, keepdim=True))
    hidden = F.gelu(torch.einsum("dnh,dehk->dnek", z, params["experts.down_w"]) + params["experts.down_b"][:, None])
    out = torch.einsum("dnek,dekh->dneh", hidden, params["experts.up_w"]) + params["experts.up_b"][:, None]
    return z + torch.einsum("dne,dneh->dnh", weights, out)


def forward(
    backbone: FrozenBackbone,
    params: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    task: str,
    modalities: tuple[str, ...],
    top_k: int = 2,
) -> torch.Tensor:
    """Logits ``[D, B, A_task]`` of one task group, holder ``i`` using row ``i`` of ``params``."""
    h, mask = embed(backbone, params, inputs, modalities)
    n, t, hid = h.shape
    d = params["adapters.down_w"].shape[0]
    bias = backbone.attention_bias(mask, h.dtype)
    up_b = params["adapters.up_b"].sum(dim=2)  # the two adapters' biases
    last = len(backbone.layers) - 1
    for i, layer in enumerate(backbone.layers):
        # the pooler reads only the first ([CLS]) token: the last layer, its adapters
        # and the experts after it are computed for that token alone
        h = layer(h, bias, first_only=i == last)
        z = h.reshape(d, -1, hid)  # [D, B·T, H]
        a = F.gelu(torch.baddbmm(params["adapters.down_b"][:, i, None], z, params["adapters.down_w"][:, i]))
        z = z + torch.baddbmm(up_b[:, i, None], a, params["adapters.up_w"][:, i])
        if i == last:
            z = mixture_of_experts(params, z, top_k)
        h = z.reshape(n, -1, hid)
    pooled = backbone.pool(h).view(d, -1, hid)  # [D, B, H]
    return torch.baddbmm(params[f"heads.{task}.b"][:, None], pooled, params[f"heads.{task}.w"])

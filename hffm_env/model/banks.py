"""Module banks: every trainable module kind stored with a leading holder axis.

A bank is a dict ``parameter name → tensor [n_holders, ...]``; row ``i`` is holder
``i``'s copy (devices, edge servers, cloud, specialists). Parameter names start with
their module kind:

* ``adapters.*`` — double adapters after every layer: ``down_w [L, H, 2b]``,
  ``down_b [L, 2b]``, ``up_w [L, 2b, H]``, ``up_b [L, 2, H]``. Two parallel bottleneck
  adapters of size ``b`` equal one adapter of size ``2b`` whose up-projection keeps the
  two adapters' biases apart, so the pair is stored and applied as one.
* ``image_encoder.*``, ``text_encoder.*`` — per-modality encoders on top of the
  frozen patch and word embeddings: a residual linear map ``w [H, H]``, ``b [H]``
  (zero at start, so a fresh encoder is the identity).
* ``sensor_encoder.*`` — the sensor modality encoder (ViLT has none to build on):
  ``w [p, H]``, ``b [H]``, ``pos [S, H]``.
* ``prompts.tokens [P, H]`` — learnable prompt tokens added to every input.
* ``experts.*`` — a mixture-of-experts layer after the last layer: experts
  ``down_w [E, H, k]``, ``down_b [E, k]``, ``up_w [E, k, H]``, ``up_b [E, H]`` and
  the gate ``gate_w [H, E]``, ``gate_b [E]`` (the gate is its own kind, ``gate``).
* ``heads.<task>.*`` — one linear head per task: ``w [H, A_task]``, ``b [A_task]``.

Aggregation is then tensor algebra over the holder axis, relaying an index copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from hffm_env.model.config import ModelConfig

Bank = dict[str, torch.Tensor]

MODULE_KINDS = ("adapters", "prompts", "image_encoder", "text_encoder", "sensor_encoder", "experts", "gate", "heads")
ENCODER_OF = {"image": "image_encoder", "text": "text_encoder", "sensor": "sensor_encoder"}
EXPERT_PARAMS = ("experts.down_w", "experts.down_b", "experts.up_w", "experts.up_b")
MODALITY_OF = {kind: modality for modality, kind in ENCODER_OF.items()}
HEAD_PREFIX = "heads."


@dataclass(frozen=True)
class ModuleKind:
    """A module kind's name read once: its ``family`` (``"heads"`` for a task head,
    ``"encoders"`` for a modality encoder, else the shared kind's own name), the
    ``task`` of a head and the ``modality`` of an encoder. Kinds travel as their
    names (dict keys, checkpoints, ledger modules); :func:`parse_kind` reads one."""

    name: str
    family: str
    task: str | None = None
    modality: str | None = None

    @property
    def is_head(self) -> bool:
        return self.family == "heads"

    @property
    def is_encoder(self) -> bool:
        return self.family == "encoders"

    def in_group(self, group) -> bool:
        """Whether a group of kind names holds this kind, ``"heads"`` and
        ``"encoders"`` standing for their whole family."""
        return self.name in group or self.family in group


@lru_cache(maxsize=1024)
def parse_kind(name: str) -> ModuleKind:
    """The :class:`ModuleKind` of a kind name (``heads.<task>``, ``<modality>_encoder``
    or a shared kind); ValueError for anything else."""
    if name.startswith(HEAD_PREFIX) and len(name) > len(HEAD_PREFIX):
        return ModuleKind(name, "heads", task=name[len(HEAD_PREFIX) :])
    if name in MODALITY_OF:
        return ModuleKind(name, "encoders", modality=MODALITY_OF[name])
    if name in MODULE_KINDS and name != "heads":
        return ModuleKind(name, name)
    raise ValueError(
        f"module kind must be heads.<task>, one of {', '.join(MODALITY_OF)} or one of "
        f"{', '.join(k for k in MODULE_KINDS if k not in MODALITY_OF and k != 'heads')}, got {name!r}"
    )


def head_kind(task: str) -> str:
    """The kind name of ``task``'s head."""
    return HEAD_PREFIX + task


@lru_cache(maxsize=4096)
def kind_of(name: str) -> str:
    """Module kind of a parameter name (``heads.<task>`` for heads, ``gate`` for the MoE gate)."""
    parts = name.split(".")
    if parts[0] == "heads":
        return ".".join(parts[:2])
    if name.startswith("experts.gate"):
        return "gate"
    return parts[0]


def init_bank(
    config: ModelConfig,
    answers_per_task: dict[str, int],
    n_holders: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> Bank:
    """One freshly initialised copy of every module, broadcast to ``n_holders`` rows.

    Adapters start as the identity (zero up-projection), as adapter fine-tuning does.
    """
    h, L, b2 = config.hidden_size, config.num_layers, 2 * config.adapter_bottleneck
    p, s = config.sensor_patch, config.n_sensor_tokens

    def normal(*shape, std):
        return torch.randn(*shape, generator=generator, dtype=dtype) * std

    one: Bank = {
        "adapters.down_w": normal(L, h, b2, std=1.0 / math.sqrt(h)),
        "adapters.down_b": torch.zeros(L, b2, dtype=dtype),
        "adapters.up_w": torch.zeros(L, b2, h, dtype=dtype),
        "adapters.up_b": torch.zeros(L, 2, h, dtype=dtype),
        "image_encoder.w": torch.zeros(h, h, dtype=dtype),
        "image_encoder.b": torch.zeros(h, dtype=dtype),
        "text_encoder.w": torch.zeros(h, h, dtype=dtype),
        "text_encoder.b": torch.zeros(h, dtype=dtype),
        "sensor_encoder.w": normal(p, h, std=1.0 / math.sqrt(p)),
        "sensor_encoder.b": torch.zeros(h, dtype=dtype),
        "sensor_encoder.pos": normal(s, h, std=0.02),
        "prompts.tokens": normal(config.n_prompts, h, std=0.02),
        "experts.down_w": normal(config.n_experts, h, config.expert_bottleneck, std=1.0 / math.sqrt(h)),
        "experts.down_b": torch.zeros(config.n_experts, config.expert_bottleneck, dtype=dtype),
        "experts.up_w": torch.zeros(config.n_experts, config.expert_bottleneck, h, dtype=dtype),
        "experts.up_b": torch.zeros(config.n_experts, h, dtype=dtype),
        "experts.gate_w": normal(h, config.n_experts, std=1.0 / math.sqrt(h)),
        "experts.gate_b": torch.zeros(config.n_experts, dtype=dtype),
    }
    for task, n_answers in sorted(answers_per_task.items()):
        one[f"{head_kind(task)}.w"] = normal(h, n_answers, std=1.0 / math.sqrt(h))
        one[f"{head_kind(task)}.b"] = torch.zeros(n_answers, dtype=dtype)
    return {k: v.unsqueeze(0).repeat(n_holders, *([1] * v.dim())).contiguous() for k, v in one.items()}


def payload_bytes(bank: Bank) -> dict[str, int]:
    """Bytes one holder's copy of each module kind takes on the wire."""
    out: dict[str, int] = {}
    for name, t in bank.items():
        k = kind_of(name)
        out[k] = out.get(k, 0) + t[0].numel() * t.element_size()
    return out


def gather(bank: Bank, names, rows: torch.Tensor) -> Bank:
    """Copies of rows ``rows`` (int64) of the named banks; ``index_select`` gives the
    same rows as indexing, several times faster."""
    return {n: bank[n].index_select(0, rows) for n in names}


def select(bank: Bank, kinds: tuple[str, ...]) -> list[str]:
    """Parameter names of the given module kinds (``"heads"`` matches every head)."""
    return [n for n in bank if parse_kind(kind_of(n)).in_group(kinds)]

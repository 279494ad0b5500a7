"""What every node of a federation has learned and when: :class:`BankState`.

The module banks hold one copy of every parameter per node (node axis first):
``bank`` the live copies, ``synced`` each node's copy as of its last received
aggregate (the reference of its next update), ``adam`` the banked AdamW state.
Per node and module kind, ``last_sync`` and ``last_train`` give the round of the
last received copy and of the last local step (−1: never), ``trained_ever``
whether the node ever trained it; ``expert_mask`` which experts a node trains.

:meth:`BankState.state_dict` and :meth:`BankState.load_state_dict` move it in and
out as named tensors (what checkpoints store), with the trackers relative to a
round so they can be restored into a run at another round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hffm_env.model.banks import Bank
from hffm_env.model.train import AdamState

PARTS = ("bank", "synced", "adam.m", "adam.v", "adam.step")
TRACKERS = ("last_sync", "last_train")


@dataclass
class BankState:
    """Banks, optimiser state and trackers of every node (see the module docstring)."""

    bank: Bank
    synced: Bank
    adam: AdamState
    last_sync: np.ndarray
    last_train: np.ndarray
    trained_ever: np.ndarray
    expert_mask: np.ndarray

    @classmethod
    def fresh(cls, fresh: Bank, n_nodes: int, n_kinds: int, expert_mask: np.ndarray) -> BankState:
        """Every node holds ``fresh`` (one row per parameter), nothing received or trained."""
        bank = {n: t.repeat(n_nodes, *([1] * (t.dim() - 1))).contiguous() for n, t in fresh.items()}
        return cls(
            bank=bank,
            synced={n: t.clone() for n, t in bank.items()},
            adam=AdamState.zeros_like(bank),
            last_sync=np.full((n_nodes, n_kinds), -1, dtype=np.int64),
            last_train=np.full((n_nodes, n_kinds), -1, dtype=np.int64),
            trained_ever=np.zeros((n_nodes, n_kinds), dtype=bool),
            expert_mask=expert_mask,
        )

    def _banks(self) -> tuple[Bank, ...]:
        return self.bank, self.synced, self.adam.m, self.adam.v, self.adam.step

    # ------------------------------------------------------------------ out
    def state_dict(self, round_index: int) -> dict[str, torch.Tensor]:
        """Copies of every tensor, keyed ``"<part>/<parameter>"`` for the banks, and the
        trackers as rounds before ``round_index`` (``"last_sync_ago"``,
        ``"last_train_ago"``; −1: never), ``"trained_ever"``, ``"expert_mask"``."""
        out: dict[str, torch.Tensor] = {}
        for part, bank in zip(PARTS, self._banks()):
            for name, t in bank.items():
                out[f"{part}/{name}"] = t.detach().contiguous().clone()
        for name in TRACKERS:
            at = getattr(self, name)
            out[f"{name}_ago"] = torch.from_numpy(np.where(at >= 0, round_index - at, -1).astype(np.int64))
        out["trained_ever"] = torch.from_numpy(self.trained_ever.astype(bool))
        out["expert_mask"] = torch.from_numpy(self.expert_mask.astype(bool))
        return out

    def expected(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Every key of :meth:`state_dict` with its shape and dtype."""
        out = {}
        for part, bank in zip(PARTS, self._banks()):
            for name, t in bank.items():
                out[f"{part}/{name}"] = (tuple(t.shape), t.dtype)
        for name in TRACKERS:
            out[f"{name}_ago"] = (tuple(self.last_sync.shape), torch.int64)
        out["trained_ever"] = (tuple(self.trained_ever.shape), torch.bool)
        out["expert_mask"] = (tuple(self.expert_mask.shape), torch.bool)
        return out

    # ------------------------------------------------------------------ in
    def check_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Raise ``ValueError`` naming the first key that is missing, extra, or of
        another shape or dtype than this state's, or a tracker below −1."""
        expected = self.expected()
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ValueError(f"state tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise ValueError(f"unexpected state tensor {extra[0]!r} ({len(extra)} unexpected in all)")
        for key, (shape, dtype) in expected.items():
            t = tensors[key]
            if t.dtype != dtype:
                raise ValueError(f"state tensor {key!r} has dtype {t.dtype}, expected {dtype}")
            if tuple(t.shape) != shape:
                raise ValueError(f"state tensor {key!r} has shape {list(t.shape)}, expected {list(shape)}")
        for name in TRACKERS:
            ago = tensors[f"{name}_ago"]
            if (ago < -1).any():
                raise ValueError(f"state tensor '{name}_ago' must hold rounds ago >= 0 or -1 (never)")

    def load_state_dict(self, tensors: dict[str, torch.Tensor], round_index: int) -> None:
        """Copy ``tensors`` (as :meth:`state_dict` writes them) in, the trackers shifted
        to ``round_index`` (a copy older than round 0 counts as received in round 0).
        Everything is checked first (:meth:`check_state_dict`): on error nothing changes."""
        self.check_state_dict(tensors)
        with torch.no_grad():
            for part, bank in zip(PARTS, self._banks()):
                for name, t in bank.items():
                    t.copy_(tensors[f"{part}/{name}"])
        for name in TRACKERS:
            ago = tensors[f"{name}_ago"].numpy()
            getattr(self, name)[...] = np.where(ago >= 0, np.maximum(round_index - ago, 0), -1)
        self.trained_ever[...] = tensors["trained_ever"].numpy()
        self.expert_mask[...] = tensors["expert_mask"].numpy()

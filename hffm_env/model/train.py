"""Local training and evaluation of many holders at once over a bank.

Each local step, the training devices are grouped by the task they train on at
that step (a device with several tasks takes them in turn); each group is one
batched forward/backward over the frozen backbone. The loss is the sum over devices
of each device's mean loss, so every device gets exactly the gradient it would get
alone, and a banked AdamW keeps one optimiser state per holder (and per head), so
the update is exactly the one ``torch.optim.AdamW`` would make for that device
alone. A head a device does not train in a step is not touched at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hffm_env.data import FederatedData, task_spec
from hffm_env.model import m3t
from hffm_env.model.backbone import FrozenBackbone
from hffm_env.model.banks import Bank

BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass
class AdamState:
    """Banked AdamW moments and per-holder step counts, one per parameter name."""

    m: Bank
    v: Bank
    step: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def zeros_like(cls, bank: Bank) -> "AdamState":
        return cls({k: torch.zeros_like(t) for k, t in bank.items()},
                   {k: torch.zeros_like(t) for k, t in bank.items()},
                   {k: torch.zeros(t.shape[0], dtype=torch.long) for k, t in bank.items()})


def adamw_update(bank: Bank, state: AdamState, holders: torch.Tensor, grads: dict[str, torch.Tensor],
                 lr: float, weight_decay: float) -> None:
    """AdamW (decoupled weight decay, bias-corrected) on rows ``holders`` of each named bank."""
    b1, b2 = BETAS
    for name, g in grads.items():
        state.step[name][holders] += 1
        t = state.step[name][holders].to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
        p, m, v = bank[name][holders], state.m[name][holders], state.v[name][holders]
        p = p * (1.0 - lr * weight_decay)
        m = m + (1.0 - b1) * (g - m)
        v = v * b2 + (1.0 - b2) * g * g
        denom = v.sqrt() / (1.0 - b2 ** t).sqrt() + EPS
        bank[name][holders] = p - (lr / (1.0 - b1 ** t)) * m / denom
        state.m[name][holders] = m
        state.v[name][holders] = v


def plan_batches(data: FederatedData, devices: np.ndarray, steps: int, batch_size: int,
                 rng: np.random.Generator) -> list[list[tuple[int, str, np.ndarray]]]:
    """For every step, ``(device, task, sample indices)`` of each training device.

    A device cycles through its tasks; each task's shard is read in reshuffled passes.
    """
    plan: list[list[tuple[int, str, np.ndarray]]] = [[] for _ in range(steps)]
    for d in devices:
        tasks = data.shards.tasks[d]
        cursors = {t: np.zeros(0, dtype=np.int64) for t in tasks}
        for s in range(steps):
            t = tasks[s % len(tasks)]
            shard = data.shards.train[d][t]
            while len(cursors[t]) < batch_size:
                cursors[t] = np.concatenate([cursors[t], rng.permutation(shard)])
            plan[s].append((int(d), t, cursors[t][:batch_size]))
            cursors[t] = cursors[t][batch_size:]
    return plan


def task_inputs(data: FederatedData, task: str, index: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs ``[D, B, ...]`` and labels ``[D, B]`` of a task's pool at ``index [D, B]``."""
    pool = data.pools[task]
    inputs = {}
    if pool.tokens is not None:
        inputs["tokens"] = torch.from_numpy(pool.tokens[index])
        inputs["attention"] = torch.from_numpy(pool.attention[index])
    if pool.image is not None:
        inputs["image"] = torch.from_numpy(pool.image[index])
    if pool.sensor is not None:
        inputs["sensor"] = torch.from_numpy(pool.sensor[index])
    return inputs, torch.from_numpy(pool.label[index])


def trainable_names(bank: Bank, task: str, modalities: tuple[str, ...]) -> list[str]:
    names = [n for n in bank if n.startswith("adapters.") or n.startswith(f"heads.{task}.")]
    if "sensor" in modalities:
        names += [n for n in bank if n.startswith("sensor_encoder.")]
    return names


def group_loss(backbone: FrozenBackbone, bank: Bank, holders: torch.Tensor, task: str,
               inputs: dict[str, torch.Tensor], labels: torch.Tensor, names: list[str]):
    """Sum over holders of each holder's mean cross-entropy, and the leaf parameters."""
    modalities = task_spec(task).modalities
    params = {n: bank[n][holders].detach().requires_grad_(n in names) for n in bank
              if n.startswith(("adapters.", "sensor_encoder.", f"heads.{task}."))}
    logits = m3t.forward(backbone, params, inputs, task, modalities)
    per_sample = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    per_holder = per_sample.view(labels.shape).mean(dim=1)
    return per_holder.sum(), per_holder.detach(), {n: params[n] for n in names}


def local_train(backbone: FrozenBackbone, bank: Bank, adam: AdamState, data: FederatedData,
                devices: np.ndarray, holders: np.ndarray, steps: int, batch_size: int,
                rng: np.random.Generator, lr: float, weight_decay: float) -> np.ndarray:
    """``steps`` local AdamW steps of every device in ``devices`` on its own shards,
    updating bank rows ``holders`` (same order). Returns each device's mean loss."""
    row_of = dict(zip(map(int, devices), map(int, holders)))
    plan = plan_batches(data, devices, steps, batch_size, rng)
    losses = {int(d): [] for d in devices}
    for step in plan:
        for task in sorted({t for _, t, _ in step}):
            group = [(d, idx) for d, t, idx in step if t == task]
            rows = torch.tensor([row_of[d] for d, _ in group])
            inputs, labels = task_inputs(data, task, np.stack([idx for _, idx in group]))
            names = trainable_names(bank, task, task_spec(task).modalities)
            loss, per_holder, leaves = group_loss(backbone, bank, rows, task, inputs, labels, names)
            grads = torch.autograd.grad(loss, [leaves[n] for n in names])
            with torch.no_grad():
                adamw_update(bank, adam, rows, dict(zip(names, grads)), lr, weight_decay)
            for (d, _), value in zip(group, per_holder.tolist()):
                losses[d].append(value)
    return np.array([np.mean(losses[int(d)]) for d in devices])


@torch.no_grad()
def evaluate(backbone: FrozenBackbone, bank: Bank, data: FederatedData, devices: np.ndarray,
             holders: np.ndarray, split: str = "test", max_batch: int = 256) -> dict[int, dict[str, float]]:
    """Accuracy of each device's model copy (bank row) on each of its tasks' ``split`` shard.

    Devices of a task are evaluated together: shards are padded to a common length in
    chunks and the padding is left out of the counts.
    """
    shards = data.shards.test if split == "test" else data.shards.train
    out: dict[int, dict[str, float]] = {int(d): {} for d in devices}
    row_of = dict(zip(map(int, devices), map(int, holders)))
    for task in sorted({t for d in devices for t in data.shards.tasks[d]}):
        holders_t = [int(d) for d in devices if task in data.shards.tasks[d]]
        idx = [shards[d][task] for d in holders_t]
        longest = max(len(i) for i in idx)
        correct = np.zeros(len(holders_t))
        for start in range(0, longest, max_batch):
            chunk = [i[start:start + max_batch] for i in idx]
            width = max(len(c) for c in chunk)
            if width == 0:
                continue
            padded = np.stack([np.pad(c, (0, width - len(c)), mode="edge") if len(c) else np.zeros(width, int)
                               for c in chunk])
            valid = torch.from_numpy(np.stack([np.arange(width) < len(c) for c in chunk]))
            inputs, labels = task_inputs(data, task, padded)
            rows = torch.tensor([row_of[d] for d in holders_t])
            params = {n: bank[n][rows] for n in bank if n.startswith(("adapters.", "sensor_encoder.",
                                                                        f"heads.{task}."))}
            logits = m3t.forward(backbone, params, inputs, task, task_spec(task).modalities)
            correct += ((logits.argmax(-1) == labels) & valid).sum(1).numpy()
        for d, c, i in zip(holders_t, correct, idx):
            out[d][task] = float(c / len(i))
    return out

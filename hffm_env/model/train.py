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

from hffm_env.data import FederatedData, TaskData, task_spec
from hffm_env.model import m3t
from hffm_env.model.backbone import FrozenBackbone
from hffm_env.model.banks import ENCODER_OF, EXPERT_PARAMS, Bank, gather, head_kind, kind_of, parse_kind
from hffm_env.model.config import ModelConfig
from hffm_env.model.numerics import flush_denormals

BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass
class AdamState:
    """Banked AdamW moments and step counts, one per parameter name: per holder, and
    per holder and expert for the MoE experts (a device may train only some)."""

    m: Bank
    v: Bank
    step: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def zeros_like(cls, bank: Bank) -> "AdamState":
        return cls(
            {k: torch.zeros_like(t) for k, t in bank.items()},
            {k: torch.zeros_like(t) for k, t in bank.items()},
            {
                k: torch.zeros(t.shape[:2] if k in EXPERT_PARAMS else t.shape[:1], dtype=torch.long)
                for k, t in bank.items()
            },
        )


def adamw_update(
    bank: Bank,
    state: AdamState,
    holders: torch.Tensor,
    grads: dict[str, torch.Tensor],
    lr: float,
    weight_decay: float,
    expert_mask: torch.Tensor | None = None,
    current: dict[str, torch.Tensor] | None = None,
    row_mask: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """AdamW (decoupled weight decay, bias-corrected) on rows ``holders`` of each named bank.

    ``expert_mask [D, E]`` (bool) limits the expert parameters' update to the experts
    each holder trains; the others keep their values and optimiser state. So does
    ``row_mask`` (name -> bool ``[D]``) for the holders that train that name. A holder
    whose gradient or updated modules are not finite (float overflow, e.g. after an
    attacker's scaled update) skips the step entirely: its modules and optimiser state
    stay as they were. ``current`` may pass rows ``holders`` of the named banks already
    gathered (the pass's leaves), saving a gather. Returns the bool mask of the holders
    that skipped.
    """
    b1, b2 = BETAS
    names = list(grads)
    if not names:
        return torch.zeros(len(holders), dtype=torch.bool)
    gs = [grads[n] for n in names]
    # gathered copies
    ps = list(gather(bank, names, holders).values()) if current is None else [current[n] for n in names]
    ms = list(gather(state.m, names, holders).values())
    vs = list(gather(state.v, names, holders).values())
    if expert_mask is not None and bool(expert_mask.all()):
        expert_mask = None  # every holder trains every expert: a plain step
    keeps, steps = [], []
    for n, g in zip(names, gs):
        step = state.step[n].index_select(0, holders)
        keep = expert_mask if n in EXPERT_PARAMS and expert_mask is not None else None
        rows = None if row_mask is None else row_mask.get(n)
        if rows is not None and not bool(rows.all()):
            rows = rows.view(-1, *([1] * (step.dim() - 1))).expand_as(step)
            keep = rows if keep is None else keep & rows
        if keep is None:
            keeps.append(None)
            steps.append(step + 1)
        else:
            keeps.append(keep.view(*keep.shape, *([1] * (g.dim() - keep.dim()))))
            steps.append(step + keep.long())
    # the bias corrections of every name at once; an expert never trained has step 0:
    # its row is kept below, the clamp only avoids 0/0
    t = torch.cat([s.flatten() for s in steps]).clamp(min=1).to(gs[0].dtype)
    sqrt_bc2 = (1.0 - torch.pow(b2, t)).sqrt().split([s.numel() for s in steps])
    scale = ((1.0 - torch.pow(b1, t)) / lr).split([s.numel() for s in steps])
    shape = [(*s.shape, *([1] * (g.dim() - s.dim()))) for s, g in zip(steps, gs)]
    sqrt_bc2 = [c.view(sh) for c, sh in zip(sqrt_bc2, shape)]
    scale = [c.view(sh) for c, sh in zip(scale, shape)]
    old = {i: (ps[i].clone(), ms[i].clone(), vs[i].clone()) for i, k in enumerate(keeps) if k is not None}
    # in place on the gathered copies, all names per call: m ← β1·m + (1−β1)·g,
    # v ← β2·v + (1−β2)·g², p ← p·(1 − lr·wd) − lr/(1−β1^t) · m / (√v / √(1−β2^t) + ε)
    torch._foreach_lerp_(ms, gs, 1.0 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, gs, gs, value=1.0 - b2)
    denoms = torch._foreach_sqrt(vs)
    torch._foreach_div_(denoms, sqrt_bc2)
    torch._foreach_add_(denoms, EPS)
    torch._foreach_mul_(denoms, scale)
    torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
    torch._foreach_addcdiv_(ps, ms, denoms, value=-1.0)
    for i, (p_old, m_old, v_old) in old.items():
        ps[i], ms[i], vs[i] = (
            torch.where(keeps[i], new, prev) for new, prev in zip((ps[i], ms[i], vs[i]), (p_old, m_old, v_old))
        )
    finite = _finite_holders(ps + vs, len(holders))
    updates = {n: (p, m, v, s) for n, p, m, v, s in zip(names, ps, ms, vs, steps)}
    skip_any = not bool(finite.all())
    for name, (p_new, m_new, v_new, step) in updates.items():
        if skip_any:  # the skipped holders keep their rows: write back what they had
            ok = finite.view(-1, *([1] * (p_new.dim() - 1)))
            p_new = torch.where(ok, p_new, bank[name].index_select(0, holders))
            m_new = torch.where(ok, m_new, state.m[name].index_select(0, holders))
            v_new = torch.where(ok, v_new, state.v[name].index_select(0, holders))
            step = torch.where(
                finite.view(-1, *([1] * (step.dim() - 1))), step, state.step[name].index_select(0, holders)
            )
        bank[name][holders] = p_new
        state.m[name][holders] = m_new
        state.v[name][holders] = v_new
        state.step[name][holders] = step
    return ~finite


def _finite_holders(tensors: list[torch.Tensor], n: int) -> torch.Tensor:
    """Bool ``[n]``: whether every element of holder ``i``'s rows (row ``i`` of each
    tensor) is finite. A tensor's L2 norm is finite when all its elements are (NaN and
    inf propagate; an overflow of finite values only sends it down the exact path), so
    one foreach call settles the common all-finite case without copying the rows."""
    if bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()):
        return torch.ones(n, dtype=torch.bool)
    # a row is finite iff its max and min are (both propagate NaN)
    rows = torch.cat([x.reshape(n, -1) for x in tensors], dim=1)
    return torch.isfinite(rows.amax(1)) & torch.isfinite(rows.amin(1))


def step_tasks(data: FederatedData, device: int, steps: int, batch_size: int, epochs: float | None = None) -> list[str]:
    """The task ``device`` trains on at each of its local steps.

    With ``epochs`` None: ``steps`` steps cycling through its tasks. Otherwise
    ``ceil(epochs · n_t / batch_size)`` steps on each task ``t`` of ``n_t`` training
    samples (``epochs`` passes over the shard, the last batch filled from the next
    pass), the tasks taken in turn while each has steps left.
    """
    tasks = data.shards.tasks[device]
    if epochs is None:
        return [tasks[s % len(tasks)] for s in range(steps)] if tasks else []
    left = {t: int(np.ceil(epochs * len(data.shards.train[device][t]) / batch_size)) for t in tasks}
    out: list[str] = []
    while any(left.values()):
        for t in tasks:
            if left[t]:
                out.append(t)
                left[t] -= 1
    return out


def plan_batches(
    data: FederatedData,
    devices: np.ndarray,
    steps: int,
    batch_size: int,
    rng: np.random.Generator,
    epochs: float | None = None,
) -> list[list[tuple[int, str, np.ndarray]]]:
    """For every step, ``(device, task, sample indices)`` of each training device.

    A device's steps follow :func:`step_tasks` (``steps`` each, or ``epochs`` passes
    over its shards, so devices with more data train for more steps); each task's
    shard is read in reshuffled passes.
    """
    seqs = [step_tasks(data, int(d), steps, batch_size, epochs) for d in devices]
    plan: list[list[tuple[int, str, np.ndarray]]] = [[] for _ in range(max(map(len, seqs), default=0))]
    for d, seq in zip(devices, seqs):
        cursors = {t: np.zeros(0, dtype=np.int64) for t in data.shards.tasks[d]}
        for s, t in enumerate(seq):
            shard = data.shards.train[d][t]
            if len(shard) == 0:
                raise ValueError(f"device {d} holds task {t!r} with an empty training shard")
            while len(cursors[t]) < batch_size:
                cursors[t] = np.concatenate([cursors[t], rng.permutation(shard)])
            plan[s].append((int(d), t, cursors[t][:batch_size]))
            cursors[t] = cursors[t][batch_size:]
    return plan


def pool_inputs(pool: TaskData, index: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs ``[D, B, ...]`` and labels ``[D, B]`` of a task pool at ``index [D, B]``."""
    inputs = {}
    if pool.tokens is not None:
        inputs["tokens"] = torch.from_numpy(pool.tokens[index])
        inputs["attention"] = torch.from_numpy(pool.attention[index])
    if pool.image is not None:
        inputs["image"] = torch.from_numpy(pool.image[index])
    if pool.sensor is not None:
        inputs["sensor"] = torch.from_numpy(pool.sensor[index])
    return inputs, torch.from_numpy(pool.label[index])


def task_inputs(data: FederatedData, task: str, index: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs and labels of ``task``'s pool at ``index [D, B]``."""
    return pool_inputs(data.pools[task], index)


def used_names(bank: Bank, task: str) -> list[str]:
    """Parameters a pass on ``task`` reads: every module but the other tasks' heads."""
    return [n for n in bank if not parse_kind(kind_of(n)).is_head or kind_of(n) == head_kind(task)]


def trainable_names(bank: Bank, task: str, modalities: tuple[str, ...]) -> list[str]:
    """Parameters a step on ``task`` trains: a modality's encoder only with that modality's data."""
    absent = tuple(f"{ENCODER_OF[m]}." for m in ENCODER_OF if m not in modalities)
    return [n for n in used_names(bank, task) if not n.startswith(absent) and bank[n][0].numel() > 0]


def group_loss(
    backbone: FrozenBackbone,
    bank: Bank,
    holders: torch.Tensor,
    task: str,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    names: list[str],
    top_k: int,
):
    """Sum over holders of each holder's mean cross-entropy, and the leaf parameters."""
    modalities = task_spec(task).modalities
    params = {
        n: t.detach().requires_grad_(n in names) for n, t in gather(bank, used_names(bank, task), holders).items()
    }
    logits = m3t.forward(backbone, params, inputs, task, modalities, top_k)
    per_sample = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    per_holder = per_sample.view(labels.shape).mean(dim=1)
    return per_holder.sum(), per_holder.detach(), {n: params[n] for n in names}


@flush_denormals
def local_train(
    backbone: FrozenBackbone,
    bank: Bank,
    adam: AdamState,
    data: FederatedData,
    devices: np.ndarray,
    holders: np.ndarray,
    steps: int,
    batch_size: int,
    rng: np.random.Generator,
    config: ModelConfig,
    expert_mask: np.ndarray | None = None,
    flip_labels: np.ndarray | None = None,
    only_kinds: tuple[str, ...] | list[tuple[str, ...]] | None = None,
    skipped: set[int] | None = None,
    epochs: float | None = None,
) -> np.ndarray:
    """``steps`` local AdamW steps of every device in ``devices`` on its own shards
    (or ``epochs`` passes over them, see :func:`plan_batches`),
    updating bank rows ``holders`` (same order). ``expert_mask [n_holders, E]`` says
    which experts each holder trains (all by default); ``flip_labels [n_holders]``
    (bool) marks holders that train on flipped labels (answer ``a`` → ``A−1−a``, a
    label-flipping attacker); ``only_kinds`` limits training to those module kinds
    (names as :func:`~hffm_env.model.banks.kind_of` gives them), or with a list (one
    tuple per device, same order) each device to its own kinds, all in the same
    passes. Devices whose AdamW
    step was skipped as non-finite are added to ``skipped`` when given. Returns each
    device's mean loss."""
    row_of = dict(zip(map(int, devices), map(int, holders)))
    kinds_of = None
    if only_kinds is not None:
        per_device = isinstance(only_kinds, list)
        if per_device and len(only_kinds) != len(devices):
            raise ValueError(f"only_kinds must hold one tuple per device ({len(devices)}), got {len(only_kinds)}")
        kinds_of = {int(d): set(only_kinds[i] if per_device else only_kinds) for i, d in enumerate(devices)}
    plan = plan_batches(data, devices, steps, batch_size, rng, epochs)
    losses = {int(d): [] for d in devices}
    for step in plan:
        for task in sorted({t for _, t, _ in step}):
            group = [(d, idx) for d, t, idx in step if t == task]
            rows = torch.tensor([row_of[d] for d, _ in group])
            inputs, labels = task_inputs(data, task, np.stack([idx for _, idx in group]))
            if flip_labels is not None:
                flip = torch.as_tensor(np.asarray(flip_labels)[rows.numpy()])
                if flip.any():
                    labels = torch.where(flip[:, None], len(task_spec(task).answers) - 1 - labels, labels)
            names = trainable_names(bank, task, task_spec(task).modalities)
            row_mask = None
            if kinds_of is not None:
                names = [n for n in names if any(kind_of(n) in kinds_of[d] for d, _ in group)]
                if not names:
                    continue
                row_mask = {n: torch.tensor([kind_of(n) in kinds_of[d] for d, _ in group]) for n in names}
            loss, per_holder, leaves = group_loss(
                backbone, bank, rows, task, inputs, labels, names, config.experts_top_k
            )
            grads = torch.autograd.grad(loss, [leaves[n] for n in names])
            mask = None if expert_mask is None else torch.as_tensor(expert_mask)[rows]
            with torch.no_grad():
                bad = adamw_update(
                    bank,
                    adam,
                    rows,
                    dict(zip(names, grads)),
                    config.learning_rate,
                    config.weight_decay,
                    mask,
                    current={n: leaves[n].detach() for n in names},
                    row_mask=row_mask,
                )
            if skipped is not None and bad.any():
                skipped.update(int(group[i][0]) for i in torch.nonzero(bad).flatten().tolist())
            for (d, _), value in zip(group, per_holder.tolist()):
                losses[d].append(value)
    return np.array([np.mean(losses[int(d)]) if losses[int(d)] else np.nan for d in devices])


def right_answer_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The softmax of ``logits [..., A]`` at ``labels [...]`` (float64, shaped as ``labels``)."""
    return torch.softmax(logits.double(), -1).gather(-1, labels[..., None]).squeeze(-1)


def evaluate(
    backbone: FrozenBackbone,
    bank: Bank,
    data: FederatedData,
    devices: np.ndarray,
    holders: np.ndarray,
    config: ModelConfig,
    split: str = "test",
    max_batch: int = 256,
) -> dict[int, dict[str, float]]:
    """Accuracy of each device's model copy (bank row) on each of its tasks' ``split``
    shard (:func:`evaluate_metrics`' first half)."""
    return evaluate_metrics(backbone, bank, data, devices, holders, config, split, max_batch)[0]


@flush_denormals
@torch.inference_mode()
def evaluate_metrics(
    backbone: FrozenBackbone,
    bank: Bank,
    data: FederatedData,
    devices: np.ndarray,
    holders: np.ndarray,
    config: ModelConfig,
    split: str = "test",
    max_batch: int = 256,
    nonfinite: dict[int, dict[str, int]] | None = None,
) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
    """Accuracy and mean probability of the correct answer of each device's model copy
    (bank row) on each of its tasks' ``split`` shard, from one forward pass.

    Devices of a task are evaluated together: shards are padded to a common length in
    chunks and the padding is left out of the counts. The probability is the softmax
    of the head's logits at the right answer: a smooth score that a one-sample flip
    moves by far less than it moves the accuracy. A sample whose logits are not all
    finite (a copy driven to overflow) gets no answer: it counts as wrong with
    probability 0, and ``nonfinite`` (when given) receives how many such samples each
    device had per task.
    """
    shards = data.shards.test if split == "test" else data.shards.train
    acc: dict[int, dict[str, float]] = {int(d): {} for d in devices}
    prob: dict[int, dict[str, float]] = {int(d): {} for d in devices}
    row_of = dict(zip(map(int, devices), map(int, holders)))
    for task in sorted({t for d in devices for t in data.shards.tasks[d]}):
        # a device with no (or an empty) shard of the task has no accuracy to report on it
        holders_t = [int(d) for d in devices if task in data.shards.tasks[d] and len(shards[d].get(task, ()))]
        if not holders_t:
            continue
        idx = [shards[d][task] for d in holders_t]
        longest = max(len(i) for i in idx)
        correct = np.zeros(len(holders_t))
        p_right = np.zeros(len(holders_t))
        unanswered = np.zeros(len(holders_t), dtype=np.int64)
        rows = torch.tensor([row_of[d] for d in holders_t])
        params = gather(bank, used_names(bank, task), rows)
        for start in range(0, longest, max_batch):
            chunk = [i[start : start + max_batch] for i in idx]
            width = max(len(c) for c in chunk)
            if width == 0:
                continue
            padded = np.stack(
                [np.pad(c, (0, width - len(c)), mode="edge") if len(c) else np.zeros(width, int) for c in chunk]
            )
            valid = torch.from_numpy(np.stack([np.arange(width) < len(c) for c in chunk]))
            inputs, labels = task_inputs(data, task, padded)
            logits = m3t.forward(backbone, params, inputs, task, task_spec(task).modalities, config.experts_top_k)
            answered = torch.isfinite(logits).all(-1) & valid
            correct += ((logits.argmax(-1) == labels) & answered).sum(1).numpy()
            p = right_answer_probability(logits, labels)
            p_right += torch.where(answered, p, 0.0).sum(1).numpy()
            unanswered += (valid & ~answered).sum(1).numpy()
        for d, c, q, i, u in zip(holders_t, correct, p_right, idx, unanswered):
            acc[d][task] = float(c / len(i))
            prob[d][task] = float(q / len(i))
            if u and nonfinite is not None:
                nonfinite.setdefault(d, {})[task] = int(u)
    return acc, prob

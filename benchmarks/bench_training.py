"""Benchmark of local training: one batched pass for all devices vs per-device loops.

Run as ``hffm bench training`` (or ``python -m benchmarks.bench_training``). One
round of local training — ``devices`` devices × ``steps`` AdamW steps × ``batch``
samples on the shipped backbone, the ``paper`` preset's tasks — is timed three ways
on the same model, data and steps:

* **batched**: ``hffm_env.model.train.local_train`` (devices grouped by task, one
  forward/backward per group and step, banked AdamW);
* **reference loop**: device after device as the reference implementation does it:
  load the device's state into the model, build its optimiser, read its batches
  through a ``DataLoader`` with two worker processes, train, save the state back,
  ``gc.collect()``;
* **clean loop**: the same per-device loop without the state copies and collection.

It prints seconds per round and both speed-ups, then the FLOP/s of the batched
round (FLOPs counted by ``torch.utils.flop_counter``) as a share of this machine's
float32 matmul rate, measured in the same run.
"""

from __future__ import annotations

import copy
import gc
import time

import numpy as np
import torch
import torch.nn.functional as F


def matmul_rate_flops(n: int = 1024, reps: int = 20) -> float:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2.0 * n**3 * reps / (time.perf_counter() - t0)


def _setup(n_devices: int, seed: int = 0):
    from hffm_env.data import DataConfig, make_federated_data
    from hffm_env.model import ModelConfig, init_bank
    from hffm_env.model.backbone import FrozenBackbone, build_vilt

    cfg = ModelConfig()
    data = make_federated_data(
        DataConfig(tasks=("scene_qa", "style_qa"), pool_size=4000, tasks_per_device=(1, 1)), n_devices, seed
    )
    backbone = FrozenBackbone(build_vilt(cfg))
    bank = init_bank(
        cfg, {t: len(p.answers) for t, p in data.pools.items()}, n_devices, torch.Generator().manual_seed(seed)
    )
    return cfg, data, backbone, bank


def run_batched(cfg, data, backbone, bank, steps, batch, seed=0) -> float:
    from hffm_env.model import train as T

    devs = np.arange(len(data.shards.tasks))
    adam = T.AdamState.zeros_like(bank)
    t0 = time.perf_counter()
    T.local_train(backbone, bank, adam, data, devs, devs, steps, batch, np.random.default_rng(seed), cfg)
    return time.perf_counter() - t0


def run_per_device(cfg, data, backbone, bank, steps, batch, reference_style: bool, seed=0) -> float:
    """Device after device. ``reference_style`` adds what the reference loop does per
    user: copy its state in, feed batches through a ``DataLoader`` with 2 worker
    processes, copy its state out, ``gc.collect()``."""
    from torch.utils.data import DataLoader

    from hffm_env.data import task_spec
    from hffm_env.model import m3t
    from hffm_env.model import train as T

    devs = np.arange(len(data.shards.tasks))
    plan = T.plan_batches(data, devs, steps, batch, np.random.default_rng(seed))
    t0 = time.perf_counter()
    for d in devs:
        state = {k: v[d : d + 1] for k, v in bank.items()}
        if reference_style:
            state = copy.deepcopy(state)  # load the user's state
        params = {k: torch.nn.Parameter(v.clone()) for k, v in state.items()}
        opt = torch.optim.AdamW(params.values(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        mine = [(task, idx) for step in plan for dd, task, idx in step if dd == d]
        collate = lambda item: (item[0], *T.task_inputs(data, item[0], item[1][None]))  # noqa: E731
        batches = (
            DataLoader(mine, batch_size=None, num_workers=2, collate_fn=collate)
            if reference_style
            else map(collate, mine)
        )
        for task, inputs, labels in batches:
            used = {k: params[k] for k in T.used_names(params, task)}
            logits = m3t.forward(backbone, used, inputs, task, task_spec(task).modalities, cfg.experts_top_k)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
            opt.step()
        with torch.no_grad():
            for k, p in params.items():
                bank[k][d] = p[0]
        if reference_style:
            _ = copy.deepcopy({k: p.detach() for k, p in params.items()})  # save the user's state
            gc.collect()
    return time.perf_counter() - t0


def batched_flops(cfg, data, backbone, bank, steps, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_batched(cfg, data, backbone, {k: v.clone() for k, v in bank.items()}, steps, batch)
    return float(counter.get_total_flops())


def main(devices: int = 40, steps: int = 4, batch: int = 8, repeats: int = 3) -> int:
    from hffm_cli.progress import Progress

    torch.set_num_threads(torch.get_num_threads())
    cfg, data, backbone, bank = _setup(devices)
    print(
        f"hffm bench training: {devices} devices x {steps} steps x {batch} samples, shipped backbone "
        f"(hidden {cfg.hidden_size}, {cfg.num_layers} layers), {torch.get_num_threads()} threads"
    )

    def fresh():
        return {k: v.clone() for k, v in bank.items()}

    # the warm-up, each way's repeats, and the FLOP count
    with Progress(2 + 3 * repeats, "rounds", "hffm bench training") as progress:

        def timed(seconds: float) -> float:
            progress.update()
            return seconds

        timed(run_batched(cfg, data, backbone, fresh(), 1, batch))  # warm-up
        t_batched = min(timed(run_batched(cfg, data, backbone, fresh(), steps, batch)) for _ in range(repeats))
        t_clean = min(timed(run_per_device(cfg, data, backbone, fresh(), steps, batch, False)) for _ in range(repeats))
        t_ref = min(timed(run_per_device(cfg, data, backbone, fresh(), steps, batch, True)) for _ in range(repeats))
        flops = batched_flops(cfg, data, backbone, bank, steps, batch)
        progress.update()
    print(f"  batched          {t_batched:8.3f} s/round")
    print(f"  clean loop       {t_clean:8.3f} s/round   batched is {t_clean / t_batched:5.1f}x faster (goal >= 3x)")
    print(f"  reference loop   {t_ref:8.3f} s/round   batched is {t_ref / t_batched:5.1f}x faster (goal >= 10x)")
    ceiling = matmul_rate_flops()
    achieved = flops / t_batched
    print(
        f"  batched round: {flops / 1e9:.1f} GFLOP, {achieved / 1e9:.1f} GFLOP/s; float32 matmul ceiling "
        f"{ceiling / 1e9:.1f} GFLOP/s -> {100 * achieved / ceiling:.0f} % (target >= 40 %, goal >= 60 %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pretrain the small ViLT backbone that ships with hffm-env.

    python -m training.pretrain_backbone --out hffm_env/assets [--seed 0] [--epochs 8]

The backbone (architecture: ``hffm_env.model.backbone.SHIPPED_ARCHITECTURE``) is
trained end to end, with a throw-away sensor encoder and one linear head per task,
on a *source split* of the synthetic suite: every built-in task, drawn from seeds
that the environments never use (``SOURCE_SEED_BASE + seed``). Then only the
backbone's weights are saved, as ``backbone.safetensors``, with ``backbone.json``
(architecture, seed, recipe, SHA-256 of the weights).

Every draw comes from ``--seed``: with the same torch version and thread count the
file is rebuilt bit for bit (the script pins 2 threads; it prints the SHA-256).
Plain AdamW, mini-batches of 64, cosine learning-rate decay; every hyper-parameter
is a flag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SOURCE_SEED_BASE = 1_000_003


def main(argv: list[str] | None = None) -> int:
    from hffm_env.data import DataConfig, task_pool, task_spec
    from hffm_env.model import ModelConfig, init_bank, m3t
    from hffm_env.model.backbone import SHIPPED_ARCHITECTURE, build_vilt
    from hffm_env.model.train import pool_inputs, used_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="hffm_env/assets", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-task", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    tasks = ("scene_qa", "style_qa", "sensor", "digits_qa")
    arch = ModelConfig(backbone="random", init_seed=args.seed, **SHIPPED_ARCHITECTURE)
    data_cfg = DataConfig(
        tasks=tasks,
        image_size=arch.image_size,
        max_question_tokens=arch.max_text_tokens,
        vocab_size=arch.vocab_size,
        sensor_length=arch.sensor_length,
    )
    pools = {t: task_pool(t, args.samples_per_task, SOURCE_SEED_BASE + args.seed, data_cfg) for t in tasks}

    vilt = build_vilt(arch).train()
    # One holder, every module of the bank trainable alongside the backbone; only the
    # backbone is kept.
    gen = torch.Generator().manual_seed(args.seed)
    # The image/text encoders are residual maps on the backbone's own embeddings,
    # which pretraining trains directly: they stay out (zero, i.e. the identity).
    bank = {
        k: torch.nn.Parameter(v)
        for k, v in init_bank(arch, {t: len(pools[t].answers) for t in tasks}, 1, gen).items()
        if not k.startswith(("image_encoder.", "text_encoder."))
    }

    from hffm_env.model.backbone import FrozenBackbone

    backbone = FrozenBackbone(vilt)
    for prm in vilt.parameters():  # FrozenBackbone froze it: pretraining trains it
        prm.requires_grad_(True)
    params = list(vilt.parameters()) + list(bank.values())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    batches = []
    for t in tasks:
        n = len(pools[t])
        batches += [(t, i) for i in range(0, n - args.batch_size + 1, args.batch_size)]
    total = args.epochs * len(batches)
    step = 0
    t0 = time.time()
    for epoch in range(args.epochs):
        order = {t: rng.permutation(len(pools[t])) for t in tasks}
        correct = seen = 0
        for j in rng.permutation(len(batches)):
            task, start = batches[j]
            idx = order[task][start : start + args.batch_size][None]
            inputs, labels = pool_inputs(pools[task], idx)
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            used = {k: bank[k] for k in used_names(bank, task)}
            h = arch.hidden_size
            used |= {
                f"{m}_encoder.{p}": torch.zeros(1, h, h) if p == "w" else torch.zeros(1, h)
                for m in ("image", "text")
                for p in ("w", "b")
            }
            logits = m3t.forward(backbone, used, inputs, task, task_spec(task).modalities, arch.experts_top_k)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(-1) == labels).sum())
            seen += labels.numel()
            step += 1
        print(
            f"epoch {epoch + 1}/{args.epochs}: train accuracy {correct / seen:.3f} ({time.time() - t0:.0f} s)",
            flush=True,
        )

    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in vilt.state_dict().items()}
    save_file(state, str(out / "backbone.safetensors"))
    digest = hashlib.sha256((out / "backbone.safetensors").read_bytes()).hexdigest()
    meta = {
        "architecture": SHIPPED_ARCHITECTURE,
        "seed": args.seed,
        "tasks": list(tasks),
        "samples_per_task": args.samples_per_task,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "threads": args.threads,
        "torch": torch.__version__,
        "sha256": digest,
    }
    (out / "backbone.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out / 'backbone.safetensors'} sha256={digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

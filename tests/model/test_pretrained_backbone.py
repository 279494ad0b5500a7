"""The shipped backbone is a foundation model: adapters on it learn far faster than on random init."""

import json

import numpy as np
import pytest
import torch

from hffm_env import ConfigError
from hffm_env.data import DataConfig, make_federated_data
from hffm_env.model import ModelConfig, init_bank
from hffm_env.model import train as T
from hffm_env.model.backbone import SHIPPED_WEIGHTS, FrozenBackbone, build_vilt


def _fine_tune(backbone_kind: str) -> float:
    cfg = ModelConfig(backbone=backbone_kind, learning_rate=3e-3, weight_decay=0.0)
    dc = DataConfig(
        tasks=("scene_qa", "style_qa", "sensor"), pool_size=600, tasks_per_device=(1, 1), dirichlet_alpha=10.0
    )
    data = make_federated_data(dc, 4, seed=11)
    bb = FrozenBackbone(build_vilt(cfg))
    bank = init_bank(cfg, {t: len(data.pools[t].answers) for t in dc.tasks}, 4, torch.Generator().manual_seed(0))
    devs = np.arange(4)
    T.local_train(bb, bank, T.AdamState.zeros_like(bank), data, devs, devs, 40, 16, np.random.default_rng(0), cfg)
    acc = T.evaluate(bb, bank, data, devs, devs, cfg, split="test")
    return float(np.mean([a for per in acc.values() for a in per.values()]))


def test_pretrained_backbone_beats_random_init():
    pretrained, random = _fine_tune("default"), _fine_tune("random")
    assert pretrained > random + 0.10, (pretrained, random)


def test_shipped_file_is_small_and_described():
    assert SHIPPED_WEIGHTS.stat().st_size < 5 * 2**20
    meta = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text())
    import hashlib

    assert meta["sha256"] == hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert {"seed", "architecture", "tasks"} <= set(meta)


def test_backbone_choices_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="hidden_size must be 128 with backbone='default'"):
        ModelConfig(hidden_size=64)
    ModelConfig(backbone="random", hidden_size=64)
    with pytest.raises(ConfigError, match=r"num_layers \(the shipped backbone has 4\) must be an integer in \[1, 4\]"):
        ModelConfig(num_layers=5)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_vilt(ModelConfig(backbone=str(tmp_path / "nope")))
    # a user's own weights, from a local directory as save_pretrained writes it
    vilt = build_vilt(ModelConfig(backbone="random", hidden_size=32, num_heads=2, intermediate_size=64))
    vilt.save_pretrained(tmp_path / "mine")
    loaded = build_vilt(ModelConfig(backbone=str(tmp_path / "mine"), hidden_size=32, num_heads=2, intermediate_size=64))
    assert all(torch.equal(a, b) for a, b in zip(vilt.state_dict().values(), loaded.state_dict().values()))

"""The model layer: backbone fidelity, banks, and batched training that equals per-device training."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hffm_env.data import DataConfig, make_federated_data, task_spec
from hffm_env.model import ModelConfig, init_bank, m3t, payload_bytes
from hffm_env.model import train as T
from hffm_env.model.backbone import FrozenBackbone, build_vilt
from hffm_env.model.banks import EXPERT_PARAMS

MC = ModelConfig()
DC = DataConfig(tasks=("scene_qa", "sensor"), pool_size=240, tasks_per_device=(1, 2), dirichlet_alpha=1.0)


@pytest.fixture(scope="module")
def data():
    return make_federated_data(DC, 6, 0)


def _bank(data, dtype=torch.float32, n=6):
    answers = {t: len(data.pools[t].answers) for t in DC.tasks}
    return init_bank(MC, answers, n, torch.Generator().manual_seed(0), dtype)


def test_backbone_matches_vilt_forward_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    vilt = build_vilt(MC)
    assert torch.equal(state, torch.random.get_rng_state())
    bb = FrozenBackbone(vilt)
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(3, 200, (4, 12), generator=g)
    tok[:, 0] = 1
    am = torch.ones(4, 12, dtype=torch.long)
    am[:, 9:] = 0
    pix = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        ref = vilt(input_ids=tok, attention_mask=am, pixel_values=pix).pooler_output
        h = torch.cat([bb.embed_text(tok), bb.embed_image(pix)], 1)
        bias = bb.attention_bias(torch.cat([am, torch.ones(4, 17, dtype=torch.long)], 1), h.dtype)
        for layer in bb.layers[:-1]:
            h = layer(h, bias)
        full = bb.layers[-1](h, bias)
        first = bb.layers[-1](h, bias, first_only=True)  # what a pass computes of the last layer
        assert first.shape == (4, 1, MC.hidden_size)
        assert torch.allclose(first, full[:, :1], atol=1e-6)
        assert torch.allclose(bb.pool(full), ref, atol=1e-5)
        assert torch.allclose(bb.pool(first), ref, atol=1e-5)
    assert not any(p.requires_grad for p in bb.parameters())


def test_a_truncated_backbone_keeps_the_first_layers_of_the_shipped_one():
    full, two = build_vilt(MC), build_vilt(ModelConfig(num_layers=2))
    assert len(two.encoder.layer) == two.config.num_hidden_layers == 2
    kept = {k: v for k, v in full.state_dict().items() if not k.startswith(("encoder.layer.2.", "encoder.layer.3."))}
    assert kept.keys() == two.state_dict().keys()
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in kept.items())
    bb = FrozenBackbone(two)
    assert len(bb.layers) == bb.num_layers == 2


def test_bank_layout_and_payloads(data):
    bank = _bank(data)
    assert bank["adapters.down_w"].shape == (6, MC.num_layers, MC.hidden_size, 2 * MC.adapter_bottleneck)
    assert bank["heads.scene_qa.w"].shape == (6, MC.hidden_size, len(data.pools["scene_qa"].answers))
    assert torch.equal(bank["adapters.down_w"][0], bank["adapters.down_w"][5])  # one broadcast init
    sizes = payload_bytes(bank)
    assert set(sizes) == {
        "adapters",
        "prompts",
        "image_encoder",
        "text_encoder",
        "sensor_encoder",
        "experts",
        "gate",
        "heads.scene_qa",
        "heads.sensor",
    }
    assert sizes["adapters"] > sizes["heads.scene_qa"] > 0
    assert sizes["adapters"] == 4 * sum(bank[k][0].numel() for k in bank if k.startswith("adapters."))


def test_batched_training_equals_each_device_alone(data):
    """After k steps every device's modules equal those of the device trained alone
    with torch.optim.AdamW (float64: to rounding), and untrained heads are untouched."""
    bb = FrozenBackbone(build_vilt(MC).to(torch.float64))
    bank = _bank(data, torch.float64)
    start = {k: v.clone() for k, v in bank.items()}
    devs = np.arange(6)
    cfg = ModelConfig(learning_rate=1e-3, weight_decay=0.01)
    mask = np.ones((6, MC.n_experts), dtype=bool)
    mask[::2, 1:] = False  # even devices train expert 0 only
    T.local_train(
        bb, bank, T.AdamState.zeros_like(bank), data, devs, devs, 3, 4, np.random.default_rng(1), cfg, expert_mask=mask
    )
    plan = T.plan_batches(data, devs, 3, 4, np.random.default_rng(1))
    assert len({t for step in plan for _, t, _ in step}) == 2  # mixed tasks and modalities in one round
    for d in devs:
        params = {k: torch.nn.Parameter(v[d : d + 1].clone()) for k, v in start.items()}
        opt = torch.optim.AdamW(params.values(), lr=1e-3, weight_decay=0.01)
        for step in plan:
            for dd, task, idx in step:
                if dd != d:
                    continue
                inputs, labels = T.task_inputs(data, task, idx[None])
                mods = task_spec(task).modalities
                opt.zero_grad(set_to_none=True)
                logits = m3t.forward(bb, params, inputs, task, mods, MC.experts_top_k)
                F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
                for k, p in params.items():
                    if k not in T.trainable_names(params, task, mods):
                        p.grad = None
                frozen = {k: params[k].detach().clone() for k in EXPERT_PARAMS}
                opt.step()
                if not mask[d].all():  # a device alone simply does not train the other experts
                    with torch.no_grad():
                        for k in EXPERT_PARAMS:
                            params[k][0, ~torch.from_numpy(mask[d])] = frozen[k][0, ~torch.from_numpy(mask[d])]
        for k in bank:
            assert torch.allclose(bank[k][d], params[k][0].detach(), atol=1e-12, rtol=0), (d, k)
            if k.startswith("heads.") and k.split(".")[1] not in data.shards.tasks[d]:
                assert torch.equal(bank[k][d], start[k][d]), (d, k)
        mods = {m for t in data.shards.tasks[d] for m in task_spec(t).modalities}
        for m, kind in (("image", "image_encoder.w"), ("sensor", "sensor_encoder.w")):
            # a modality's encoder is trained exactly when the device has that modality
            assert torch.equal(bank[kind][d], start[kind][d]) == (m not in mods), (d, kind)
        assert not torch.equal(bank["adapters.up_w"][d], start["adapters.up_w"][d])
        if not mask[d].all():
            for k in EXPERT_PARAMS:
                assert torch.equal(bank[k][d, 1:], start[k][d, 1:]), (d, k)  # experts it does not train
            assert not torch.equal(bank["experts.down_w"][d, 0], start["experts.down_w"][d, 0])


def test_training_learns_and_evaluation_is_per_node_per_task(data):
    torch.manual_seed(0)  # irrelevant to the result: nothing below reads the global RNG
    bb = FrozenBackbone(build_vilt(MC))
    bank = _bank(data)
    devs = np.arange(6)
    cfg = ModelConfig(learning_rate=3e-3, weight_decay=0.0)
    before = T.evaluate(bb, bank, data, devs, devs, cfg, split="train")
    T.local_train(bb, bank, T.AdamState.zeros_like(bank), data, devs, devs, 40, 8, np.random.default_rng(0), cfg)
    after = T.evaluate(bb, bank, data, devs, devs, cfg, split="train")
    assert set(after) == set(map(int, devs))
    for d in devs:
        assert set(after[d]) == set(data.shards.tasks[d])
        assert all(0.0 <= a <= 1.0 for a in after[d].values())
    gain = np.mean([after[d][t] - before[d][t] for d in devs for t in after[d]])
    assert gain > 0.1


def test_no_prompts_and_image_only_tasks_train():
    from hffm_env.data import TaskData, register_task
    from hffm_env.data.synthetic import STYLES, render_scenes

    @register_task("style_from_pixels_test", modalities=("image",), answers=STYLES, replace=True)
    def build(n, rng, config):
        scene = render_scenes(rng, n, config.image_size)
        return TaskData("style_from_pixels_test", STYLES, scene["style"].astype(np.int64), image=scene["image"])

    cfg = ModelConfig(backbone="random", n_prompts=0)
    dc = DataConfig(tasks=("style_from_pixels_test", "sensor"), pool_size=200, tasks_per_device=(1, 2))
    fd = make_federated_data(dc, 4, 0)
    bank = init_bank(cfg, {t: len(fd.pools[t].answers) for t in dc.tasks}, 4, torch.Generator().manual_seed(0))
    bb = FrozenBackbone(build_vilt(cfg))
    devs = np.arange(4)
    losses = T.local_train(bb, bank, T.AdamState.zeros_like(bank), fd, devs, devs, 2, 4, np.random.default_rng(0), cfg)
    assert np.all(np.isfinite(losses))
    acc = T.evaluate(bb, bank, fd, devs, devs, cfg)
    assert all(0.0 <= a <= 1.0 for per in acc.values() for a in per.values())


def test_local_backbone_must_match_model_config(tmp_path):
    from hffm_env import ConfigError

    vilt = build_vilt(ModelConfig(backbone="random", hidden_size=32, num_heads=2, intermediate_size=64))
    vilt.save_pretrained(tmp_path / "small")
    with pytest.raises(ConfigError, match="hidden_size must be 32 to match the backbone"):
        build_vilt(ModelConfig(backbone=str(tmp_path / "small")))


def test_text_padding_columns_are_dropped_without_changing_the_logits(data):
    bb = FrozenBackbone(build_vilt(MC)).double()
    params = {n: v for n, v in _bank(data, torch.float64, n=2).items() if not n.startswith("heads.sensor")}
    idx = np.stack([data.shards.train[d]["scene_qa"][:3] for d in range(6) if "scene_qa" in data.shards.tasks[d]][:2])
    inputs, _ = T.task_inputs(data, "scene_qa", idx)
    modalities = task_spec("scene_qa").modalities
    full, width = inputs["attention"].shape[-1], int(inputs["attention"].sum(-1).max())
    assert width < full  # the pool pads its questions
    n_tokens = m3t.embed(bb, params, inputs, modalities)[0].shape[1]
    # one sample using every text column makes the whole pass run at full width
    wide = dict(inputs, attention=inputs["attention"].clone())
    wide["attention"][1, 2] = 1
    assert m3t.embed(bb, params, wide, modalities)[0].shape[1] == n_tokens + full - width
    with torch.no_grad():
        trimmed = m3t.forward(bb, params, inputs, "scene_qa", modalities)
        at_full = m3t.forward(bb, params, wide, "scene_qa", modalities)
    others = torch.ones(2, 3, dtype=torch.bool)
    others[1, 2] = False
    assert torch.allclose(trimmed[others], at_full[others], rtol=0, atol=1e-12)
    # a sample with no text token at all attends to every column: nothing is dropped
    empty = dict(inputs, attention=inputs["attention"].clone())
    empty["attention"][0, 0] = 0
    assert m3t.embed(bb, params, empty, modalities)[0].shape[1] == n_tokens + full - width


def test_finite_check_takes_huge_finite_values_as_finite_and_finds_each_bad_row():
    """The all-finite fast path (one norm per tensor) must not mistake values whose
    norm overflows for non-finite ones, nor miss a bad element anywhere in a row."""
    huge = torch.full((3, 4, 5), 3e38)
    assert T._finite_holders([huge, torch.ones(3, 2)], 3).tolist() == [True, True, True]
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
        x[1, 6] = bad
        assert T._finite_holders([huge, x], 3).tolist() == [True, False, True]


@pytest.mark.parametrize("where", ["grad", "module"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_holder_with_a_non_finite_update_skips_its_step_and_the_others_do_not_notice(data, bad, where):
    """adamw_update: the holder whose gradient or module holds NaN or ±inf keeps its
    rows and optimiser state exactly; every other holder's update equals the clean one."""
    bank = _bank(data)
    names = ["adapters.down_w", "heads.scene_qa.b", "experts.up_w"]
    holders = torch.tensor([0, 2, 3, 5])
    g = torch.Generator().manual_seed(4)
    grads = {n: torch.randn(bank[n][holders].shape, generator=g) for n in names}
    clean_bank = {k: v.clone() for k, v in bank.items()}
    clean_state = T.AdamState.zeros_like(bank)
    assert not T.adamw_update(clean_bank, clean_state, holders, grads, 1e-3, 0.01).any()
    poisoned = {n: t.clone() for n, t in grads.items()}
    if where == "grad":
        poisoned["heads.scene_qa.b"][1, 3] = bad  # holder 2
    else:
        bank["heads.scene_qa.b"][2, 3] = bad
    state = T.AdamState.zeros_like(bank)
    before = {k: v.clone() for k, v in bank.items()}
    skipped = T.adamw_update(bank, state, holders, poisoned, 1e-3, 0.01)
    assert skipped.tolist() == [False, True, False, False]
    for n in names:
        assert torch.allclose(bank[n][2], before[n][2], rtol=0, atol=0, equal_nan=True)
        assert int(state.step[n][2].max()) == 0
        assert not state.v[n][2].any() and not state.m[n][2].any()
        for r in (0, 3, 5):
            assert torch.equal(bank[n][r], clean_bank[n][r]) and torch.equal(state.v[n][r], clean_state.v[n][r])


def test_bfloat16_backbone_runs_the_matmuls_low_and_keeps_the_modules_float32(data):
    """backbone_dtype='bfloat16': the layers' projections are bf16 copies, the pass and
    the trainable modules stay float32, the logits stay close to the float32 backbone's,
    and the modules still learn."""
    from hffm_env import ConfigError

    with pytest.raises(ConfigError, match="backbone_dtype must be one of 'float32', 'bfloat16'"):
        ModelConfig(backbone_dtype="float16")
    vilt = build_vilt(MC)
    fp32, bf16 = FrozenBackbone(vilt), FrozenBackbone(vilt, compute_dtype=torch.bfloat16)
    assert all(b.dtype == torch.bfloat16 for b in bf16.layers.buffers())
    # at float32 the layers read the ViLT's weights; only the stacked q/k/v copy is their own
    assert {n.rsplit(".", 1)[-1] for n, _ in fp32.layers.named_buffers()} == {"qkv_w", "qkv_b"}
    assert not any(p.requires_grad for p in bf16.parameters())
    bank = _bank(data)
    idx = np.stack([data.shards.train[d]["scene_qa"][:8] for d in range(6) if "scene_qa" in data.shards.tasks[d]][:3])
    inputs, labels = T.task_inputs(data, "scene_qa", idx)
    rows = torch.arange(3)
    params = {n: bank[n][rows] for n in T.used_names(bank, "scene_qa")}
    modalities = task_spec("scene_qa").modalities
    with torch.no_grad():
        ref = m3t.forward(fp32, params, inputs, "scene_qa", modalities)
        low = m3t.forward(bf16, params, inputs, "scene_qa", modalities)
    assert low.dtype == torch.float32
    assert 0 < float((low - ref).norm() / ref.norm()) < 0.05
    cfg = ModelConfig(learning_rate=3e-3, weight_decay=0.0, backbone_dtype="bfloat16")
    devs = np.arange(6)
    before = T.evaluate(bf16, bank, data, devs, devs, cfg, split="train")
    T.local_train(bf16, bank, T.AdamState.zeros_like(bank), data, devs, devs, 40, 8, np.random.default_rng(0), cfg)
    after = T.evaluate(bf16, bank, data, devs, devs, cfg, split="train")
    assert all(t.dtype == torch.float32 for t in bank.values())
    assert np.mean([after[d][t] - before[d][t] for d in devs for t in after[d]]) > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_pass_without_a_graph_gives_the_logits_of_one_with_bit_for_bit(data, dtype):
    """Without a graph the layers run q, k and v as one stacked matmul; the logits must
    equal, bit for bit, those of a pass whose leaves require grad (three matmuls)."""
    backbone = FrozenBackbone(build_vilt(MC), compute_dtype=dtype)
    bank = _bank(data)
    for task in ("scene_qa", "sensor"):
        holders = [d for d in range(6) if task in data.shards.tasks[d]][:3]
        idx = np.stack([data.shards.train[d][task][:5] for d in holders])
        inputs, _ = T.task_inputs(data, task, idx)
        names = T.used_names(bank, task)
        rows = torch.as_tensor(holders)
        leaves = {n: bank[n][rows].clone().requires_grad_(True) for n in names}
        with_graph = m3t.forward(backbone, leaves, inputs, task, task_spec(task).modalities)
        assert with_graph.requires_grad
        with torch.inference_mode():
            without = m3t.forward(backbone, {n: bank[n][rows] for n in names}, inputs, task, task_spec(task).modalities)
        assert torch.equal(with_graph.detach(), without)


def test_each_device_trains_only_its_own_kinds_in_one_pass(data):
    """``only_kinds`` per device: a kind a device does not own keeps its values and
    optimiser state on that device, while the device beside it trains it."""
    bb = FrozenBackbone(build_vilt(MC))
    bank = _bank(data)
    start = {k: v.clone() for k, v in bank.items()}
    adam = T.AdamState.zeros_like(bank)
    devs = np.array([0, 1])
    T.local_train(
        bb,
        bank,
        adam,
        data,
        devs,
        devs,
        2,
        4,
        np.random.default_rng(0),
        MC,
        only_kinds=[("adapters",), ("prompts", "experts")],
    )
    changed = {k: [not torch.equal(bank[k][d], start[k][d]) for d in devs] for k in bank}
    assert changed["adapters.down_w"] == [True, False]
    assert changed["prompts.tokens"] == [False, True]
    assert changed["experts.down_w"] == [False, True]
    assert all(changed[k] == [False, False] for k in bank if k.startswith("heads."))
    assert adam.step["adapters.down_w"][:2].tolist() == [2, 0]
    assert adam.step["prompts.tokens"][:2].tolist() == [0, 2]
    assert float(adam.m["adapters.down_w"][1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="one tuple per device"):
        T.local_train(bb, bank, adam, data, devs, devs, 1, 4, np.random.default_rng(0), MC, only_kinds=[("adapters",)])


def test_a_module_kind_name_is_read_once_into_family_task_and_modality():
    from hffm_env.model.banks import head_kind, parse_kind

    head = parse_kind(head_kind("scene_qa"))
    assert (head.family, head.task, head.modality, head.is_head) == ("heads", "scene_qa", None, True)
    enc = parse_kind("sensor_encoder")
    assert (enc.family, enc.modality, enc.is_encoder) == ("encoders", "sensor", True)
    assert parse_kind("gate").family == "gate" and parse_kind("gate").in_group(("experts", "gate"))
    assert head.in_group(("heads",)) and enc.in_group(("encoders",)) and not enc.in_group(("heads", "adapters"))
    for bad in ("heads", "heads.", "audio_encoder", "adapter"):
        with pytest.raises(ValueError, match="module kind must be"):
            parse_kind(bad)

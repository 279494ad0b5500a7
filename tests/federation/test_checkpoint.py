"""Checkpoints: a saved federation loads back exactly, and every bad file fails clearly without touching the run."""

import copy
import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hffm_env import make_scenario
from hffm_env.federation import Aggregate, Federation, Specialize, checkpoint
from hffm_env.federation.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _fed(seed=0, **ov):
    return Federation(make_scenario("tiny", **ov), seed=seed)


def _run(fed, rounds, scope="edge"):
    for _ in range(rounds):
        fed.run_round([Aggregate(fed.kinds, scope)])
    return fed


def _snapshot(fed):
    """Everything a load may change, deep-copied."""
    banks = {
        p: {n: t.clone() for n, t in b.items()}
        for p, b in (
            ("bank", fed.bank),
            ("synced", fed.synced),
            ("m", fed.adam.m),
            ("v", fed.adam.v),
            ("step", fed.adam.step),
        )
    }
    arrays = {k: getattr(fed, k).copy() for k in ("last_sync", "last_train", "trained_ever", "expert_mask")}
    mem = fed.members
    members = (
        mem.active.copy(),
        copy.deepcopy(mem.modalities),
        copy.deepcopy(mem.tasks),
        [{t: i.tolist() for t, i in x.items()} for x in mem.train],
        [{t: i.tolist() for t, i in x.items()} for x in mem.test],
        mem.version,
    )
    other = (
        sorted(fed.roles.specialists),
        dict(fed.roles.attack),
        copy.deepcopy(fed.accuracy),
        list(fed.cold_starts),
        fed.requests.device.tolist(),
        fed.requests.task,
        fed.requests.sample.tolist(),
        fed.round_index,
    )
    return banks, arrays, members, other


def _assert_same(a, b):
    (banks_a, arr_a, mem_a, other_a), (banks_b, arr_b, mem_b, other_b) = a, b
    for p in banks_a:
        for n in banks_a[p]:
            assert torch.equal(banks_a[p][n], banks_b[p][n]), (p, n)
    for k in arr_a:
        assert np.array_equal(arr_a[k], arr_b[k]), k
    assert np.array_equal(mem_a[0], mem_b[0])
    assert mem_a[1:] == mem_b[1:]
    assert other_a == other_b


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A federation after two rounds with a specialist and an adversary, and its checkpoint."""
    fed = _fed()
    sensor_holder = int(np.nonzero(fed.holds("heads.sensor"))[0][0])
    fed.set_attack(3, "scaling", 2.0)
    fed.run_round([Specialize(sensor_holder, "heads.sensor"), Aggregate(fed.kinds, "edge")])
    fed.run_round([Aggregate(("adapters", "heads"), "cloud")])
    path = tmp_path_factory.mktemp("ckpt") / "fed.safetensors"
    save_checkpoint(fed, path)
    return fed, path


def _rewrite(src, dst, edit):
    """Copy a checkpoint with its tensors and metadata edited by hand."""
    with safe_open(src, framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    edit(tensors, meta)
    save_file(tensors, dst, metadata=meta)
    return dst


# ---------------------------------------------------------------------- round trip
def test_round_trip_restores_banks_optimiser_roles_members_and_accuracy(saved):
    src, path = saved
    fed = _fed()
    load_checkpoint(fed, path)
    for name in src.bank:
        assert torch.equal(fed.bank[name], src.bank[name]), name
        assert torch.equal(fed.synced[name], src.synced[name]), name
        assert torch.equal(fed.adam.m[name], src.adam.m[name]), name
        assert torch.equal(fed.adam.v[name], src.adam.v[name]), name
        assert torch.equal(fed.adam.step[name], src.adam.step[name]), name
    assert np.array_equal(fed.trained_ever, src.trained_ever)
    assert np.array_equal(fed.expert_mask, src.expert_mask)
    assert fed.roles.specialists == src.roles.specialists and fed.roles.attack == {3: ("scaling", 2.0)}
    assert fed.members.tasks == src.members.tasks and fed.members.modalities == src.members.modalities
    assert all(
        np.array_equal(fed.members.train[d][t], src.members.train[d][t])
        for d in range(fed.n_devices)
        for t in src.members.train[d]
    )
    assert fed.accuracy == src.accuracy
    assert fed.evaluate() == src.evaluate()


def test_staleness_is_kept_relative_to_the_loading_run(saved):
    src, path = saved
    fed = _run(_fed(), 4, scope="d2d")  # a run further on (round 3, src saved at round 1)
    load_checkpoint(fed, path)
    for name in ("last_sync", "last_train"):
        here, there = getattr(fed, name), getattr(src, name)
        assert np.array_equal(here < 0, there < 0), name
        assert np.array_equal(
            np.where(here >= 0, fed.round_index - here, -1), np.where(there >= 0, src.round_index - there, -1)
        ), name


def test_loaded_run_continues_like_the_saved_one_given_the_same_random_state(saved):
    src, path = saved
    a = _run(_fed(), 2)  # same seed, same channel rounds, different learned state
    b = copy.deepcopy(src)
    load_checkpoint(a, path)
    a.rng.bit_generator.state = b.rng.bit_generator.state
    a.event_rng.bit_generator.state = b.event_rng.bit_generator.state
    a.torch_gen.set_state(b.torch_gen.get_state())
    ra = a.run_round([Aggregate(a.kinds, "cloud")])
    rb = b.run_round([Aggregate(b.kinds, "cloud")])
    for name in a.bank:
        assert torch.equal(a.bank[name], b.bank[name]), name
    assert ra.accuracy == rb.accuracy and ra.train_loss == rb.train_loss


# ---------------------------------------------------------------------- mismatched runs
def test_other_config_or_seed_fails_naming_the_fields_and_changes_nothing(saved):
    _, path = saved
    fed = _run(_fed(federation__local_steps=2), 1)
    before = _snapshot(fed)
    with pytest.raises(CheckpointError, match=r"federation\.local_steps: checkpoint 1, this run 2") as err:
        load_checkpoint(fed, path)
    assert str(path) in str(err.value)
    _assert_same(before, _snapshot(fed))
    other_seed = _fed(seed=1)
    with pytest.raises(CheckpointError, match=r"seed: checkpoint 0, this run 1"):
        load_checkpoint(other_seed, path)


def test_other_model_size_fails_naming_the_field(tmp_path):
    small = _fed(model__adapter_bottleneck=8)
    path = tmp_path / "small.safetensors"
    save_checkpoint(small, path)
    fed = _fed()
    before = _snapshot(fed)
    with pytest.raises(CheckpointError, match=r"model\.adapter_bottleneck: checkpoint 8, this run 16"):
        load_checkpoint(fed, path)
    _assert_same(before, _snapshot(fed))


# ---------------------------------------------------------------------- bad files
def test_truncated_file_fails_clearly_and_changes_nothing(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.safetensors"
    raw = path.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    fed = _fed()
    before = _snapshot(fed)
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as err:
        load_checkpoint(fed, cut)
    assert str(cut) in str(err.value)
    _assert_same(before, _snapshot(fed))


def test_a_file_of_another_format_fails(saved, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"PK\x03\x04 this is a zip, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(_fed(), junk)
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not an hffm_env federation checkpoint"):
        load_checkpoint(_fed(), other)


def _shape(t, m):
    t["bank/heads.sensor.w"] = t["bank/heads.sensor.w"][:, :, :-1].contiguous()


def _dtype(t, m):
    t["adam.m/adapters.down_w"] = t["adam.m/adapters.down_w"].double()


def _missing(t, m):
    del t["synced/prompts.tokens"]


def _flipped(t, m):
    t["adam.v/experts.gate_w"][0, 0, 0] += 1.0


def _version(t, m):
    m["format_version"] = "99"


def _bad_index(t, m):
    """An index past the task's pool, in a file whose digests agree (made, not damaged)."""
    key = "members/test/0/scene_qa"
    t[key][0] = 10**6
    digests = json.loads(m["sha256"])
    digests[key] = checkpoint._digest(t[key])
    m["sha256"] = json.dumps(digests)


def _bad_role(t, m):
    m["roles"] = json.dumps({"specialists": [[0, "heads.weather"]], "attack": []})


@pytest.mark.parametrize(
    "edit, message",
    [
        (_shape, r"tensor 'bank/heads\.sensor\.w' has shape \[11, 128, 5\], expected \[11, 128, 6\]"),
        (_dtype, r"tensor 'adam\.m/adapters\.down_w' has dtype torch\.float64, expected torch\.float32"),
        (_missing, r"tensor 'synced/prompts\.tokens' is missing"),
        (_flipped, r"tensor 'adam\.v/experts\.gate_w' does not match its SHA-256 digest"),
        (_version, r"format_version '99' is not supported"),
        (_bad_index, r"tensor 'members/test/0/scene_qa' holds indices outside \[0, 1599\]"),
        (_bad_role, r"roles\.specialists\[0\] must be \[device, kind\] with kind among"),
    ],
    ids=["shape", "dtype", "missing", "corrupt", "version", "index", "role"],
)
def test_hand_edited_checkpoint_fails_naming_the_culprit_and_changes_nothing(saved, tmp_path, edit, message):
    _, path = saved
    bad = _rewrite(path, tmp_path / "bad.safetensors", edit)
    fed = _run(_fed(), 1)
    before = _snapshot(fed)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(fed, bad)
    assert str(bad) in str(err.value)
    _assert_same(before, _snapshot(fed))


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(_fed(), tmp_path / "nowhere.safetensors")


# ---------------------------------------------------------------------- saving
def test_failed_save_keeps_the_previous_checkpoint(saved, tmp_path, monkeypatch):
    src, _ = saved
    path = tmp_path / "fed.safetensors"
    save_checkpoint(_fed(), path)
    good = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(src, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["fed.safetensors"]  # no temporary file left behind


def test_metadata_is_json_text(saved):
    _, path = saved
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "hffm_env.federation.checkpoint" and meta["format_version"] == "1"
    assert json.loads(meta["seed"]) == 0 and json.loads(meta["round_index"]) == 1
    assert json.loads(meta["scenario"])["federation.local_steps"] == 1
    assert json.loads(meta["roles"])["attack"] == [[3, "scaling", 2.0]]


def test_open_round_refuses_save_and_load(saved, tmp_path):
    _, path = saved
    fed = _fed()
    fed.begin_round()
    fed.train()
    before = _snapshot(fed)
    with pytest.raises(CheckpointError, match="round 0 is still open"):
        load_checkpoint(fed, path)
    _assert_same(before, _snapshot(fed))
    with pytest.raises(CheckpointError, match="still open"):
        save_checkpoint(fed, tmp_path / "open.safetensors")
    assert not (tmp_path / "open.safetensors").exists()


# ---------------------------------------------------------------------- the Gymnasium env
def test_env_saves_and_loads_its_federation(tmp_path):
    path = tmp_path / "env.safetensors"
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__max_rounds=5)
    with pytest.raises(RuntimeError, match="before reset"):
        env.unwrapped.save_checkpoint(path)
    env.reset(seed=4)
    for _ in range(2):
        env.step(np.zeros_like(env.action_space.nvec))  # every cluster: no aggregation
    env.unwrapped.save_checkpoint(path)

    other = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__max_rounds=5)
    other.reset(seed=4)
    other.unwrapped.load_checkpoint(path)
    a, b = env.unwrapped.federation, other.unwrapped.federation
    assert all(torch.equal(a.bank[n], b.bank[n]) for n in a.bank)
    assert other.unwrapped.core.mean_score == env.unwrapped.core.mean_score
    obs, *_ = other.step(np.full_like(other.action_space.nvec, 2))  # every cluster: edge aggregation
    assert other.observation_space.contains(obs)

    third = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__max_rounds=5)
    third.reset(seed=5)
    with pytest.raises(CheckpointError, match="seed: checkpoint"):
        third.unwrapped.load_checkpoint(path)

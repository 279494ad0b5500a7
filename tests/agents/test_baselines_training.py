"""Baselines on every id they apply to; hffm train / evaluate as a user runs them; the multi-agent path."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest

import hffm_env
from agents import BASELINES, applies, make_policy, schedule_from_key
from evaluation.evaluate import run_episode
from hffm_cli.main import main as hffm

EXTRA = ("relay_nearest", "specialize_most_data", "offload_cheapest", "local_only")


@pytest.mark.parametrize("env_id", list(hffm_env.ENV_IDS))
def test_every_baseline_runs_an_episode_without_masked_choices(env_id):
    for name in BASELINES + EXTRA:
        if not applies(name, env_id):
            continue
        env = gym.make(env_id, preset="tiny", env__max_rounds=2, env__invalid_action="raise")
        ep = run_episode(env, make_policy(name, env), seed=10_000)
        assert len(ep.accuracy) == 2 and np.isfinite(ep.ret), name


def test_schedule_policies_follow_table1_levels():
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__max_rounds=4)
    obs, _ = env.reset(seed=0)
    p = make_policy("hfm_d2d_2", env)
    first, _ = p.predict(obs)
    env.step(first)
    second, _ = p.predict(obs)
    assert set(first) == {1} and set(second) == {5}  # D2D consensus, then cloud via the heads
    star, _ = make_policy("star", env).predict(obs)
    assert set(star) == {6}
    assert schedule_from_key("hfm_4").periods == (1, 4)
    # periodic averaging: D2D consensus in every third round only, nothing in between
    env.reset(seed=0)
    every3 = make_policy("d2d_every_3", env)
    codes = []
    for _ in range(4):
        a, _ = every3.predict(obs)
        codes.append(set(a.tolist()))
        obs, *_ = env.step(a)
    assert codes == [{0}, {0}, {1}, {0}]
    for bad in ("hfm_0", "d2d_every_0", "edge_every_x"):
        with pytest.raises(ValueError, match="schedule must be"):
            schedule_from_key(bad)
    with pytest.raises(ValueError, match="policy must be one of"):
        make_policy("oracle", env)


def test_train_writes_a_loadable_model(tmp_path):
    from stable_baselines3 import PPO

    out = tmp_path / "ppo"
    assert (
        hffm(
            [
                "train",
                "--algo",
                "ppo",
                "--steps",
                "64",
                "--n-steps",
                "32",
                "--batch-size",
                "32",
                "--n-epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "env__max_rounds=8",
            ]
        )
        == 0
    )
    model = PPO.load(str(out / "model.zip"))
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny")
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs)
    assert env.action_space.contains(action)
    assert json.loads((out / "run.json").read_text())["overrides"] == {"env__max_rounds": 8}
    assert list((out / "monitor").glob("*.csv")) and (out / "tb").is_dir()


def test_train_maskable_ppo_with_two_subprocess_envs(tmp_path):
    out = tmp_path / "mppo"
    assert (
        hffm(
            [
                "train",
                "--algo",
                "maskable_ppo",
                "--steps",
                "64",
                "--n-steps",
                "16",
                "--batch-size",
                "32",
                "--n-epochs",
                "1",
                "--n-envs",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    from sb3_contrib import MaskablePPO

    from evaluation.evaluate import load_sb3_model

    env = gym.make("hffm_env/Aggregation-v0", preset="tiny")
    obs, _ = env.reset(seed=1)
    model = load_sb3_model(MaskablePPO, out / "model.zip", env)
    action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks())
    assert env.action_space.contains(action)


def test_train_rejects_dqn_and_eval_seeds(capsys):
    assert hffm(["train", "--algo", "dqn", "--steps", "10"]) == 2
    assert "needs a Discrete action space" in capsys.readouterr().err
    assert hffm(["train", "--seed", "10000", "--steps", "10"]) == 2
    assert "evaluation holds out seeds" in capsys.readouterr().err


def test_multi_agent_parameter_sharing_trains(tmp_path):
    out = tmp_path / "ma"
    assert (
        hffm(
            [
                "train",
                "--env",
                "hffm_v0",
                "--algo",
                "ppo",
                "--steps",
                "64",
                "--n-steps",
                "16",
                "--batch-size",
                "32",
                "--n-epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "env__max_rounds=4",
            ]
        )
        == 0
    )
    assert (out / "model.zip").is_file()
    # hffm evaluate scores the shared policy against the fixed ones through the PettingZoo env
    ev = tmp_path / "ev"
    argv = ["evaluate", "--env", "hffm_v0", "--seeds", "2", "--out", str(ev), "--set", "env__max_rounds=2"]
    assert hffm([*argv, "--policies", f"{out / 'model.zip'},hfm_2,random"]) == 0
    with open(ev / "table.csv") as f:
        rows = {r["policy"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"ppo:ma", "hfm_2", "random", "default"}
    for r in rows.values():
        assert np.isfinite(float(r["return_mean"])) and r["baseline"] == "default"
        # shared reward: each edge agent's return is the team's
        assert float(r["return_edge_0"]) == pytest.approx(float(r["return_mean"]))
    assert "Return per agent" in (ev / "table.md").read_text()


def test_multi_agent_evaluation_of_a_schedule_is_the_single_agent_ones():
    """Every edge agent playing its cluster's part of a schedule is the schedule on
    Aggregation-v0: the same federation seeds, the same returns."""
    from evaluation.evaluate import _play, _play_multiagent

    class Bar:
        def update(self, n=1):
            pass

    ov = {"env__max_rounds": 2}
    single, _, _ = _play("hffm_env/Aggregation-v0", "tiny", 2, ["hfm_d2d_2", "random"], ov, 2, Bar())
    multi, _, _ = _play_multiagent("hffm_v0", "tiny", 2, ["hfm_d2d_2"], ov, 2, Bar())
    assert [e.ret for e in multi["hfm_d2d_2"]] == pytest.approx([e.ret for e in single["hfm_d2d_2"]], abs=1e-12)
    assert [e.ret for e in multi["hfm_d2d_2"]] != [e.ret for e in single["random"]]


def test_evaluate_writes_table_with_every_row(tmp_path, capsys):
    out = tmp_path / "ev"
    model_dir = tmp_path / "m"
    assert (
        hffm(
            [
                "train",
                "--algo",
                "a2c",
                "--steps",
                "16",
                "--n-steps",
                "8",
                "--out",
                str(model_dir),
                "--no-progress",
                "--set",
                "env__max_rounds=2",
            ]
        )
        == 0
    )
    policies = "star,edge_only,random," + str(model_dir / "model.zip")
    assert (
        hffm(["evaluate", "--seeds", "2", "--policies", policies, "--out", str(out), "--set", "env__max_rounds=2"]) == 0
    )
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    # the baseline (the env's default policy) is run too, on the same seeds
    assert [r["policy"] for r in rows] == ["star", "edge_only", "random", "a2c:m", "default"]
    assert all(int(r["episodes"]) == 2 for r in rows)
    assert {"return_mean", "return_ci95", "paired_diff_mean", "paired_diff_ci95"} <= set(rows[0])
    assert all(r["baseline"] == "default" for r in rows)
    assert float(rows[-1]["paired_diff_mean"]) == 0.0
    md = (out / "table.md").read_text()
    assert "± " in md and "a2c:m" in md and "(baseline)" in md
    for name in ("accuracy_vs_energy.png", "pareto.png", "learning_curves.png"):
        assert (out / name).stat().st_size > 1000, name
    assert hffm(["evaluate", "--seeds", "1", "--policies", "nonsense", "--out", str(out)]) == 2


def test_paired_differences_against_the_baseline(tmp_path):
    """Per seed, the policy's return minus the baseline's on that seed: the mean of
    those differences, and a CI that is narrower than the unpaired ones when the
    seeds move both policies together."""
    from evaluation.evaluate import evaluate, mean_ci

    common = dict(
        env_id="hffm_env/Aggregation-v0", preset="tiny", seeds=3, progress=False, overrides={"env__max_rounds": 2}
    )
    rows = evaluate(policies=["edge_only", "star", "local_only"], out=tmp_path / "a", baseline="best", **common)
    by = {r["policy"]: r for r in rows}
    best = max(("edge_only", "star", "local_only"), key=lambda n: by[n]["return_mean"])
    assert all(r["baseline"] == best for r in rows)
    assert by[best]["paired_diff_mean"] == 0.0
    # the same seeds: a paired mean is the difference of the means
    for r in rows:
        assert r["paired_diff_mean"] == pytest.approx(r["return_mean"] - by[best]["return_mean"], abs=1e-9)
    assert all(r["paired_diff_mean"] <= 0.0 for r in rows)
    # recomputed from single-policy episodes on the same seeds
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__max_rounds=2)
    ret = {n: [run_episode(env, make_policy(n, env), 10_000 + i).ret for i in range(3)] for n in ("star", best)}
    diff = mean_ci(np.subtract(ret["star"], ret[best]))
    assert by["star"]["paired_diff_mean"] == pytest.approx(diff[0]) and by["star"]["paired_diff_ci95"] == pytest.approx(
        diff[1]
    )
    with pytest.raises(ValueError, match="policy must be one of"):
        evaluate(policies=["star"], out=tmp_path / "b", baseline="oracle", **common)


def test_default_policy_is_the_envs_own_default():
    """``default`` plays the env's default schedule and every other block's fallback:
    on Relaying-v0 it never relays, on Aggregation-v0 it is ``env.default_schedule``."""
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__default_schedule="edge_only")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(
        make_policy("default", env).predict(obs)[0], make_policy("edge_only", env).predict(obs)[0]
    )
    env = gym.make("hffm_env/Relaying-v0", preset="tiny")
    obs, _ = env.reset(seed=0)
    core = env.unwrapped.core
    action, _ = make_policy("default", env).predict(obs)
    np.testing.assert_array_equal(action, core.codec.default_choices("relaying"))
    assert "default" in BASELINES and all(applies("default", i) for i in hffm_env.ENV_IDS)


class _Touch:
    """A pickle that creates a file when unpickled (stands in for a malicious payload)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_saved_models_load_without_unpickling(tmp_path):
    import base64
    import pickle
    import zipfile

    from stable_baselines3 import PPO

    from evaluation.evaluate import load_sb3_model

    out = tmp_path / "ppo"
    assert (
        hffm(
            [
                "train",
                "--algo",
                "ppo",
                "--steps",
                "16",
                "--n-steps",
                "16",
                "--batch-size",
                "16",
                "--n-epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "env__max_rounds=4",
            ]
        )
        == 0
    )
    marker = tmp_path / "pwned"
    evil = base64.b64encode(pickle.dumps(_Touch(marker))).decode()

    def rewrite(name, edit):
        src, dst = out / "model.zip", tmp_path / name
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for item in zin.namelist():
                blob = zin.read(item)
                if item == "data":
                    data = json.loads(blob)
                    edit(data)
                    blob = json.dumps(data).encode()
                zout.writestr(item, blob)
        return dst

    tampered = rewrite("tampered.zip", lambda d: d["lr_schedule"].update({":serialized:": evil}))
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny")
    model = load_sb3_model(PPO, tampered, env)
    assert not marker.exists()  # the payload never ran
    obs, _ = env.reset(seed=1)
    assert env.action_space.contains(model.predict(obs)[0])
    extra = rewrite("extra.zip", lambda d: d.update({"surprise": {":type:": "x", ":serialized:": evil}}))
    with pytest.raises(ValueError, match="surprise"):
        load_sb3_model(PPO, extra, env)
    assert not marker.exists()

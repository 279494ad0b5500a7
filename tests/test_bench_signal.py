"""The signal benchmark: its re-drawn evaluation sets, that measuring the noise leaves
the episode as it was, and the row it reports."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import hffm_env  # noqa: F401  (registers the ids)
from agents import SCHEDULE_KEYS, BasePolicy, make_policy
from benchmarks import bench_signal
from hffm_cli.main import main as hffm

torch.set_num_threads(1)

ENV_ID = "hffm_env/Relaying-v0"  # events on: shares change during the episode


def _env(**overrides):
    return gym.make(ENV_ID, preset="tiny", env__max_rounds=3, **overrides)


def test_redrawn_sets_have_the_configured_sizes_and_come_from_the_held_out_part():
    env = _env()
    policy = BasePolicy(env)
    obs, _ = env.reset(seed=bench_signal.EVAL_SEED_BASE)
    env.step(policy.predict(obs)[0])
    fed = env.unwrapped.core.fed
    shards = fed.eval_shards()
    a = bench_signal.redraw_eval_set(fed, np.random.default_rng([1, 2, 3]))
    b = bench_signal.redraw_eval_set(fed, np.random.default_rng([1, 2, 4]))
    assert len(a) == len(shards)
    for d, per in enumerate(shards):
        assert set(a[d]) == set(per)
        for task, idx in per.items():
            assert len(a[d][task]) == len(idx) == len(fed.members.test[d][task][: fed.config.eval_max_samples])
            assert np.isin(a[d][task], fed.data.shards.test_part[task]).all()
    for task, part in fed.data.shards.test_part.items():
        drawn = np.concatenate([x[task] for x in a if task in x])
        if len(drawn) <= len(part):
            assert len(np.unique(drawn)) == len(drawn)  # slices of one permutation
    assert any(not np.array_equal(a[d][t], b[d][t]) for d in range(len(a)) for t in a[d])
    again = bench_signal.redraw_eval_set(fed, np.random.default_rng([1, 2, 3]))
    assert all(np.array_equal(a[d][t], again[d][t]) for d in range(len(a)) for t in a[d])


def test_measuring_the_noise_leaves_the_episode_unchanged():
    env = _env()
    policy = BasePolicy(env)
    plain, none = bench_signal.run_episode(env, policy, bench_signal.EVAL_SEED_BASE)
    bank = env.unwrapped.core.fed.bank
    final = {n: t.clone() for n, t in bank.items()}
    measured, variances = bench_signal.run_episode(env, policy, bench_signal.EVAL_SEED_BASE, redraws=2)
    fed = env.unwrapped.core.fed
    assert none == [] and len(plain) == len(variances) == 3
    assert measured == plain  # exactly: same trajectory
    assert all(torch.equal(fed.bank[n], final[n]) for n in final)
    assert all(v >= 0 and math.isfinite(v) for v in variances) and max(variances) > 0


@pytest.mark.parametrize("key", SCHEDULE_KEYS)
def test_the_base_policy_plays_the_default_schedule_in_the_aggregation_block(key):
    env = gym.make("hffm_env/Aggregation-v0", preset="tiny", env__default_schedule=key, env__max_rounds=2)
    base, schedule = BasePolicy(env), make_policy(key, env)
    obs, _ = env.reset(seed=0)
    for _ in range(2):
        action = base.predict(obs)[0]
        assert np.array_equal(action, schedule.predict(obs)[0])
        obs, *_ = env.step(action)


def test_the_row_reports_noise_gap_and_the_schedules():
    row = bench_signal.measure_id(ENV_ID, "tiny", seeds=2, redraws=2, rounds=3, schedules=("star", "edge_only"))
    assert row["env_id"] == ENV_ID and row["preset"] == "tiny"
    assert (row["rounds"], row["seeds"], row["redraws"]) == (3, 2, 2)
    assert 0 < row["noise"] < math.inf
    assert set(row["schedule_means"]) == {"star", "edge_only"} and {row["best"], row["worst"]} == {"star", "edge_only"}
    means = row["schedule_means"]
    assert row["gap"] == pytest.approx(means[row["best"]] - means[row["worst"]]) and row["gap"] >= 0
    assert row["noise_over_gap"] == pytest.approx(row["noise"] / row["gap"])
    with pytest.raises(ValueError, match="edge_only"):
        bench_signal.measure_id(ENV_ID, "tiny", seeds=1, redraws=2, rounds=1, schedules=("star",))
    assert bench_signal.worst_row([{"noise_over_gap": 0.2}, {"noise_over_gap": math.inf}])["noise_over_gap"] == math.inf


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--redraws", "1"], "--redraws"),
        (["--seeds", "0"], "--seeds"),
        (["--rounds", "0"], "--rounds"),
        (["--presets", "huge"], "--presets"),
        (["--ids", "hffm_env/Nope-v0"], "--ids"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, capsys):
    assert hffm(["bench", "signal", *argv]) == 2
    assert flag in capsys.readouterr().err


def test_main_prints_each_row_to_stderr_as_soon_as_it_is_measured(capsys):
    assert (
        bench_signal.main(
            presets=("tiny",),
            seeds=1,
            redraws=2,
            rounds=1,
            env_ids=(ENV_ID,),
            schedules=("star", "edge_only"),
            json_out=True,
        )
        == 0
    )
    out, err = capsys.readouterr()
    line = next(x for x in err.splitlines() if x.startswith("bench signal: row "))
    row = json.loads(line[len("bench signal: row ") :])
    assert row["env_id"] == ENV_ID and row == json.loads(out)["rows"][0]

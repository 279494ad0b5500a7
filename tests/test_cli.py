"""The ``hffm`` command line as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hffm_cli.main import main


def test_costs_json_prints_seven_rows(capsys):
    assert main(["costs", "--preset", "paper", "--json", "--seeds", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == [
        "star",
        "edge_only",
        "edge_only_d2d",
        "hfm_2",
        "hfm_8",
        "hfm_d2d_2",
        "hfm_d2d_8",
    ]
    for r in rows:
        assert r["latency_s"] > 0 and r["energy_j"] > 0


def test_costs_table_for_other_presets(capsys):
    assert main(["costs", "--preset", "tiny", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "edge_only_d2d" in out


def test_bad_preset_is_a_clear_error(capsys):
    assert main(["costs", "--preset", "huge"]) == 2
    assert "preset must be one of 'tiny', 'small', 'paper'" in capsys.readouterr().err
    assert main(["costs", "--rounds", "0"]) == 2
    assert "rounds" in capsys.readouterr().err


def test_console_script_and_bench_run():
    out = subprocess.run(
        [sys.executable, "-m", "hffm_cli.main", "bench", "network", "--sizes", "40", "200", "--rounds", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ms/round" in out and "200" in out


def test_training_benchmark_runs_small():
    out = subprocess.run(
        [sys.executable, "-m", "hffm_cli.main", "bench", "training", "--devices", "4", "--steps", "1", "--batch", "4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "reference loop" in out and "GFLOP/s" in out


def test_costs_rounds_must_cover_the_aggregation_cycle(capsys):
    assert main(["costs", "--rounds", "3", "--seeds", "1"]) == 2
    assert "rounds must be a multiple of 8" in capsys.readouterr().err


def test_schedules_command_runs_every_table1_schedule(capsys):
    assert main(["schedules", "--preset", "tiny", "--rounds", "2", "--seeds", "2", "--local-steps", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == [
        "star",
        "edge_only",
        "edge_only_d2d",
        "hfm_2",
        "hfm_8",
        "hfm_d2d_2",
        "hfm_d2d_8",
        "local_only",
    ]
    for r in rows:
        assert set(r) >= {"final_accuracy", "first_accuracy", "majority_rate", "latency_s", "energy_j"}
        assert 0.0 <= r["first_accuracy"] <= 1.0 and 0.0 < r["majority_rate"] < 1.0
        assert r["final_accuracy"] == pytest.approx(np.mean(r["final_accuracy_per_seed"]))
        assert len(r["final_accuracy_per_seed"]) == 2
    by = {r["method"]: r for r in rows}
    assert by["local_only"]["latency_s"] < by["edge_only"]["latency_s"] < by["star"]["latency_s"]
    # round 1 of every HF-FM schedule is the same edge aggregation
    assert by["hfm_2"]["first_accuracy"] == by["hfm_8"]["first_accuracy"] == by["edge_only"]["first_accuracy"]
    assert main(["schedules", "--rounds", "0"]) == 2
    assert "--rounds must be" in capsys.readouterr().err
    assert main(["schedules", "--seeds", "0"]) == 2
    assert "--seeds must be" in capsys.readouterr().err


def _assert_one_row_per_id(out: str) -> None:
    from hffm_env import ENV_IDS

    rows = [line.split() for line in out.splitlines() if line.startswith("hffm_env/")]
    assert [r[0] for r in rows] == list(ENV_IDS) and all(float(r[2]) > 0 for r in rows)


def test_env_benchmark_measures_and_splits():
    from benchmarks.bench_env import bench

    r = bench("hffm_env/Aggregation-v0", "tiny", steps=3)
    assert r["steps_per_s"] > 0 and r["split"]["training"] > 0 and r["split"]["evaluation"] > 0
    assert sum(r["split"].values()) == pytest.approx(1.0)
    low = bench("hffm_env/Relaying-v0", "tiny", steps=2, model__backbone_dtype="bfloat16")
    assert low["steps_per_s"] > 0 and low["split"]["training"] > 0


def test_env_benchmark_interleaves_blocks_across_ids(monkeypatch, capsys):
    import benchmarks.bench_env as bench_env

    order = []
    step = bench_env._valid

    def spy(env, rng):
        order.append(env.spec.id)
        return step(env, rng)

    monkeypatch.setattr(bench_env, "_valid", spy)
    ids = ("hffm_env/Aggregation-v0", "hffm_env/Relaying-v0")
    rows = bench_env.bench_ids(ids, "tiny", steps=5, blocks=2)
    # one warm-up step per id, then blocks of 3 and 2 steps taking turns
    assert order == [ids[0], ids[1]] + [ids[0]] * 3 + [ids[1]] * 3 + [ids[0]] * 2 + [ids[1]] * 2
    for r in rows:
        lo, hi = r["range"]
        assert 0 < lo <= r["steps_per_s"] <= hi
        assert sum(r["split"].values()) == pytest.approx(1.0) and r["split"]["training"] > 0
    with pytest.raises(ValueError, match="blocks must be an integer in"):
        bench_env.bench_ids(ids, "tiny", steps=2, blocks=3)
    monkeypatch.setattr(bench_env, "_valid", step)
    assert bench_env.main(presets=("tiny",), steps={"tiny": 2}, blocks=2) == 0
    out = capsys.readouterr().out
    _assert_one_row_per_id(out)
    # the target is one of two workers together: one env reports its rate only
    assert "median of 2 interleaved blocks" in out and "target" not in out
    assert main(["bench", "env", "--blocks", "0"]) == 2
    assert "--blocks must be an integer >= 1" in capsys.readouterr().err


def test_env_benchmark_times_the_scenario_overrides_it_is_given(monkeypatch, capsys):
    import benchmarks.bench_env as bench_env

    seen = []

    def fake(env_ids, preset, steps, blocks=3, seed=0, on_step=None, **overrides):
        seen.append(overrides)
        return [{"id": i, "preset": preset, "steps_per_s": 1.0, "range": (1.0, 1.0), "split": {}} for i in env_ids]

    monkeypatch.setattr(bench_env, "bench_ids", fake)
    assert (
        main(
            [
                "bench",
                "env",
                "--presets",
                "tiny",
                "--set",
                "federation__eval_max_samples=2",
                "--set",
                "network__tiers__0__count=6",
            ]
        )
        == 0
    )
    assert seen == [
        {"federation__eval_max_samples": 2, "network__tiers__0__count": 6, "model__backbone_dtype": "float32"}
    ]
    out = capsys.readouterr().out
    assert "with federation__eval_max_samples=2 network__tiers__0__count=6" in out
    # a bad override fails as a config error naming the field, before anything is timed
    monkeypatch.undo()
    assert main(["bench", "env", "--presets", "tiny", "--set", "federation__eval_max_sample=2"]) == 2
    assert "eval_max_sample" in capsys.readouterr().err


def test_env_benchmark_times_vectorised_workers_as_hffm_train_runs_them(capsys):
    from benchmarks.bench_env import bench_vec
    from benchmarks.bench_env import main as bench_main

    with pytest.raises(ValueError, match="n_envs must be an integer >= 2"):
        bench_vec("hffm_env/Relaying-v0", "tiny", steps=2, n_envs=1)
    assert bench_main(presets=("tiny",), steps={"tiny": 2}, n_envs=2) == 0
    out = capsys.readouterr().out
    _assert_one_row_per_id(out)
    assert "2 SubprocVecEnv workers" in out
    assert "target tiny >= 12.2 steps/s (float32 backbone, 2 workers together)" in out
    assert main(["bench", "env", "--n-envs", "0"]) == 2
    assert "--n-envs must be an integer >= 1" in capsys.readouterr().err


def test_bench_soak_and_robustness_are_wired(capsys):
    assert main(["bench", "soak", "--steps", "4", "--every", "2"]) == 0
    assert "RSS growth" in capsys.readouterr().out
    assert (
        main(
            [
                "bench",
                "robustness",
                "--preset",
                "tiny",
                "--rounds",
                "1",
                "--seeds",
                "1",
                "--noise",
                "0",
                "--last",
                "1",
                "--no-clean-robust",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["rule"] for r in rows} >= {"mean", "trimmed_mean", "median", "krum", "multi_krum"}

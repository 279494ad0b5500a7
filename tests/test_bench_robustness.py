"""The robustness benchmark: its rows, the attack it measures, and the evaluation it skips."""

import math

import pytest
import torch

from benchmarks.bench_robustness import (
    Condition,
    Settings,
    conditions,
    module_distance,
    robustness_rows,
    run_condition,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rows_cover_every_condition_with_finite_accuracies():
    rows, runs, settings = robustness_rows("tiny", rounds=2, seeds=1, last=1, noise_multipliers=(0.0, 1.0))
    assert settings.krum_f == 2 and settings.trim_fraction == 0.25        # 20 % of 8 devices
    got = [(r["label"], r["rule"]) for r in rows]
    expected = [("clean", rule) for rule in ("mean", "trimmed_mean", "median", "krum", "multi_krum")] + [("honest only", "mean")]
    expected += [(a, rule) for a in ("sign_flip x1", "scaling x10", "label_flip")
                 for rule in ("mean", "trimmed_mean", "median", "krum", "multi_krum")]
    expected += [("DP z=0", "mean"), ("DP z=1", "mean")]
    assert got == expected
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["delta_pts"]), r
        assert (r["within_2pts"] is not None) == (r["condition"] == "attacked" and r["rule"] != "mean")
    assert rows[0]["delta_pts"] == 0.0
    # the same adversaries in every attacked run, none in the clean and privacy runs
    adv = {run.adversaries for run in runs if run.condition.attack or run.condition.honest_only}
    assert len(adv) == 1 and len(next(iter(adv))) == 2
    assert all(not run.adversaries for run in runs if not (run.condition.attack or run.condition.honest_only))
    # left out of the honest-only run: no accuracy of theirs, as in the table's mean
    honest_only = next(run for run in runs if run.condition.honest_only)
    assert not set(honest_only.scored[-1]) & next(iter(adv))


def test_scaling_attack_moves_the_mean_farther_than_the_median():
    settings = Settings("tiny", rounds=2, last=1, fraction=0.25, krum_f=2)
    clean, clean_median = (run_condition(settings, Condition(None, rule), seed=0) for rule in ("mean", "median"))
    mean = run_condition(settings, Condition("scaling", "mean", 10.0), seed=0)
    median = run_condition(settings, Condition("scaling", "median", 10.0), seed=0)
    far, near = (module_distance(r.global_modules, clean.global_modules) for r in (mean, median))
    assert far > 1.5 * near
    # most of what separates the median from the clean run is the rule, not the attack
    shift = module_distance(median.global_modules, clean_median.global_modules)
    assert shift < 0.25 * far


def test_skipped_evaluations_leave_the_run_unchanged():
    c = Condition("sign_flip", "trimmed_mean")
    every = run_condition(Settings("tiny", rounds=3, last=3), c, seed=1)
    few = run_condition(Settings("tiny", rounds=3, last=1), c, seed=1)
    assert module_distance(every.global_modules, few.global_modules) == 0.0
    assert every.scored[-1] == few.scored[-1] and every.first == few.first


def test_conditions_without_adversaries_or_clean_robust_rows():
    labels = [c.label for c in conditions((0.5,), fraction=0.0, clean_robust=False)]
    assert labels == ["clean", "DP z=0.5"]
    assert "honest only" in [c.label for c in conditions((), fraction=0.2)]

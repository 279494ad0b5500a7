"""The robustness benchmark: its rows, the attack it measures, and the evaluation it skips."""

import argparse
import math

import numpy as np
import pytest
import torch

from benchmarks.bench_robustness import (
    Condition,
    Settings,
    add_arguments,
    conditions,
    module_distance,
    robustness_rows,
    run_condition,
)
from hffm_env.model.banks import kind_of


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rows_cover_every_condition_with_finite_accuracies():
    rows, runs, settings = robustness_rows("tiny", rounds=2, seeds=1, last=1, noise_multipliers=(0.0, 1.0))
    assert settings.krum_f == 2 and settings.trim_fraction == 0.25  # 20 % of 8 devices
    got = [(r["label"], r["rule_label"]) for r in rows]
    rules = ("mean", "trimmed_mean", "median", "krum", "multi_krum", "krum+b2", "multi_krum+b2")
    expected = [("clean", rule) for rule in rules] + [("honest only", "mean")]
    expected += [(a, rule) for a in ("sign_flip x1", "scaling x10", "label_flip") for rule in rules]
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


def test_sign_flippers_drag_fedavg_with_their_strength_and_not_the_robust_rules():
    """The bench's attacked runs, one round on tiny (2 sign-flippers among 8 devices): from
    x1 to x10 the attackers drag FedAvg's cloud aggregate along, while the median and
    the trimmed mean stay put on every module kind where the attackers are within what
    the rule discards (the groups the table's header lists), and at x10 both sit closer
    than FedAvg to the honest-only aggregate."""
    settings = Settings("tiny", rounds=1, last=1, krum_f=2)
    honest = run_condition(settings, Condition(None, "mean", honest_only=True), seed=1)
    rules = ("mean", "median", "trimmed_mean")
    runs = {
        (rule, s): run_condition(settings, Condition("sign_flip", rule, s), seed=1) for rule in rules for s in (1, 10)
    }

    def moved(rule, kinds):
        a, b = (runs[rule, s].global_modules for s in (1, 10))
        names = [n for n in a if kind_of(n) in kinds]
        return module_distance({n: a[n] for n in names}, {n: b[n] for n in names})

    groups = runs["mean", 1].groups
    within = {
        "median": [k for k, (a, m) in groups.items() if 2 * a < m],
        "trimmed_mean": [k for k, (a, m) in groups.items() if a <= math.floor(settings.trim_fraction * m)],
    }
    beyond_trim = [k for k in groups if k not in within["trimmed_mean"]]
    assert "adapters" in within["trimmed_mean"] and "heads.scene_qa" in beyond_trim  # 2 of 8 and 2 of 7 holders
    for rule, kinds in within.items():
        assert moved(rule, kinds) < 0.1 * moved("mean", kinds), rule
    assert moved("trimmed_mean", beyond_trim) > 0.5 * moved("mean", beyond_trim)
    off = {rule: module_distance(runs[rule, 10].global_modules, honest.global_modules) for rule in rules}
    assert off["median"] < off["mean"] and off["trimmed_mean"] < off["mean"]


def test_skipped_evaluations_leave_the_run_unchanged():
    c = Condition("sign_flip", "trimmed_mean")
    every = run_condition(Settings("tiny", rounds=3, last=3), c, seed=1)
    few = run_condition(Settings("tiny", rounds=3, last=1), c, seed=1)
    assert module_distance(every.global_modules, few.global_modules) == 0.0
    assert every.scored[-1] == few.scored[-1] and every.first == few.first


def test_bucketed_rows_run_the_rule_on_buckets_and_compare_with_their_own_clean_run():
    rows, runs, _ = robustness_rows(
        "tiny",
        rounds=2,
        seeds=1,
        last=1,
        noise_multipliers=(),
        first_seed=3,
        bucket_size=3,
        bucketed=("median",),
        rules=["median", "median+b3"],
    )
    assert {run.seed for run in runs} == {3}
    got = [(r["label"], r["rule_label"], r["bucket_size"]) for r in rows]
    assert got == [
        ("clean", "mean", 1),
        ("clean", "median", 1),
        ("clean", "median+b3", 3),
        ("sign_flip x1", "median", 1),
        ("sign_flip x1", "median+b3", 3),
        ("scaling x10", "median", 1),
        ("scaling x10", "median+b3", 3),
        ("label_flip", "median", 1),
        ("label_flip", "median+b3", 3),
    ]
    by = {(r.condition.label, r.condition.rule_label): r for r in runs}
    # bucketing changes the run; the attacked bucketed row's own-rule Δ is against the clean bucketed run
    assert module_distance(by["clean", "median"].global_modules, by["clean", "median+b3"].global_modules) > 0
    row = next(r for r in rows if r["label"] == "scaling x10" and r["rule_label"] == "median+b3")
    clean_b3 = next(r for r in rows if r["label"] == "clean" and r["rule_label"] == "median+b3")
    assert row["delta_same_rule_pts"] == pytest.approx(100 * (row["accuracy"] - clean_b3["accuracy"]))


def test_rule_and_seed_options_select_rows():
    a = argparse.ArgumentParser()
    add_arguments(a)
    args = a.parse_args(["--rules", "mean", "krum+b2", "--seeds", "4", "--first-seed", "2", "--noise"])
    assert (args.rules, args.seeds, args.first_seed, args.bucket_size, args.noise) == (["mean", "krum+b2"], 4, 2, 2, [])
    labels = [(c.label, c.rule_label) for c in conditions(tuple(args.noise), rules=args.rules)]
    assert labels == [("clean", "mean"), ("clean", "krum+b2"), ("honest only", "mean")] + [
        (a, r) for a in ("sign_flip x1", "scaling x10", "label_flip") for r in ("mean", "krum+b2")
    ]
    # the clean FedAvg row, the reference of every Δ, always runs; no bucketed rows with buckets of 1
    assert [c.rule_label for c in conditions((), fraction=0.0, rules=["krum"])] == ["mean", "krum"]
    assert all(c.bucket_size == 1 for c in conditions((), bucket_size=1))
    with pytest.raises(ValueError, match="unknown rules krum\\+b3"):
        conditions((), rules=["krum+b3"])
    with pytest.raises(SystemExit):
        a.parse_args(["--bucketed", "mean"])


def test_conditions_without_adversaries_or_clean_robust_rows():
    labels = [c.label for c in conditions((0.5,), fraction=0.0, clean_robust=False)]
    assert labels == ["clean", "DP z=0.5"]
    assert "honest only" in [c.label for c in conditions((), fraction=0.2)]


def _table(seeds, rows):
    head = f"hffm bench robustness: preset 'small', 30 rounds, seeds {seeds}; every round ...\n"
    return head + "\n".join(
        f"{c:<15} {r:<13} {0.3:>7.3f} ± 0.010  {sum(d) / len(d):>+10.1f}  " + " ".join(f"{x:+.1f}" for x in d)
        for c, r, d in rows
    )


def test_merge_pools_seeds_and_refuses_tables_of_different_code():
    from benchmarks.merge_robustness import merge, summary

    a = _table([0, 1], [("clean", "mean", [0.0, 0.0]), ("scaling x10", "krum+b2", [-3.0, 1.0])])
    b = _table([1, 2], [("clean", "mean", [0.0, 0.0]), ("scaling x10", "krum+b2", [1.0, -4.0])])
    rows = {(r["condition"], r["rule"]): r for r in summary(merge([a, b]))}
    k = rows[("scaling x10", "krum+b2")]
    assert k["seeds"] == 3 and k["delta_pts"] == pytest.approx(-2.0)
    assert k["se_pts"] == pytest.approx(np.std([-3.0, 1.0, -4.0], ddof=1) / np.sqrt(3))
    assert k["within"] is True and rows[("clean", "mean")]["within"] is None
    c = _table([1], [("scaling x10", "krum+b2", [2.0])])  # seed 1 again, another Δ
    with pytest.raises(ValueError, match="not of the same code"):
        merge([a, c])

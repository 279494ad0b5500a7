"""Robustness benchmark: adversarial devices and differential privacy, with real training.

Run as ``python -m benchmarks.bench_robustness`` (``--json`` for the rows as JSON).
On one seeded scenario per seed (same topology, data, initial modules and
adversarial devices in every run of the seed) it fine-tunes every module kind for
``rounds`` federated rounds (``Federation.run_round``: local AdamW steps on every
device, then the round's aggregation) under each condition:

* **clean**: no adversaries, FedAvg (``rule="mean"``, sample-weighted); also clean
  with each robust rule, to separate what a rule costs without any attack from what
  the attack costs;
* **honest only**: FedAvg with the seed's adversaries left out of the federation
  (inactive from the start): the best a robust rule can do, since the honest
  devices' accuracy is what the table scores;
* **attacked**: a ``fraction`` of the devices (drawn by ``AdversaryConfig.fraction``
  from the seed) send ``sign_flip`` (−1 × their update), ``scaling`` (×10) or train
  on flipped labels (``label_flip``), aggregated by ``mean``, ``trimmed_mean``,
  ``median``, ``krum`` and ``multi_krum``;
* **bucketed** (``krum+b2``, ``multi_krum+b2``; clean and attacked): the rule run on
  the means of random buckets of ``bucket_size`` devices (``federation.bucket_size``;
  Karimireddy, He & Jaggi, ICLR 2022), see below;
* **privacy**: clean, FedAvg with DP-FedAvg on uploads: each update clipped to
  ``clip_norm``, Gaussian noise of std ``z·C·max(w)/Σw`` on the aggregate, for each
  noise multiplier ``z`` (``z = 0``: clipping alone). No (ε, δ) accounting.

**Schedule.** Every round aggregates every module kind in one flat aggregate at
the cloud (``Aggregate(kinds, "cloud", path="star")``): every device uploads its
update, the cloud combines all of them by the rule, and every device receives the
global copy. This is the FedAvg setting of the Byzantine-robustness literature
(one server, all clients in one aggregate). The hierarchical schedules are a worse
test bed for the rules: per-cluster edge aggregation on ``small`` combines about 4
devices, where a median or a trimmed mean of 4 values tolerates at most one
outlier and Krum's condition ``m > 2f + 2`` fails with one attacker; and a cloud
aggregation through the edge servers combines 5 already-mixed edge copies, so the
robust rule sees the attack only diluted into whole clusters.

**Rule settings.** ``trim_fraction = max(0.25, fraction)``: each end of every
coordinate drops at least as many values as there are adversaries in a group of all
devices (5 of 20 for 4 adversaries). ``krum_f`` is the number of adversarial
devices, ``round(fraction · devices)``: the shared modules (adapters, prompts,
experts, gate) are one group of all devices, all adversaries included, so that is
the number Krum must tolerate there; with bucketing it counts buckets, and ``f``
adversaries corrupt at most ``f`` buckets. Per-task heads and modality encoders are
aggregated over their holders only; under the presets' non-IID task assignment a
head may have 6 holders of which 2 are adversaries, more than trimming 25 % (1 of 6)
removes and beyond Krum's ``m > 2f + 2``. The header lists, per seed, the groups
where the adversaries outnumber what the trimmed mean removes (``a/m``) and those
where they are half or more (where no rule can hold). DP clip norm 0.2: about the
median norm of a device's round update of the shared modules on ``small`` (0.22–0.26
in the first rounds); heads' and encoders' updates are smaller and rarely clipped.

**Bucket size.** Chosen by the breakdown argument of the bucketing paper, not by
trying sizes: with a fraction δ of adversaries, buckets of ``s`` leave at most
``δ·s`` of the buckets corrupted, which must stay below what the rule tolerates.
With δ = 20 % and 20 devices, ``s = 2`` gives 10 buckets of which at most 4 (40 %)
are corrupted — in 55 % of the draws all four adversaries land in different
buckets: under the median's 50 %, and exactly at the edge of Krum's condition
``m' > 2f + 2`` (10 = 2·4 + 2); ``s = 3`` gives 7 buckets of which up to 4 (57 %)
may be corrupted, beyond every rule. So the default is ``s = 2`` (``--bucket-size``),
for the rules in ``--bucketed``: Krum and Multi-Krum, the ones that lose accuracy on
non-IID shards without an attack (the trimmed mean and the median already hold; a
bucketed trimmed mean would also need to trim 40 % per end, not 25 %).

**Accuracy.** ``RoundResult.accuracy`` holds each device's accuracy, with its own
copy, on each of its tasks' held-out shard; after a star aggregation every device
holds the global copy, so this is the global model scored on each device's local
test data. The table reports the mean over the *honest* devices' (device, task)
pairs — the seed's adversaries are left out of every row, clean and privacy rows
included, so that all rows average the same pairs — over the last ``last`` rounds,
then mean ± standard deviation over seeds. Δ is the paired per-seed difference to
the clean FedAvg run in accuracy points; an attacked row with a robust rule meets
the target ("within 2 pts") when its mean Δ is ≥ −2. The last column compares an
attacked row with the clean run of its own rule: what the attack costs that rule.
Evaluation (about half of a round's time on ``small``) runs only in round 1 and the
last ``last`` rounds: it draws from none of the run's random generators, so skipping
it elsewhere changes nothing in the run (a test checks this).

**Rounds.** On ``small`` the clean FedAvg accuracy (all devices, seed 0) is 0.095
after round 1, 0.29 after 20 rounds, 0.38 after 30 and 0.41 after 40, still rising
slowly; 30 rounds is well clear of the start and keeps the default run (29
conditions × 2 seeds, 17–21 s a run) near 18 minutes on 2 cores.

**Focused runs.** ``--rules mean krum+b2`` runs only the rows of those rules (the
labels of the table's rule column; the clean FedAvg row, every Δ's reference, always
runs), ``--noise`` with no value drops the DP rows, ``--seeds N --first-seed K`` runs
seeds ``K .. K+N-1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

ATTACKS = (("sign_flip", 1.0), ("scaling", 10.0), ("label_flip", 1.0))
ROBUST_RULES = ("trimmed_mean", "median", "krum", "multi_krum")
RULES = ("mean",) + ROBUST_RULES
BUCKETED_RULES = ("krum", "multi_krum")
TOLERANCE_PTS = 2.0


@dataclass(frozen=True)
class Condition:
    """One row: an attack (None: clean) with its strength, a rule, a DP noise multiplier (None:
    no privacy); ``honest_only``: the seed's adversaries are left out of the federation
    (inactive from the start), the ideal a robust rule can reach."""

    attack: str | None
    rule: str
    strength: float = 1.0
    noise_multiplier: float | None = None
    honest_only: bool = False
    bucket_size: int = 1

    @property
    def rule_label(self) -> str:
        """The rule as the table names it: ``krum+b2`` for Krum on buckets of 2."""
        return self.rule if self.bucket_size == 1 else f"{self.rule}+b{self.bucket_size}"

    @property
    def label(self) -> str:
        if self.honest_only:
            return "honest only"
        if self.noise_multiplier is not None:
            return f"DP z={self.noise_multiplier:g}"
        if self.attack is None:
            return "clean"
        return self.attack if self.attack == "label_flip" else f"{self.attack} x{self.strength:g}"

    @property
    def kind(self) -> str:
        if self.honest_only:
            return "reference"
        return "privacy" if self.noise_multiplier is not None else "clean" if self.attack is None else "attacked"


@dataclass(frozen=True)
class Settings:
    """What every run of the benchmark shares."""

    preset: str = "small"
    rounds: int = 30
    last: int = 5
    fraction: float = 0.2
    clip_norm: float = 0.2
    trim_fraction: float = 0.25
    krum_f: int = 4

    def scenario(self, condition: Condition):
        from hffm_env import make_scenario

        ov = {
            "federation__rule": condition.rule,
            "federation__trim_fraction": self.trim_fraction,
            "federation__krum_f": self.krum_f,
            "federation__bucket_size": condition.bucket_size,
        }
        if condition.attack is not None or condition.honest_only:  # the same adversaries, drawn from the seed
            ov.update(
                federation__adversaries__fraction=self.fraction,
                federation__adversaries__attack=condition.attack or "sign_flip",
                federation__adversaries__strength=condition.strength,
            )
        if condition.noise_multiplier is not None:
            ov.update(
                federation__privacy__clip_norm=self.clip_norm,
                federation__privacy__noise_multiplier=condition.noise_multiplier,
            )
        return make_scenario(self.preset, **ov)


@dataclass
class Run:
    """One condition on one seed: per-device accuracy in the scored rounds, the adversaries,
    and the global (cloud) copy of every module after the last round."""

    condition: Condition
    seed: int
    first: dict[int, dict[str, float]]
    scored: list[dict[int, dict[str, float]]]
    adversaries: frozenset[int]
    groups: dict[str, tuple[int, int]]  # kind -> (adversarial holders, holders)
    global_modules: dict[str, torch.Tensor] = field(repr=False)
    seconds: float = 0.0


def conditions(
    noise_multipliers=(0.0, 0.5, 1.0, 2.0),
    fraction: float = 0.2,
    clean_robust: bool = True,
    bucket_size: int = 2,
    bucketed=BUCKETED_RULES,
    rules=None,
) -> list[Condition]:
    """The benchmark's rows in print order: each attack (and the clean run) with every
    rule, then with the ``bucketed`` rules on buckets of ``bucket_size`` (none when it
    is 1). ``rules`` (rule labels such as ``"krum+b2"``; None: all) keeps only those
    rows; the clean FedAvg row is always kept."""
    bad = [r for r in bucketed if r not in ROBUST_RULES]
    if bad:
        raise ValueError(f"bucketed rules must be among {', '.join(ROBUST_RULES)}, got {', '.join(bad)}")
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be at least 1, got {bucket_size}")
    pairs = [(r, 1) for r in RULES] + ([(r, bucket_size) for r in bucketed] if bucket_size > 1 else [])
    out = [Condition(None, "mean")]
    if clean_robust:
        out += [Condition(None, r, bucket_size=b) for r, b in pairs[1:]]
    if fraction > 0:
        out.append(Condition(None, "mean", honest_only=True))
        out += [Condition(a, r, s, bucket_size=b) for a, s in ATTACKS for r, b in pairs]
    out += [Condition(None, "mean", noise_multiplier=float(z)) for z in noise_multipliers]
    if rules is not None:
        known = list(dict.fromkeys(c.rule_label for c in out))
        unknown = [r for r in rules if r not in known]
        if unknown:
            raise ValueError(f"unknown rules {', '.join(unknown)}; this run has {', '.join(known)}")
        out = [c for i, c in enumerate(out) if i == 0 or c.rule_label in rules]
    return out


def _no_evaluation() -> dict:
    return {}


def run_condition(settings: Settings, condition: Condition, seed: int, on_round=None) -> Run:
    """``settings.rounds`` rounds of local training + one star aggregation of every module kind;
    ``on_round(1)`` is called after each round."""
    from hffm_env.federation import Aggregate, Federation

    t0 = time.perf_counter()
    fed = Federation(settings.scenario(condition), seed=seed)
    ops = [Aggregate(fed.kinds, "cloud", path="star")]
    adversaries = frozenset(fed.roles.attack)
    groups = {k: (int(fed.holds(k)[sorted(adversaries)].sum()), int(fed.holds(k).sum())) for k in fed.kinds}
    if condition.honest_only:
        for d in adversaries:
            fed.set_attack(d, None)
            fed.set_active(d, False)
    first, scored = {}, []
    for r in range(1, settings.rounds + 1):
        score = r == 1 or r > settings.rounds - settings.last
        if score:
            fed.__dict__.pop("evaluate", None)
        else:
            fed.evaluate = _no_evaluation  # an instance attribute shadows the method for this round
        res = fed.run_round(ops)
        if r == 1:
            first = res.accuracy
        if r > settings.rounds - settings.last:
            scored.append(res.accuracy)
        if on_round is not None:
            on_round(1)
    top = fed.topology.top
    return Run(
        condition,
        seed,
        first,
        scored,
        adversaries,
        groups,
        {n: t[top].clone() for n, t in fed.bank.items()},
        time.perf_counter() - t0,
    )


def honest_mean(accuracy: dict[int, dict[str, float]], exclude) -> float:
    """Mean accuracy over the (device, task) pairs of devices not in ``exclude``."""
    vals = [a for d, per in accuracy.items() if d not in exclude for a in per.values()]
    return float(np.mean(vals)) if vals else float("nan")


def module_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """L2 distance between two copies of every module, all parameters as one vector."""
    return math.sqrt(sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in a))


def _sd(x) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def summarise(runs: list[Run]) -> list[dict]:
    """Table rows from the runs (every condition on the same seeds)."""
    seeds = sorted({r.seed for r in runs})
    adv = {}
    for r in runs:
        if r.adversaries:
            if adv.setdefault(r.seed, r.adversaries) != r.adversaries:
                raise RuntimeError(f"seed {r.seed}: the attacked runs drew different adversaries")
    by = {(r.condition, r.seed): r for r in runs}
    conds = list(dict.fromkeys(r.condition for r in runs))
    clean = Condition(None, "mean")

    def score(run: Run) -> float:
        ex = adv.get(run.seed, frozenset())
        return float(np.mean([honest_mean(a, ex) for a in run.scored]))

    def deltas(c: Condition, ref: Condition) -> list[float]:
        """Per seed, ``c``'s accuracy minus ``ref``'s in points (empty when ``ref`` was not run)."""
        if not all((ref, s) in by for s in seeds):
            return []
        return [100.0 * (score(by[c, s]) - score(by[ref, s])) for s in seeds]

    rows = []
    for c in conds:
        per_seed = [score(by[c, s]) for s in seeds]
        delta = deltas(c, clean)
        same_rule = deltas(c, Condition(None, c.rule, bucket_size=c.bucket_size)) if c.kind == "attacked" else []
        ex = {s: adv.get(s, frozenset()) for s in seeds}
        tasks: dict[str, list[float]] = {}
        for s in seeds:
            for acc in by[c, s].scored:
                for d, per in acc.items():
                    if d not in ex[s]:
                        for t, a in per.items():
                            tasks.setdefault(t, []).append(a)
        rows.append(
            {
                "condition": c.kind,
                "label": c.label,
                "attack": c.attack,
                "strength": c.strength if c.attack else None,
                "rule": c.rule,
                "bucket_size": c.bucket_size,
                "rule_label": c.rule_label,
                "noise_multiplier": c.noise_multiplier,
                "accuracy": float(np.mean(per_seed)),
                "accuracy_sd": _sd(per_seed),
                "per_seed": per_seed,
                "first_round_accuracy": float(np.mean([honest_mean(by[c, s].first, ex[s]) for s in seeds])),
                "delta_pts": float(np.mean(delta)) if delta else float("nan"),
                "delta_pts_per_seed": delta,
                "within_2pts": (
                    bool(np.mean(delta) >= -TOLERANCE_PTS)
                    if c.kind == "attacked" and c.rule != "mean" and delta
                    else None
                ),
                "delta_same_rule_pts": float(np.mean(same_rule)) if same_rule else float("nan"),
                "task_accuracy": {t: float(np.mean(v)) for t, v in sorted(tasks.items())},
                "seconds": float(sum(by[c, s].seconds for s in seeds)),
            }
        )
    return rows


def robustness_rows(
    preset: str = "small",
    rounds: int = 30,
    seeds: int = 2,
    fraction: float = 0.2,
    noise_multipliers=(0.0, 0.5, 1.0, 2.0),
    clip_norm: float = 0.2,
    last: int = 5,
    clean_robust: bool = True,
    progress=None,
    *,
    first_seed: int = 0,
    bucket_size: int = 2,
    bucketed=BUCKETED_RULES,
    rules=None,
    on_round=None,
) -> tuple[list[dict], list[Run], Settings]:
    """Run every condition (see :func:`conditions`) on seeds ``first_seed .. first_seed+seeds-1``;
    return the table rows, the runs and the settings. ``progress(run)`` is called after
    each run, ``on_round(1)`` after each round."""
    from hffm_env import make_scenario

    if not 1 <= last <= rounds:
        raise ValueError(f"last must be in [1, rounds={rounds}], got {last}")
    n_devices = make_scenario(preset).network.tiers[0].count
    settings = Settings(
        preset,
        rounds,
        last,
        fraction,
        clip_norm,
        trim_fraction=max(0.25, fraction),
        krum_f=int(round(fraction * n_devices)),
    )
    if seeds < 1 or first_seed < 0:
        raise ValueError(f"need seeds >= 1 and first_seed >= 0, got {seeds} and {first_seed}")
    conds = conditions(noise_multipliers, fraction, clean_robust, bucket_size, bucketed, rules)
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        for c in conds:
            runs.append(run_condition(settings, c, seed, on_round))
            if progress is not None:
                progress(runs[-1])
    return summarise(runs), runs, settings


def format_table(rows: list[dict], runs: list[Run], settings: Settings, seconds: float) -> str:
    seeds = sorted({r.seed for r in runs})
    clean = next(r for r in rows if r["label"] == "clean" and r["rule"] == "mean")
    lines = [
        f"hffm bench robustness: preset {settings.preset!r}, {settings.rounds} rounds, seeds {seeds}; every round "
        f"every module kind in one flat cloud aggregate (star)",
        f"adversaries: {settings.fraction:.0%} of the devices; trimmed mean trims {settings.trim_fraction:g} per end, "
        f"krum_f={settings.krum_f}; DP clip norm {settings.clip_norm:g}",
        f"accuracy: honest devices' (device, task) mean, last {settings.last} rounds, mean ± sd over seeds; clean "
        f"FedAvg rises from {clean['first_round_accuracy']:.3f} (round 1) to {clean['accuracy']:.3f}",
    ]
    if any(r.condition.bucket_size > 1 for r in runs):
        lines.append(
            "+bS: the rule on the sample-weighted means of random buckets of S devices (bucketing, "
            "Karimireddy et al. 2022); krum_f then counts buckets"
        )
    for s in seeds:
        run = next((r for r in runs if r.seed == s and r.adversaries), None)
        if run is None:
            continue
        cut = lambda m: math.floor(settings.trim_fraction * m)  # noqa: E731
        over = [f"{k} {a}/{m}" for k, (a, m) in run.groups.items() if a > cut(m)]
        half = [f"{k} {a}/{m}" for k, (a, m) in run.groups.items() if m and 2 * a >= m]
        lines.append(
            f"seed {s}: adversaries {sorted(run.adversaries)}; beyond the trim: {', '.join(over) or '-'}; "
            f"half or more: {', '.join(half) or '-'}"
        )
    lines.append(
        f"{'condition':<15} {'rule':<13} {'accuracy':>15}  {'Δ vs clean':>10}  {'per seed':<12} "
        f"{'within ' + format(TOLERANCE_PTS, 'g') + ' pts':<13} Δ vs clean, same rule"
    )
    for r in rows:
        per = " ".join(f"{d:+.1f}" for d in r["delta_pts_per_seed"])
        ok = "" if r["within_2pts"] is None else ("yes" if r["within_2pts"] else "NO")
        same = f"{r['delta_same_rule_pts']:+.1f}" if math.isfinite(r["delta_same_rule_pts"]) else ""
        lines.append(
            f"{r['label']:<15} {r['rule_label']:<13} {r['accuracy']:>7.3f} ± {r['accuracy_sd']:.3f}  "
            f"{r['delta_pts']:>+10.1f}  {per:<12} {ok:<13} {same}".rstrip()
        )
    attacked = [r for r in rows if r["condition"] == "attacked"]
    for a, _ in ATTACKS:
        mean = next((r for r in attacked if r["attack"] == a and r["rule"] == "mean"), None)
        if mean is None:
            continue
        held = [r["rule_label"] for r in attacked if r["attack"] == a and r["within_2pts"]]
        own = [
            r["rule_label"]
            for r in attacked
            if r["attack"] == a and r["rule"] != "mean" and r["delta_same_rule_pts"] >= -TOLERANCE_PTS
        ]
        lines.append(
            f"{a}: FedAvg {mean['delta_pts']:+.1f} pts; within {TOLERANCE_PTS:g} pts of clean FedAvg: "
            f"{', '.join(held) or 'none'}; of the same rule's clean run: {', '.join(own) or 'none'}"
        )
    lines.append(f"wall time {seconds:.0f} s")
    return "\n".join(lines)


def main(
    preset: str = "small",
    rounds: int = 30,
    seeds: int = 2,
    fraction: float = 0.2,
    noise_multipliers=(0.0, 0.5, 1.0, 2.0),
    clip_norm: float = 0.2,
    last: int = 5,
    clean_robust: bool = True,
    json_out: bool = False,
    *,
    first_seed: int = 0,
    bucket_size: int = 2,
    bucketed=BUCKETED_RULES,
    rules=None,
) -> int:
    import torch  # here, not at import: `hffm -h` builds this parser without torch

    from hffm_cli.progress import Progress

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    progress = (
        None
        if json_out
        else (
            lambda run: print(
                f"  seed {run.seed} {run.condition.label:<15} {run.condition.rule_label:<13} {run.seconds:5.1f} s",
                flush=True,
            )
        )
    )
    n_runs = seeds * len(conditions(noise_multipliers, fraction, clean_robust, bucket_size, bucketed, rules))
    with Progress(n_runs * rounds, "rounds", "hffm bench robustness", stream=sys.stderr if json_out else None) as bar:
        rows, runs, settings = robustness_rows(
            preset,
            rounds,
            seeds,
            fraction,
            noise_multipliers,
            clip_norm,
            last,
            clean_robust,
            progress,
            first_seed=first_seed,
            bucket_size=bucket_size,
            bucketed=bucketed,
            rules=rules,
            on_round=bar.update,
        )
    seconds = time.perf_counter() - t0
    if json_out:
        out = {
            "settings": dataclasses.asdict(settings),
            "seeds": list(range(first_seed, first_seed + seeds)),
            "bucket_size": bucket_size,
            "seconds": seconds,
            "rows": rows,
        }
        print(json.dumps(_finite(out), indent=1))
    else:
        print(format_table(rows, runs, settings, seconds))
    return 0


def _finite(x):
    """NaN as null, so that the output is standard JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`main`."""
    p.add_argument("--preset", default="small", choices=("tiny", "small", "paper"))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2, help="how many seeds: K .. K+N-1 with --first-seed K")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed")
    p.add_argument("--fraction", type=float, default=0.2, help="share of adversarial devices")
    p.add_argument("--noise", type=float, nargs="*", default=[0.0, 0.5, 1.0, 2.0], help="DP noise multipliers")
    p.add_argument("--clip-norm", type=float, default=0.2, help="DP clip norm of each update")
    p.add_argument("--last", type=int, default=5, help="rounds averaged at the end")
    p.add_argument("--no-clean-robust", action="store_true", help="skip the clean runs with robust rules")
    p.add_argument(
        "--bucket-size", type=int, default=2, help="devices per bucket of the bucketed rows (1: no bucketed rows)"
    )
    p.add_argument(
        "--bucketed",
        nargs="*",
        default=list(BUCKETED_RULES),
        choices=ROBUST_RULES,
        metavar="RULE",
        help=f"robust rules that also get a bucketed row (default: {' '.join(BUCKETED_RULES)})",
    )
    p.add_argument(
        "--rules",
        nargs="+",
        default=None,
        metavar="RULE",
        help="run only the rows of these rules, as the table labels them (e.g. mean krum krum+b2); "
        "the clean FedAvg row always runs",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(a: argparse.Namespace) -> int:
    return main(
        a.preset,
        a.rounds,
        a.seeds,
        a.fraction,
        tuple(a.noise),
        a.clip_norm,
        a.last,
        not a.no_clean_robust,
        json_out=a.json,
        first_seed=a.first_seed,
        bucket_size=a.bucket_size,
        bucketed=tuple(a.bucketed),
        rules=a.rules,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))

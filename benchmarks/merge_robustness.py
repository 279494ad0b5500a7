"""Pool the printed tables of several ``hffm bench robustness`` runs over their seeds.

Run as ``python -m benchmarks.merge_robustness FILE [FILE ...]`` on saved outputs of
runs of the same code (e.g. seeds 0–3 and 4–7 run on two cores at once). For each
row it collects the per-seed Δ (accuracy points against clean FedAvg of the same
seed) from every file, checks that a seed two files both ran has the same Δ there
(the runs are deterministic), and prints the mean Δ over all seeds with its
standard error, the range, and whether the mean is within the bench's tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import re

import numpy as np

from benchmarks.bench_robustness import RULES, TOLERANCE_PTS

_HEADER = re.compile(r"seeds (\[[^\]]*\])")
_ROW = re.compile(
    r"^(clean|honest only|\S+ x\S+|label_flip|DP z=\S+)\s+(\S+)\s+[\d.]+ ± [\d.]+\s+[+-][\d.]+"
    r"\s+((?:[+-][\d.]+ ?)+)"
)


def parse(text: str) -> dict[tuple[str, str], dict[int, float]]:
    """``(condition, rule label) → {seed: Δ}`` of one printed table."""
    header = _HEADER.search(text)
    if header is None:
        raise ValueError("no 'hffm bench robustness: ... seeds [...]' header line in the table")
    seeds = json.loads(header.group(1))
    rows = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            deltas = [float(d) for d in m.group(3).split()]
            if len(deltas) != len(seeds):
                raise ValueError(f"row {line!r} has {len(deltas)} per-seed values for seeds {seeds}")
            rows[(m.group(1), m.group(2))] = dict(zip(seeds, deltas))
    return rows


def merge(tables: list[str]) -> dict[tuple[str, str], dict[int, float]]:
    """Per row, the per-seed Δ of every table; a seed seen twice must agree (to the printed 0.1)."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for i, text in enumerate(tables):
        for key, per_seed in parse(text).items():
            slot = out.setdefault(key, {})
            for seed, delta in per_seed.items():
                if seed in slot and abs(slot[seed] - delta) > 0.05:
                    raise ValueError(
                        f"{key} seed {seed}: Δ {slot[seed]:+.1f} in an earlier table, {delta:+.1f} "
                        f"in table {i}: the runs are not of the same code"
                    )
                slot[seed] = delta
    return out


def summary(merged: dict[tuple[str, str], dict[int, float]]) -> list[dict]:
    def rule_rank(label: str) -> tuple[int, str]:
        base = label.split("+")[0]
        return (RULES.index(base) if base in RULES else len(RULES), label)

    conditions = list(dict.fromkeys(k[0] for k in merged))
    rows = []
    for cond in conditions:
        for rule in sorted((k[1] for k in merged if k[0] == cond), key=rule_rank):
            d = np.array(list(merged[(cond, rule)].values()))
            attacked = cond not in ("clean", "honest only") and not cond.startswith("DP") and rule != "mean"
            rows.append(
                {
                    "condition": cond,
                    "rule": rule,
                    "seeds": len(d),
                    "delta_pts": float(d.mean()),
                    "se_pts": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0,
                    "min_pts": float(d.min()),
                    "max_pts": float(d.max()),
                    "within": bool(d.mean() >= -TOLERANCE_PTS) if attacked else None,
                }
            )
    return rows


def format_summary(rows: list[dict]) -> str:
    lines = [
        f"{'condition':<15} {'rule':<14} {'seeds':>5} {'mean Δ':>7} {'± SE':>5}  {'min':>6} {'max':>6}  "
        f"within {TOLERANCE_PTS:g} pts"
    ]
    for r in rows:
        ok = "" if r["within"] is None else ("yes" if r["within"] else "NO")
        lines.append(
            f"{r['condition']:<15} {r['rule']:<14} {r['seeds']:>5} {r['delta_pts']:>+7.1f} "
            f"{r['se_pts']:>5.1f}  {r['min_pts']:>+6.1f} {r['max_pts']:>+6.1f}  {ok}".rstrip()
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="saved outputs of hffm bench robustness (its printed table)")
    a = p.parse_args(argv)
    tables = []
    for path in a.files:
        with open(path, encoding="utf-8") as f:
            tables.append(f.read())
    print(format_summary(summary(merge(tables))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

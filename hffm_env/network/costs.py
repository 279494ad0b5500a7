"""Per-round cost of the Table I schedules, averaged over rounds and topology seeds.

``PAPER_TABLE1`` holds the paper's published figures: latency in s and energy in the
unit the paper labels "kJ", which is numerically J (the reference prints mW·s/1000).
"""

from __future__ import annotations

import numpy as np

from hffm_env._validation import ConfigError, check_int
from hffm_env.network.charging import Payload
from hffm_env.network.config import NetworkConfig
from hffm_env.network.fog import FogNetwork
from hffm_env.network.schedules import charge_schedule, table1_schedules

# method key -> (latency s, energy as printed: J labelled "kJ", accuracy %)
PAPER_TABLE1: dict[str, tuple[float, float, float]] = {
    "star": (12.10, 387.20, 37.89),
    "edge_only": (3.59, 59.25, 27.48),
    "edge_only_d2d": (2.00, 14.75, 27.48),
    "hfm_2": (9.58, 107.65, 38.65),
    "hfm_8": (5.04, 71.35, 36.25),
    "hfm_d2d_2": (8.86, 67.57, 38.65),
    "hfm_d2d_8": (3.66, 27.92, 36.25),
}


def table1_costs(
    network: NetworkConfig,
    payload: Payload,
    rounds: int = 8,
    seeds: int = 100,
    first_seed: int = 0,
    compare_with_paper: bool = False,
) -> list[dict]:
    """Mean latency (s) and energy (J) per round of each Table I schedule.

    Each seed draws a topology; every schedule then runs ``rounds`` rounds on a
    network built from that same seed, so the schedules are compared on equal
    placements and channel draws. With ``compare_with_paper`` rows also carry the
    paper's figures.
    """
    check_int("rounds", rounds, low=1)
    check_int("seeds", seeds, low=1)
    schedules = table1_schedules()
    cycle = int(np.lcm.reduce([p for s in schedules.values() for p in s.periods if p is not None]))
    if rounds % cycle:
        raise ConfigError(
            f"rounds must be a multiple of {cycle} (every schedule's full aggregation cycle), got {rounds}"
        )
    rows = []
    for key, schedule in schedules.items():
        lat, en = [], []
        for seed in range(first_seed, first_seed + seeds):
            net = FogNetwork(network, np.random.default_rng(seed))
            mean_lat, mean_en = charge_schedule(net, schedule, rounds, payload).mean()
            lat.append(mean_lat)
            en.append(mean_en)
        paper = PAPER_TABLE1.get(key) if compare_with_paper else None
        rows.append(
            {
                "method": key,
                "name": schedule.name,
                "latency_s": float(np.mean(lat)),
                "energy_j": float(np.mean(en)),
                "latency_s_std_over_seeds": float(np.std(lat)),
                "energy_j_std_over_seeds": float(np.std(en)),
                "paper_latency_s": None if paper is None else paper[0],
                "paper_energy": None if paper is None else paper[1],
            }
        )
    return rows

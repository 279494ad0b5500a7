"""Benchmark of the fog-network cost layer: rates + routing + ledger per round.

Run as ``hffm bench network`` (or ``python -m benchmarks.bench_network``). For each
device count it builds a scaled copy of the paper's network (40 devices per cluster
beyond the paper's own 40 devices, the area grown to keep the density; fading redrawn
every round, downlinks and compute charged), then times
full rounds of the heaviest Table I pattern, an HF-FM+D2D cloud round: fading and
every link's rate, shortest-path trees from all heads, D2D gather, heads' upload,
D2D broadcast, local-compute charges, and the ledger's round summary. It prints
milliseconds per round, static and with mobility (which also rebuilds the D2D
graphs every round).
"""

from __future__ import annotations

import math
import time

import numpy as np


def scaled_paper_scenario(n_devices: int, mobile: bool):
    from hffm_env import make_scenario
    from hffm_env.network import MobilityConfig

    base = make_scenario("paper")
    n_clusters = 10 if n_devices <= 40 else max(10, n_devices // 40)
    side = 5000.0 * math.sqrt(n_clusters / 10)
    mobility = MobilityConfig("random_direction", (0.5, 2.0), 10.0) if mobile else MobilityConfig()
    return base.replace(
        network__tiers__0__count=n_devices,
        network__tiers__1__count=n_clusters,
        network__area_side_m=side,
        network__mobility=mobility,
        network__cluster_radius_m=500.0 if n_devices <= 40 else 150.0,
        network__d2d_radius_m=30.0 if n_devices <= 40 else 60.0,
        network__charge_downlink=True,
        network__compute__cycles_per_sample=1e7,
        # the package's defaults rather than the reference's static channel
        network__channel__fading_per_round=True,
        network__d2d_patch_weight="distance",
    )


def time_rounds(n_devices: int, rounds: int, mobile: bool, seed: int = 0, on_round=None) -> tuple[float, float]:
    """Median and best seconds per round (``on_round(1)`` after each round, the two warm-up rounds included)."""
    from hffm_env.network import FogNetwork, Ledger
    from hffm_env.network.schedules import AggregationSchedule, charge_round

    sc = scaled_paper_scenario(n_devices, mobile)
    net = FogNetwork(sc.network, np.random.default_rng(seed))
    ledger = Ledger(keep_rounds=2)
    schedule = AggregationSchedule("HF-FM+D2D cloud round", periods=(1, 1), d2d=True)
    devices = np.arange(n_devices)
    samples = np.random.default_rng(seed).integers(50, 200, size=n_devices)
    times = []
    for _ in range(rounds + 2):  # two warm-up rounds
        t0 = time.perf_counter()
        net.new_round()
        ledger.begin_round(net.round_index)
        net.charge_compute(ledger, "local_training", "local_training", devices, samples)
        charge_round(net, ledger, schedule, 1, sc.payload_bytes)
        ledger.end_round()
        times.append(time.perf_counter() - t0)
        if on_round is not None:
            on_round(1)
    times = np.array(times[2:])
    return float(np.median(times)), float(times.min())


def main(sizes=(40, 1000, 10000), rounds: int = 20) -> int:
    from hffm_cli.progress import Progress

    print("hffm bench network: one HF-FM+D2D cloud round (rates + routing + charges + ledger summary)")
    print(
        f"{'devices':>8} {'clusters':>9} {'static ms/round':>16} {'mobile ms/round':>16}   (median of {rounds}, best)"
    )
    timed = 2 * len(sizes) + (10000 in sizes)  # static and mobile per size, and the target's run
    with Progress(timed * (rounds + 2), "rounds", "hffm bench network") as progress:
        for n in sizes:
            med_s, best_s = time_rounds(n, rounds, mobile=False, on_round=progress.update)
            med_m, best_m = time_rounds(n, rounds, mobile=True, on_round=progress.update)
            clusters = scaled_paper_scenario(n, False).network.n_clusters
            print(
                f"{n:>8} {clusters:>9} {1e3 * med_s:>9.2f} ({1e3 * best_s:.2f}) {1e3 * med_m:>9.2f} "
                f"({1e3 * best_m:.2f})"
            )
        if 10000 in sizes:
            med, _ = time_rounds(10000, rounds, mobile=False, on_round=progress.update)
    target = 50.0
    if 10000 in sizes:
        print(
            f"target < {target:.0f} ms/round at 10,000 devices (static): measured {1e3 * med:.2f} ms "
            f"-> {'met' if 1e3 * med < target else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The soak benchmark's output, and the bounds that keep a long run's memory flat:
what a federation keeps stays bounded over many rounds and resets, and a reset lets
the previous episode go."""

from __future__ import annotations

import gc
import weakref

import gymnasium as gym
import numpy as np
import pytest
import torch

import hffm_env  # noqa: F401  (registers the ids)
from benchmarks import bench_soak

torch.set_num_threads(1)


def test_growth_is_measured_from_the_first_reading_after_warm_up():
    readings = [(0, 100), (500, 190), (1000, 200), (1500, 205), (2000, 210)]
    assert bench_soak.growth(readings, 1000) == (1000, 2000, pytest.approx(0.05))
    assert bench_soak.growth(readings, 2000) is None  # nothing after the base
    assert bench_soak.rss_bytes() > 10 * 2**20


def test_soak_prints_a_row_per_reading_and_the_verdict(capsys):
    assert bench_soak.main(steps=12, env_id="hffm_env/Aggregation-v0", every=4, seed=1) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.strip() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 4, 8, 12]
    assert all(float(r[1]) > 10 for r in rows)  # RSS in MiB
    assert out[-1].startswith("RSS growth from step 8 to step 12:") and "(target < 5%) -> " in out[-1]
    # the printed growth is that of the printed readings, and the verdict is that growth's
    growth = float(out[-1].split(": ")[1].split("%")[0]) / 100
    mib = {int(r[0]): float(r[1]) for r in rows}
    assert growth == pytest.approx((mib[12] - mib[8]) / mib[8], abs=1e-3)
    assert out[-1].endswith(" -> met" if growth < 0.05 else " -> NOT met")


@pytest.mark.parametrize(
    ("mib", "verdict"),
    [((100, 90, 100, 104.9), "+4.9% (target < 5%) -> met"), ((100, 100, 100, 105), "+5.0% (target < 5%) -> NOT met")],
)
def test_verdict_follows_the_growth_after_warm_up(monkeypatch, capsys, mib, verdict):
    readings = [(step, int(m * 2**20), 1.0, 1) for step, m in zip((0, 2, 4, 6), mib)]
    monkeypatch.setattr(bench_soak, "soak", lambda *args: iter(readings))
    assert bench_soak.main(steps=6, every=2) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"RSS growth from step 4 to step 6: {verdict}"


def test_command_line_flags_mirror_main(capsys):
    argv = ["--steps", "3", "--every", "3", "--env-id", "hffm_env/Aggregation-v0", "--preset", "tiny", "--seed", "2"]
    assert bench_soak.cli(argv) == 0
    out = capsys.readouterr().out
    assert "hffm_env/Aggregation-v0 on 'tiny', 3 steps of random valid actions, resets included, seed 2" in out


def test_federation_containers_stay_bounded_across_resets():
    from hffm_env.data import _cached_pool
    from hffm_env.federation.core import load_backbone

    keep, rounds = 3, 6
    env = gym.make("hffm_env/HFFM-v0", preset="tiny", env__max_rounds=rounds, federation__keep_ledger_rounds=keep)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    episodes = [weakref.ref(env.unwrapped.federation)]
    for _ in range(40):
        mask, nvec = env.unwrapped.action_masks(), env.action_space.nvec
        action = [rng.choice(np.flatnonzero(r)) for r in np.split(mask, np.cumsum(nvec)[:-1])]
        _, _, terminated, truncated, _ = env.step(np.array(action, dtype=np.int64))
        fed = env.unwrapped.federation
        last = fed.round_index
        kept = [r for r in range(last + 1) if _has_rows(fed.ledger, r)]
        assert kept == list(range(max(0, last - keep + 1), last + 1))  # the last `keep` rounds only
        assert len(fed.ledger.summaries) == last + 1 <= rounds  # one episode's summaries
        assert len(fed.net._routes) <= 8  # this round's route trees
        if terminated or truncated:
            env.reset()
            episodes.append(weakref.ref(env.unwrapped.federation))
    assert len(episodes) >= 6
    gc.collect()
    assert [ref() is not None for ref in episodes] == [False] * (len(episodes) - 1) + [True]
    # process-wide caches are bounded by their sizes, whatever the number of resets
    for cache in (_cached_pool, load_backbone):
        info = cache.cache_info()
        assert info.currsize <= info.maxsize


def _has_rows(ledger, r: int) -> bool:
    try:
        ledger.records(r)
    except KeyError:
        return False
    return True

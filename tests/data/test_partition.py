"""Heterogeneity: modality/task subsets, Dirichlet non-IID shards, held-out test shards."""

import numpy as np
import pytest

from hffm_env.data import DataConfig, dirichlet_split, make_federated_data, task_spec


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_even():
    labels = np.repeat(np.arange(5), 200)
    rng = np.random.default_rng(0)
    skew = dirichlet_split(labels, np.arange(8), 0.1, 5, rng)
    even = dirichlet_split(labels, np.arange(8), 100.0, 5, rng)

    def mean_entropy(parts):
        h = []
        for p in parts:
            q = np.bincount(labels[p], minlength=5) / len(p)
            h.append(-(q[q > 0] * np.log(q[q > 0])).sum())
        return np.mean(h)

    assert mean_entropy(skew) < 0.8 * mean_entropy(even)
    assert sorted(np.concatenate(skew).tolist()) == list(range(1000))  # a partition: nothing lost or shared
    sizes = [len(p) for p in skew]
    assert min(sizes) >= 5 and max(sizes) > 2 * min(sizes)  # unequal shard sizes


def test_impossible_split_is_a_clear_error():
    with pytest.raises(ValueError, match="pool_size"):
        dirichlet_split(np.zeros(10, dtype=int), np.arange(5), 0.1, 8, np.random.default_rng(0))


def test_federated_data_heterogeneity_and_determinism():
    cfg = DataConfig(tasks=("scene_qa", "style_qa", "sensor"), pool_size=400, tasks_per_device=(1, 2))
    a = make_federated_data(cfg, 12, seed=3)
    b = make_federated_data(cfg, 12, seed=3)
    c = make_federated_data(cfg, 12, seed=4)
    assert a.shards.tasks == b.shards.tasks
    assert all(np.array_equal(a.shards.train[d][t], b.shards.train[d][t]) for d in range(12) for t in a.shards.tasks[d])
    assert a.shards.tasks != c.shards.tasks or any(
        not np.array_equal(a.shards.train[d][t], c.shards.train[d][t]) for d in range(12) for t in a.shards.tasks[d]
    )
    assert len(set(a.shards.tasks)) > 1  # devices differ in their tasks
    for d in range(12):
        assert 1 <= len(a.shards.tasks[d]) <= 2
        for t in a.shards.tasks[d]:
            assert set(task_spec(t).modalities) <= set(a.shards.modalities[d])
            tr, te = a.shards.train[d][t], a.shards.test[d][t]
            assert len(tr) >= cfg.min_shard and len(te) >= 1 and not set(tr) & set(te)
    for t in cfg.tasks:
        assert a.shards.counts(t).sum() > 0
    x = a.device_data(0, a.shards.tasks[0][0], "test")
    assert len(x) == len(a.shards.test[0][a.shards.tasks[0][0]])
    with pytest.raises(KeyError, match="does not hold"):
        a.device_data(0, next(t for t in cfg.tasks if t not in a.shards.tasks[0]))


def test_task_assignment_respects_bounds_or_says_why():
    from hffm_env import ConfigError
    from hffm_env.data import assign_tasks

    cfg = DataConfig(tasks=("scene_qa", "style_qa", "sensor"), tasks_per_device=(2, 2))
    tasks, mods = assign_tasks(cfg, 12, np.random.default_rng(0))
    assert all(len(t) == 2 for t in tasks)
    cfg = DataConfig(tasks=("scene_qa", "style_qa", "sensor"), tasks_per_device=(1, 1))
    tasks, _ = assign_tasks(cfg, 12, np.random.default_rng(0))
    assert all(len(t) == 1 for t in tasks) and {t for ts in tasks for t in ts} == set(cfg.tasks)
    never = DataConfig(tasks=("scene_qa", "style_qa"), modality_availability=(0.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="modality_availability"):
        assign_tasks(never, 4, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="no holder"):
        assign_tasks(
            DataConfig(tasks=("scene_qa", "style_qa", "sensor"), tasks_per_device=(1, 1)), 2, np.random.default_rng(0)
        )


def _label_shares(data, split: str, task: str) -> list[np.ndarray]:
    """Per holder of ``task``: its ``split`` shard's answer distribution."""
    labels, k = data.pools[task].label, len(task_spec(task).answers)
    shards = data.shards.test if split == "test" else data.shards.train
    return [np.bincount(labels[s[task]], minlength=k) / len(s[task]) for s in shards if task in s]


def test_global_protocol_scores_every_device_on_the_task_distribution():
    """The reference's protocol: the test part is split off the pool before the
    Dirichlet split and shared out IID; the local protocol tests on the own shard."""
    common = dict(tasks=("scene_qa",), pool_size=3000, tasks_per_device=(1, 1), dirichlet_alpha=0.1)
    glob = make_federated_data(DataConfig(**common), 6, seed=0)
    local = make_federated_data(DataConfig(**common, eval_split="local"), 6, seed=0)
    pool = glob.pools["scene_qa"].label
    k = len(task_spec("scene_qa").answers)
    everywhere = np.bincount(pool, minlength=k) / len(pool)

    part = glob.shards.test_part["scene_qa"]
    assert len(part) == 300  # test_fraction of the pool
    shares = [s["scene_qa"] for s in glob.shards.test]
    assert sorted(np.concatenate(shares).tolist()) == sorted(part.tolist())  # the part, shared out whole
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # in near-equal shares
    train = np.concatenate([s["scene_qa"] for s in glob.shards.train])
    assert not np.intersect1d(train, part).size  # never trained on
    assert len(train) + len(part) == len(pool)
    assert local.shards.test_part == {}

    def tv(dists):  # mean total-variation distance to the pool's answer distribution
        return float(np.mean([0.5 * np.abs(d - everywhere).sum() for d in dists]))

    # own-shard test sets carry the training skew; global shares do not
    assert tv(_label_shares(local, "test", "scene_qa")) > 2 * tv(_label_shares(glob, "test", "scene_qa"))
    assert tv(_label_shares(glob, "train", "scene_qa")) > 2 * tv(_label_shares(glob, "test", "scene_qa"))


def test_stratified_shares_hold_the_test_parts_answer_mix():
    """Stratified shares (the default) hold every answer in its proportional count to
    within one; ``eval_shares="random"`` gives a simple random split of the same part."""
    common = dict(tasks=("scene_qa",), pool_size=3000, tasks_per_device=(1, 1), dirichlet_alpha=0.1)
    strat = make_federated_data(DataConfig(**common), 6, seed=0)
    rand = make_federated_data(DataConfig(**common, eval_shares="random"), 6, seed=0)
    labels, k = strat.pools["scene_qa"].label, len(task_spec("scene_qa").answers)
    np.testing.assert_array_equal(strat.shards.test_part["scene_qa"], rand.shards.test_part["scene_qa"])
    part = strat.shards.test_part["scene_qa"]
    whole = np.bincount(labels[part], minlength=k)

    def worst_miss(data):  # largest distance of a share's answer count from its proportional count
        shares = [s["scene_qa"] for s in data.shards.test]
        assert sorted(np.concatenate(shares).tolist()) == sorted(part.tolist())
        return max(np.abs(np.bincount(labels[s], minlength=k) - whole * len(s) / len(part)).max() for s in shares)

    assert worst_miss(strat) < 1.0
    assert worst_miss(rand) > 2.0


def test_deal_shares_sizes_and_systematic_draws():
    from hffm_env.data.partition import deal_shares

    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    part = np.arange(100)
    for stratified in (True, False):
        shares = deal_shares(part, labels, [3, 30, 7], np.random.default_rng(1), stratified)
        assert [len(x) for x in shares] == [3, 30, 7]
        assert len(np.unique(np.concatenate(shares))) == 40  # no sample twice
    # one share of 20 drawn from 100: each answer's count within one of 20·its share
    (one,) = deal_shares(part, labels, [20], np.random.default_rng(2), True)
    assert np.abs(np.bincount(labels[one], minlength=4) - [10, 6, 3, 1]).max() < 1.0
    # more asked for than the part holds: further permutations, every share full
    shares = deal_shares(part, labels, [80, 80], np.random.default_rng(3), True)
    assert [len(x) for x in shares] == [80, 80]
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        deal_shares(part, labels, [-1], np.random.default_rng(0))


def test_eval_split_is_validated():
    from hffm_env import ConfigError

    with pytest.raises(ConfigError, match="eval_split must be one of 'global', 'local'"):
        DataConfig(eval_split="own")
    with pytest.raises(ConfigError, match="eval_shares must be one of 'stratified', 'random'"):
        DataConfig(eval_shares="iid")

"""The simulator core the Gymnasium and PettingZoo fronts share: one episode's
:class:`~hffm_env.federation.core.Federation` and its three collaborators, the
observation (:class:`~hffm_env.envs.features.Observer`, from the declared
:data:`~hffm_env.envs.features.FEATURES`), the action
(:class:`~hffm_env.envs.codec.ActionCodec`) and the reward
(:mod:`hffm_env.envs.rewards`).

A decision an env does not expose is taken by the default fixed policy:
aggregation follows ``EnvConfig.default_schedule`` (edge-only by default: every
cluster averages at its edge server each round and clusters never mix, so copies
differ across clusters and the cloud holds none), cold starts are relayed from a
specialist of the module when there is one and stay cold otherwise, no specialists,
requests run locally when the device can host the model and at the edge otherwise.
"""

from __future__ import annotations

import numpy as np

from hffm_env.envs.codec import ActionCodec
from hffm_env.envs.config import DECISIONS
from hffm_env.envs.features import Observer, table_shapes
from hffm_env.envs.rewards import RewardView, reward_terms
from hffm_env.federation.core import Federation, RoundResult, module_kinds, pair_mean
from hffm_env.scenario import Scenario


class EnvCore:
    """One episode's federation plus everything the RL fronts need from it:
    :attr:`codec` (the action), :meth:`observe` (the observation), :meth:`view`
    (what the reward is computed over)."""

    def __init__(self, scenario: Scenario, decisions: tuple[str, ...]):
        bad = [d for d in decisions if d not in DECISIONS]
        if bad or not decisions:
            raise ValueError(f"decisions must be a non-empty subset of {DECISIONS}, got {decisions!r}")
        self.scenario = scenario
        self.config = scenario.env
        self.decisions = tuple(d for d in DECISIONS if d in decisions)
        net = scenario.network
        self.n_devices = net.n_devices
        self.n_clusters = net.n_clusters
        self.tasks = tuple(scenario.data.tasks)
        self.fed: Federation | None = None
        # the spaces' shapes follow from the scenario alone
        self.kinds = module_kinds(scenario)
        self.codec = ActionCodec(self)
        self.obs_shapes = table_shapes(self)
        self._observer = Observer(self)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> None:
        self.fed = Federation(self.scenario, seed=seed)
        fed = self.fed
        if fed.kinds != self.kinds:
            raise RuntimeError(f"the federation's kinds {fed.kinds} differ from the scenario's {self.kinds}")
        lat_ref, en_ref = fed.reference_round_cost()
        self.latency_scale = self.config.latency_scale_s or lat_ref
        self.energy_scale = self.config.energy_scale_j or en_ref
        self.round = 0
        self.energy_spent = 0.0
        self.latency_spent = 0.0
        self.sync_metrics()
        self.last = {"delta_score": 0.0, "latency": 0.0, "energy": 0.0}
        self.last_result: RoundResult | None = None
        self._scored = (self.score, self.score)
        self._served: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0))
        self._team_served = 0.0

    def observe(self) -> dict[str, np.ndarray]:
        """The observation ``Dict`` (see :data:`~hffm_env.envs.features.FEATURES`)."""
        return self._observer.observe()

    def sync_metrics(self) -> None:
        """Score the federation's copies as they stand (the baseline of the next Δscore)."""
        fed = self.fed
        fed.accuracy, fed.p_correct = fed.measure()
        self._take_metrics(fed.accuracy, fed.p_correct)

    def _rebase(self, events) -> None:
        """The round's events (drawn after it was scored) changed who is scored on
        what: score the changed devices' copies on their new sets, so the next Δscore
        compares the same set before and after and only the model moves it."""
        fed = self.fed
        changed = {int(e["device"]) for e in events}
        acc, prob = fed.measure(devices=changed)
        fed.accuracy = {d: v for d, v in {**fed.accuracy, **acc}.items() if d not in changed or d in acc}
        fed.p_correct = {d: v for d, v in {**fed.p_correct, **prob}.items() if d not in changed or d in prob}
        self._take_metrics(fed.accuracy, fed.p_correct)

    def _take_metrics(self, accuracy: dict, p_correct: dict) -> None:
        self.accuracy = accuracy
        self.score = p_correct if self.config.reward_metric == "p_correct" else accuracy
        self.mean_score = _mean(self.score)

    # ------------------------------------------------------------------ reward
    def view(self, devices=None, energy: float | None = None, invalid: int | None = None) -> RewardView:
        """The last round as the team (``devices`` None) or a set of devices saw it:
        Δscore over their (device, task) pairs, the served score of their requests;
        ``energy`` (in reference rounds) and ``invalid`` default to the team's."""
        res = self.last_result
        if devices is None:
            delta, served = self.last["delta_score"], self._team_served
        else:
            devices = [int(d) for d in devices]
            before, after = self._scored
            delta = _mean_of(after, devices) - _mean_of(before, devices)
            requesters, scores = self._served
            mine = np.isin(requesters, devices)
            served = float(scores[mine].mean()) if mine.any() else 0.0
        return RewardView(
            delta_score=delta,
            served_score=served,
            latency=self.last["latency"],
            energy=self.last["energy"] if energy is None else energy,
            invalid=len(self.codec.invalid) if invalid is None else invalid,
            cold_starts=len(self.fed.cold_starts),
            result=res,
        )

    # ------------------------------------------------------------------ step
    def step(self, action) -> tuple[float, bool, bool, dict]:
        c = self.config
        parts = self.codec.split(action)
        requesters = np.asarray(self.fed.requests.device, dtype=np.int64).copy() if len(self.fed.requests) else None
        res = self.fed.run_round(self.codec.ops(parts))
        self.last_result = res
        self.round += 1
        prev, before = self.mean_score, self.score
        self._take_metrics(res.accuracy, res.p_correct)
        self._scored = (before, self.score)
        delta = self.mean_score - prev
        if res.events:
            self._rebase(res.events)
        acc = res.mean_accuracy if np.isfinite(res.mean_accuracy) else 0.0
        served_acc, served = 0.0, 0.0
        self._served = (np.zeros(0, np.int64), np.zeros(0))
        if res.inference is not None and len(res.inference.correct):
            inf = res.inference
            served_acc = inf.accuracy
            served = inf.mean_p_correct if c.reward_metric == "p_correct" else served_acc
            per = inf.p_correct if c.reward_metric == "p_correct" else inf.correct
            if requesters is not None and per is not None and len(per) == len(requesters):
                self._served = (requesters, np.asarray(per, dtype=np.float64))
        self._team_served = served
        lat, en = res.latency_s / self.latency_scale, res.energy_j / self.energy_scale
        self.energy_spent += res.energy_j
        self.latency_spent += res.latency_s
        self.last = {"delta_score": delta, "latency": lat, "energy": en}
        terms = reward_terms(self.view(), c)
        reward = float(sum(terms.values()))
        terminated = c.energy_budget_j is not None and self.energy_spent > c.energy_budget_j
        truncated = self.round >= c.max_rounds

        info = {
            "round": self.round,
            "mean_accuracy": acc,
            "mean_p_correct": _mean(res.p_correct),
            "delta_score": delta,
            "latency_s": res.latency_s,
            "energy_j": res.energy_j,
            "served_accuracy": served_acc,
            "served_score": served,
            "reward_terms": terms,
            "accuracy_per_task": res.task_accuracy,
            "accuracy_per_node": {int(d): dict(v) for d, v in res.accuracy.items()},
            "per_module": {
                k: {"bytes": v.bytes, "seconds": v.seconds, "joules": v.joules} for k, v in res.cost.per_module.items()
            },
            "per_link": {
                k: {"bytes": v.bytes, "seconds": v.seconds, "joules": v.joules} for k, v in res.cost.per_link.items()
            },
            "energy_spent_j": self.energy_spent,
            "events": [dict(e) for e in res.events],
            "cold_starts": len(res.cold_starts),
            "operations": [op.get("op") for op in res.operations],
            "invalid_actions": list(self.codec.invalid),
            "faults": [dict(f) for f in res.faults],
        }
        return reward, bool(terminated), bool(truncated), info


def _mean(metric: dict[int, dict[str, float]]) -> float:
    """Mean over (device, task) pairs; 0 when no device has a task."""
    m = pair_mean(metric)
    return m if np.isfinite(m) else 0.0


def _mean_of(metric: dict[int, dict[str, float]], devices: list[int]) -> float:
    """Mean over the (device, task) pairs of ``devices``; 0 when they have none."""
    vals = [v for d in devices for v in metric.get(d, {}).values()]
    return float(np.mean(vals)) if vals else 0.0

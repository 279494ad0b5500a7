"""The simulator core the Gymnasium and PettingZoo fronts share: observations, action
decoding and masks, reward, over one :class:`~hffm_env.federation.core.Federation`.

Decisions (``EnvConfig``/``DECISIONS``), each a block of a ``MultiDiscrete`` action:

* **aggregation** — per cluster and module group (``AGG_GROUPS``), one of
  ``AGG_OPTIONS``: nothing, D2D consensus (gather at the head), edge aggregation
  (devices upload, or the head uploads after a D2D gather), cloud aggregation
  (the same two paths to the edge servers, then up), or star (the cluster's devices
  send straight to the cloud; the star clusters aggregate together there);
* **relaying** — per pending cold-start slot, one of ``RELAY_OPTIONS``: leave it cold,
  relay from the best D2D peer, from the edge server's copy, from the cloud's copy,
  or from the best holder anywhere through the servers;
* **specialization** — per device and specialisable kind (encoders, heads), whether
  the device is a specialist of it (changes become assign/revoke operations);
* **offloading** — per pending request slot, one of ``OFFLOAD_TARGETS``.

A decision an env does not expose is taken by the default fixed policy:
aggregation follows ``EnvConfig.default_schedule`` (edge-only by default: every
cluster averages at its edge server each round and clusters never mix, so copies
differ across clusters and the cloud holds none), cold starts are relayed from a
specialist of the module when there is one and stay cold otherwise, no specialists,
requests run locally when the device can host the model and at the edge otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from hffm_env.data.registry import MODALITIES
from hffm_env.envs.config import DECISIONS
from hffm_env.federation.core import Federation, RoundResult, module_kinds, pair_mean
from hffm_env.federation.ops import OFFLOAD_TARGETS, Aggregate, Offload, Relay, Specialize
from hffm_env.federation.schedules import schedule_ops
from hffm_env.model.banks import gather, parse_kind
from hffm_env.network.schedules import table1_schedules
from hffm_env.scenario import Scenario

AGG_GROUPS = (("adapters",), ("prompts",), ("experts", "gate"), ("encoders",), ("heads",))
AGG_OPTIONS = ("none", "d2d", "edge", "edge_via_head", "cloud", "cloud_via_head", "star")
RELAY_OPTIONS = ("none", "d2d_peer", "edge_copy", "cloud_copy", "best_anywhere")


class InvalidAction(ValueError):
    """An action outside the space or masked out."""


class EnvCore:
    """One episode's federation plus everything the RL fronts need from it."""

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
        self.groups = []
        for g in AGG_GROUPS:
            ks = [k for k in self.kinds if parse_kind(k).in_group(g)]
            if ks:
                self.groups.append(tuple(ks))
        self.special_kinds = tuple(k for k in self.kinds if parse_kind(k).family in ("heads", "encoders"))

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> None:
        self.fed = Federation(self.scenario, seed=seed)
        fed = self.fed
        assert fed.kinds == self.kinds
        lat_ref, en_ref = fed.reference_round_cost()
        self.latency_scale = self.config.latency_scale_s or lat_ref
        self.energy_scale = self.config.energy_scale_j or en_ref
        self.round = 0
        self.energy_spent = 0.0
        self.latency_spent = 0.0
        self.sync_metrics()
        self.last = {"delta_score": 0.0, "latency": 0.0, "energy": 0.0}
        self.last_result: RoundResult | None = None

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

    # ------------------------------------------------------------------ spaces
    def action_nvec(self, decision: str) -> np.ndarray:
        c = self.config
        if decision == "aggregation":
            return np.full(self.n_clusters * len(self.groups), len(AGG_OPTIONS))
        if decision == "relaying":
            return np.full(c.max_cold_starts, len(RELAY_OPTIONS))
        if decision == "specialization":
            return np.full(self.n_devices * len(self.special_kinds), 2)
        return np.full(c.max_requests, len(OFFLOAD_TARGETS))

    def nvec(self) -> np.ndarray:
        return np.concatenate([self.action_nvec(d) for d in self.decisions])

    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        K, T, M = len(self.kinds), len(self.tasks), len(MODALITIES)
        return {
            "devices": (self.n_devices, 1 + M + T + 4 + 1 + T + 3 * K + K + K),
            "clusters": (self.n_clusters, 4 + T + 2 * K),
            "globals": (9,),
            "requests": (self.config.max_requests, 3 + T + len(OFFLOAD_TARGETS) + 1),
            "cold_starts": (self.config.max_cold_starts, 2 + K + len(RELAY_OPTIONS)),
        }

    # ------------------------------------------------------------------ observation
    def observe(self) -> dict[str, np.ndarray]:
        fed, topo = self.fed, self.fed.topology
        D, C, K, T = self.n_devices, self.n_clusters, len(self.kinds), len(self.tasks)
        mem = fed.members
        edges = topo.tier_ids(1)
        div_c, div_g, div_s = self._divergence(edges)
        r = max(fed.round_index, 0)
        # rounds since a copy was received, in episodes (never received: the rounds so far + 1)
        stale = (np.where(fed.last_sync >= 0, r - fed.last_sync, r + 1) / self.config.max_rounds).astype(np.float32)
        acc = np.zeros((D, T), dtype=np.float32)
        for d, per in self.score.items():
            for t, a in per.items():
                acc[d, self.tasks.index(t)] = a
        up = fed.net.uplink_rate_bps if fed.net.round_index >= 0 else np.zeros(fed.n_nodes)
        host = fed.can_host()
        spec = np.zeros((D, K), dtype=np.float32)
        for d, k in fed.roles.specialists:
            spec[d, self.kinds.index(k)] = 1
        cold = np.zeros((D, K), dtype=np.float32)
        for cs in fed.cold_starts:
            cold[cs.node, self.kinds.index(cs.kind)] = 1
        dev = np.concatenate(
            [
                mem.active[:, None],
                np.array([[m in mem.modalities[d] for m in MODALITIES] for d in range(D)]),
                np.array([[t in fed.active_tasks(d) for t in self.tasks] for d in range(D)]),
                np.array(
                    [
                        [
                            sum(len(mem.train[d][t]) for t in fed.active_tasks(d)) / self.scenario.data.pool_size,
                            topo.cluster[d] / max(C - 1, 1),
                            float(d in topo.heads),
                            float(host[d]),
                        ]
                        for d in range(D)
                    ]
                ),
                _log_rate(up[:D, None]),
                acc,
                stale[:D],
                div_c,
                div_g,
                spec,
                cold,
            ],
            axis=1,
        ).astype(np.float32)
        sizes = topo.cluster_sizes()
        active_c = np.bincount(topo.cluster[mem.active], minlength=C)
        cl_acc = np.zeros((C, T), dtype=np.float32)
        for c in range(C):
            members = [d for d in topo.members(c) if d in self.score]
            for j, t in enumerate(self.tasks):
                vals = [self.score[d][t] for d in members if t in self.score[d]]
                cl_acc[c, j] = np.mean(vals) if vals else 0.0
        heads = topo.heads
        head_up = np.array([up[h] if h >= 0 else 0.0 for h in heads])
        clus = np.concatenate(
            [
                np.stack(
                    [
                        sizes / max(self.n_devices, 1),
                        active_c / max(self.n_devices, 1),
                        _log_rate(head_up),
                        _log_rate(up[edges]),
                    ],
                    axis=1,
                ),
                cl_acc,
                stale[edges],
                div_s,
            ],
            axis=1,
        ).astype(np.float32)
        R = self.config.max_rounds
        # costs in reference rounds as log(1 + x): about x for a normal round, finite in
        # float32 however costly a scenario is
        costs = np.log1p(
            [
                self.energy_spent / self.energy_scale / R,
                self.latency_spent / self.latency_scale / R,
                self.last["latency"],
                self.last["energy"],
            ]
        )
        glob = np.array(
            [
                self.round / R,
                costs[0],
                costs[1],
                self.mean_score,
                self.last["delta_score"],
                costs[2],
                costs[3],
                len(fed.cold_starts) / self.config.max_cold_starts,
                len(fed.requests) / self.config.max_requests,
            ],
            dtype=np.float32,
        )
        return {
            "devices": dev,
            "clusters": clus,
            "globals": glob,
            "requests": self._request_rows(),
            "cold_starts": self._cold_rows(),
        }

    def _flat(self, kind: str, rows: np.ndarray) -> torch.Tensor:
        fed = self.fed
        copies = gather(fed.bank, fed.names_of([kind]), torch.as_tensor(rows))
        return torch.cat([t.reshape(len(rows), -1) for t in copies.values()], 1)

    def _divergence(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per device and kind: relative L2 distance of its copy to the mean copy of
        the holders in its cluster, and of all holders (0 where not held); per edge
        server and kind: of its copy to the holders' mean."""
        fed, topo = self.fed, self.fed.topology
        D, K = self.n_devices, len(self.kinds)
        div_c = np.zeros((D, K), dtype=np.float32)
        div_g = np.zeros((D, K), dtype=np.float32)
        div_s = np.zeros((len(edges), K), dtype=np.float32)
        averaging: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}  # per holder set (kinds share them)
        for j, k in enumerate(self.kinds):
            held = np.nonzero(fed.holds(k))[0]
            if held.size == 0:
                continue
            both = self._flat(k, np.concatenate([held, edges])).double()  # one gather: holders, then servers
            x = both[: held.size]
            g = x.mean(0)
            g_norm = g.norm() + 1e-8
            dist = ((both - g).norm(dim=1) / g_norm).numpy()  # holders, then servers
            div_g[held, j], div_s[:, j] = dist[: held.size], dist[held.size :]
            key = held.tobytes()
            if key not in averaging:
                # every cluster's mean copy at once: a [clusters, holders] averaging matrix
                _, cl = np.unique(topo.cluster[held], return_inverse=True)
                avg = torch.from_numpy(cl.ravel()[None, :] == np.arange(cl.max() + 1)[:, None]).double()
                averaging[key] = (avg / avg.sum(1, keepdim=True), torch.from_numpy(cl.ravel()))
            avg, cl = averaging[key]
            m = (avg @ x)[cl]
            div_c[held, j] = ((x - m).norm(dim=1) / (m.norm(dim=1) + 1e-8)).numpy()
        return div_c, div_g, div_s

    def _request_rows(self) -> np.ndarray:
        fed = self.fed
        R, T = self.config.max_requests, len(self.tasks)
        rows = np.zeros(self.obs_shapes()["requests"], dtype=np.float32)
        req = fed.requests
        mask = fed.offload_mask() if len(req) else np.zeros((0, len(OFFLOAD_TARGETS)), dtype=bool)
        for i in range(min(len(req), R)):
            d, t = int(req.device[i]), req.task[i]
            rows[i, :3] = (1.0, d / max(self.n_devices - 1, 1), fed.topology.cluster[d] / max(self.n_clusters - 1, 1))
            rows[i, 3 + self.tasks.index(t)] = 1.0
            rows[i, 3 + T : 3 + T + len(OFFLOAD_TARGETS)] = mask[i]
            rows[i, -1] = fed.input_bytes(t) / 1e3
        return rows

    def _cold_rows(self) -> np.ndarray:
        K = len(self.kinds)
        rows = np.zeros(self.obs_shapes()["cold_starts"], dtype=np.float32)
        for i, cs in enumerate(self.fed.cold_starts[: self.config.max_cold_starts]):
            rows[i, 0] = 1.0
            rows[i, 1] = cs.node / max(self.n_devices - 1, 1)
            rows[i, 2 + self.kinds.index(cs.kind)] = 1.0
            rows[i, 2 + K :] = [s is not None for s in self.relay_sources(cs.node, cs.kind)]
        return rows

    # ------------------------------------------------------------------ relay sources
    def relay_sources(self, target: int, kind: str) -> list[tuple[int, str] | None]:
        """For each of ``RELAY_OPTIONS``: the (source node, path) it would use, or None when unavailable."""
        fed, topo = self.fed, self.fed.topology
        ki = fed.kind_index(kind)
        held = fed.trained_ever[: self.n_devices, ki] & fed.members.active & ~fed.cold(kind)
        held[target] = False
        cands = np.nonzero(held)[0]

        def rank(d):
            spec = fed.is_specialist(d, kind)
            acc = self.score.get(int(d), {})
            task = parse_kind(kind).task
            score = acc.get(task, 0.0) if task else (np.mean(list(acc.values())) if acc else 0.0)
            return (spec, score, -int(d))

        comp = fed.net.d2d_components(working=False)  # what is known before the round
        same = [d for d in cands if comp[d] == comp[target]]
        edge = int(topo.parent[target])
        out: list[tuple[int, str] | None] = [("none", "")]  # placeholder for option 0
        out.append((int(max(same, key=rank)), "d2d") if same else None)
        out.append((edge, "edge") if fed.last_sync[edge, ki] >= 0 else None)
        out.append((topo.top, "cloud") if fed.last_sync[topo.top, ki] >= 0 else None)
        out.append((int(max(cands, key=rank)), "edge") if len(cands) else None)
        return out

    # ------------------------------------------------------------------ masks
    def masks(self, decision: str) -> np.ndarray:
        """Per action dimension, which options are valid (bool ``[dims, options]``)."""
        fed = self.fed
        nvec = self.action_nvec(decision)
        m = np.zeros((len(nvec), int(nvec.max())), dtype=bool)
        if decision == "aggregation":
            active = np.bincount(fed.topology.cluster[fed.members.active], minlength=self.n_clusters) > 0
            for c in range(self.n_clusters):
                for g in range(len(self.groups)):
                    m[c * len(self.groups) + g] = True if active[c] else [True] + [False] * (len(AGG_OPTIONS) - 1)
        elif decision == "relaying":
            m[:, 0] = True
            for i, cs in enumerate(fed.cold_starts[: len(nvec)]):
                m[i] = [s is not None for s in self.relay_sources(cs.node, cs.kind)]
        elif decision == "specialization":
            m[:, 0] = True
            for d in range(self.n_devices):
                for j, k in enumerate(self.special_kinds):
                    m[d * len(self.special_kinds) + j, 1] = bool(fed.holds(k)[d])
        else:
            m[:, 0] = True
            if len(fed.requests):
                valid = fed.offload_mask()[: len(nvec)]
                m[: len(valid)] = valid
        return m

    def action_masks(self) -> np.ndarray:
        """Flat mask over every option of every dimension (sb3-contrib's MaskablePPO format)."""
        parts = []
        for d in self.decisions:
            m = self.masks(d)
            parts.append(np.concatenate([row[:n] for row, n in zip(m, self.action_nvec(d))]))
        return np.concatenate(parts)

    # ------------------------------------------------------------------ actions
    def split(self, action) -> dict[str, np.ndarray]:
        nvec = self.nvec()
        a = np.asarray(action)
        if a.dtype == np.bool_:  # MultiDiscrete.contains accepts bools (0/1)
            a = a.astype(np.int64)
        if a.shape != nvec.shape or not np.issubdtype(a.dtype, np.integer):
            raise InvalidAction(
                f"action must be an integer array of shape {tuple(nvec.shape)}, got {a.dtype} {a.shape}"
            )
        if np.any(a < 0) or np.any(a >= nvec):
            i = int(np.nonzero((a < 0) | (a >= nvec))[0][0])
            raise InvalidAction(f"action[{i}]={a[i]} is outside [0, {nvec[i] - 1}]")
        out, start = {}, 0
        for d in self.decisions:
            n = len(self.action_nvec(d))
            out[d] = a[start : start + n].astype(np.int64).copy()
            start += n
        self.invalid = []
        for d, part in out.items():
            m = self.masks(d)
            bad = ~m[np.arange(len(part)), part]
            if not bad.any():
                continue
            i = int(np.nonzero(bad)[0][0])
            if self.config.invalid_action == "raise":
                raise InvalidAction(f"{d} action[{i}]={part[i]} is masked out; allowed: {np.nonzero(m[i])[0].tolist()}")
            fallback = self.default_choices(d)
            for i in np.nonzero(bad)[0]:
                self.invalid.append(
                    {"decision": d, "index": int(i), "choice": int(part[i]), "replaced_by": int(fallback[i])}
                )
            part[bad] = fallback[bad]
        return out

    def default_choices(self, decision: str) -> np.ndarray:
        """What replaces a masked choice in ``decision``'s block, per dimension: the
        default offloading target, relaying from a specialist (:meth:`default_relay`),
        0 everywhere else (no aggregation, no specialist)."""
        n = len(self.action_nvec(decision))
        out = np.zeros(n, dtype=np.int64)
        if decision == "offloading" and len(self.fed.requests):
            default = [OFFLOAD_TARGETS.index(t) for t in self.fed.default_offload()][:n]
            out[: len(default)] = default
        if decision == "relaying":
            for i, cs in enumerate(self.fed.cold_starts[:n]):
                out[i] = self.default_relay(cs.node, cs.kind)
        return out

    def default_relay(self, target: int, kind: str) -> int:
        """The default policy's ``RELAY_OPTIONS`` index for a cold start: specialists
        are the known providers of their modules (paper Sec. V-C), so a cold start
        is relayed from a specialist of the kind when one can send it (over D2D when
        the best D2D peer is one, else through the servers), and stays cold otherwise."""
        sources = self.relay_sources(target, kind)
        for option in ("d2d_peer", "best_anywhere"):
            src = sources[RELAY_OPTIONS.index(option)]
            if src is not None and self.fed.is_specialist(src[0], kind):
                return RELAY_OPTIONS.index(option)
        return 0

    def ops(self, parts: dict[str, np.ndarray]) -> list:
        fed = self.fed
        ops: list = []
        if "specialization" in parts:
            want = parts["specialization"].reshape(self.n_devices, len(self.special_kinds)).astype(bool)
            for d in range(self.n_devices):
                for j, k in enumerate(self.special_kinds):
                    if want[d, j] != fed.is_specialist(d, k):
                        ops.append(Specialize(d, k, revoke=not want[d, j]))
        # the cold starts the action has no slot for (all of them when relaying is not
        # exposed) take the default policy's choice
        pending = list(fed.cold_starts)
        given = parts["relaying"][: len(pending)] if "relaying" in parts else np.zeros(0, dtype=np.int64)
        for i, cs in enumerate(pending):
            choice = int(given[i]) if i < len(given) else self.default_relay(cs.node, cs.kind)
            if choice:
                src, path = self.relay_sources(cs.node, cs.kind)[choice]
                ops.append(Relay(cs.kind, src, cs.node, path))
        if "aggregation" in parts:
            ops += self._aggregation_ops(parts["aggregation"])
        else:
            ops += self._default_aggregation()
        if "offloading" in parts and len(fed.requests):
            codes = parts["offloading"][: len(fed.requests)]
            default = fed.default_offload()
            targets = [OFFLOAD_TARGETS[int(c)] for c in codes] + list(default[len(codes) :])
            ops.append(Offload(tuple(targets)))
        return ops

    def _aggregation_ops(self, a: np.ndarray) -> list:
        choice = a.reshape(self.n_clusters, len(self.groups))
        ops = []
        for g, kinds in enumerate(self.groups):
            col = choice[:, g]
            d2d = np.nonzero(col == 1)[0]
            if d2d.size:
                ops.append(("d2d", kinds, tuple(d2d.tolist()), ()))
            for scope, (direct, via) in (("edge", (2, 3)), ("cloud", (4, 5))):
                cl = np.nonzero((col == direct) | (col == via))[0]
                if cl.size:
                    ops.append((scope, kinds, tuple(cl.tolist()), tuple(np.nonzero(col == via)[0].tolist())))
            star = np.nonzero(col == AGG_OPTIONS.index("star"))[0]
            if star.size:
                ops.append(("star", kinds, tuple(star.tolist()), ()))
        # groups with the same choice in every cluster move together, as one operation
        merged: dict[tuple, list[str]] = {}
        for scope, kinds, clusters, via in ops:
            merged.setdefault((scope, clusters, via), []).extend(kinds)
        return [
            Aggregate(tuple(kinds), "cloud", "star", clusters)
            if scope == "star"
            else Aggregate(tuple(kinds), scope, "gather", clusters)
            if scope == "d2d"
            else Aggregate(tuple(kinds), scope, "d2d", clusters, d2d_clusters=via)
            if via
            else Aggregate(tuple(kinds), scope, "direct", clusters)
            for (scope, clusters, via), kinds in merged.items()
        ]

    def _default_aggregation(self) -> list:
        key = self.config.default_schedule
        if key == "none":
            return []
        return schedule_ops(table1_schedules()[key], self.round + 1, self.fed.kinds)

    # ------------------------------------------------------------------ step
    def step(self, action) -> tuple[float, bool, bool, dict]:
        c = self.config
        parts = self.split(action)
        ops = self.ops(parts)
        res = self.fed.run_round(ops)
        self.last_result = res
        self.round += 1
        prev = self.mean_score
        self._take_metrics(res.accuracy, res.p_correct)
        delta = self.mean_score - prev
        if res.events:
            self._rebase(res.events)
        acc = res.mean_accuracy if np.isfinite(res.mean_accuracy) else 0.0
        served_acc, served = 0.0, 0.0
        if res.inference is not None and len(res.inference.correct):
            served_acc = res.inference.accuracy
            served = res.inference.mean_p_correct if c.reward_metric == "p_correct" else served_acc
        lat, en = res.latency_s / self.latency_scale, res.energy_j / self.energy_scale
        self.energy_spent += res.energy_j
        self.latency_spent += res.latency_s
        self.last = {"delta_score": delta, "latency": lat, "energy": en}
        terms = {
            "accuracy": c.w_acc * delta,
            "inference": c.w_inference * served,
            "latency": -c.w_latency * lat,
            "energy": -c.w_energy * en,
        }
        if self.invalid:
            terms["invalid"] = -c.invalid_penalty * len(self.invalid)
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
            "invalid_actions": list(self.invalid),
            "faults": [dict(f) for f in res.faults],
        }
        return reward, bool(terminated), bool(truncated), info


def _log_rate(rate_bps) -> np.ndarray:
    """A link rate as log10(1 + Mbit/s): 0 for none, about 2 for 100 Mbit/s."""
    return np.log10(1.0 + np.nan_to_num(np.asarray(rate_bps, dtype=np.float64)) / 1e6)


def _mean(metric: dict[int, dict[str, float]]) -> float:
    """Mean over (device, task) pairs; 0 when no device has a task."""
    m = pair_mean(metric)
    return m if np.isfinite(m) else 0.0

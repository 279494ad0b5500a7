"""The federated round: local training → operations → evaluation, charged on the fog network.

One :class:`Federation` holds a seeded fog network, the federated data and one
module bank whose holder axis is the network's node axis: row ``i`` is node
``i``'s copy (devices first, then edge servers, then the cloud, as
:class:`~hffm_env.network.topology.Topology` numbers them). Aggregation is a
mixing matrix over that axis, a relay an index copy, local training one batched
pass. Every operation charges the ledger with the real byte size of the modules it
moves (times ``FederationConfig.payload_scale``).

A round::

    fed.begin_round()                  # channel state, ledger round opened
    fed.relay("heads.scene_qa", 3, 5, "d2d")       # serve a cold start
    fed.train()                        # local fine-tuning (+ specialists)
    fed.aggregate(("adapters", "heads"), "edge")
    fed.serve(["local", "edge", ...])  # this round's inference requests
    result = fed.end_round()           # evaluation, costs, next round's events

or ``fed.run_round([Relay(...), Aggregate(...), Offload(...)])``.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch

from hffm_env._validation import ConfigError, check_int
from hffm_env.data import FederatedData, Shards, make_federated_data, task_spec
from hffm_env.data.registry import MODALITIES
from hffm_env.federation.faults import FaultsMixin
from hffm_env.federation.membership import MembershipMixin
from hffm_env.federation.op_aggregate import AggregateOp
from hffm_env.federation.op_relay import RelayOp
from hffm_env.federation.op_serve import ServeOp
from hffm_env.federation.op_specialize import SpecializeOp
from hffm_env.federation.ops import Aggregate, Offload, Relay, Specialize
from hffm_env.federation.records import (
    SPECIALIST_GROUP,
    ColdStart,
    InferenceResult,
    Membership,
    Requests,
    Roles,
    RoundResult,
    pair_mean,
)
from hffm_env.federation.state import BankState
from hffm_env.federation.training import TrainingMixin
from hffm_env.model.backbone import FrozenBackbone, build_vilt
from hffm_env.model.banks import ENCODER_OF, Bank, head_kind, init_bank, kind_of, parse_kind, payload_bytes
from hffm_env.model.config import ModelConfig
from hffm_env.model.train import AdamState, evaluate_metrics
from hffm_env.network.config import LinkFaultConfig
from hffm_env.network.fog import FogNetwork
from hffm_env.network.ledger import Ledger
from hffm_env.network.schedules import charge_aggregation_parts
from hffm_env.scenario import Scenario

__all__ = [
    "SHARED_KINDS",
    "SPECIALIST_GROUP",
    "ColdStart",
    "Federation",
    "InferenceResult",
    "Membership",
    "Requests",
    "Roles",
    "RoundResult",
    "load_backbone",
    "module_kinds",
    "pair_mean",
]

SHARED_KINDS = ("adapters", "prompts", "experts", "gate")


@lru_cache(maxsize=4)
def load_backbone(config: ModelConfig) -> FrozenBackbone:
    """The frozen backbone of a model config (cached: it is read-only)."""
    return FrozenBackbone(build_vilt(config), compute_dtype=getattr(torch, config.backbone_dtype))


def module_kinds(scenario: Scenario) -> tuple[str, ...]:
    """The module kinds a scenario's model has and moves: the shared kinds of nonzero
    size, the encoder of every modality its tasks use, one head per task."""
    tasks = tuple(scenario.data.tasks)
    fresh = init_bank(
        scenario.model, {t: len(task_spec(t).answers) for t in tasks}, 1, torch.Generator().manual_seed(0)
    )
    sizes = payload_bytes(fresh)
    used = {m for t in tasks for m in task_spec(t).modalities}
    return tuple(
        [k for k in SHARED_KINDS if sizes.get(k, 0) > 0]
        + [ENCODER_OF[m] for m in MODALITIES if m in used]
        + [head_kind(t) for t in tasks]
    )


class Federation(MembershipMixin, FaultsMixin, TrainingMixin, AggregateOp, RelayOp, SpecializeOp, ServeOp):
    """A seeded federation of module banks over a fog network.

    Parameters
    ----------
    scenario:
        Network, data, model and federation configs.
    seed:
        Every draw of the run flows from it (placement, data, initial modules,
        training batches, events, requests, noise); ``scenario.seed`` when None.
    """

    def __init__(self, scenario: Scenario, seed: int | None = None):
        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a Scenario, got {type(scenario).__name__}")
        self.scenario = scenario
        self.config = scenario.federation
        seed = scenario.seed if seed is None else check_int("seed", seed, low=0)
        self.seed = seed
        root = np.random.SeedSequence(seed)
        # a 7th child leaves the first six (and so every other stream's draws) as they were
        net_ss, train_ss, event_ss, role_ss, torch_ss, fault_ss, bucket_ss = root.spawn(7)
        self._net_seed = net_ss
        self.net = FogNetwork(scenario.network, np.random.default_rng(net_ss))
        self.topology = self.net.topology
        self.rng = np.random.default_rng(train_ss)
        self.event_rng = np.random.default_rng(event_ss)
        self.fault_rng = np.random.default_rng(fault_ss)
        self.torch_gen = torch.Generator().manual_seed(int(torch_ss.generate_state(1)[0]))
        self.bucket_gen = torch.Generator().manual_seed(int(bucket_ss.generate_state(1)[0]))
        self.n_devices = self.topology.n_devices
        self.n_nodes = self.topology.n_nodes
        self.model_config = scenario.model
        self.backbone = load_backbone(scenario.model)
        self.data = make_federated_data(scenario.data, self.n_devices, seed)
        self.tasks = tuple(scenario.data.tasks)
        answers = {t: len(task_spec(t).answers) for t in self.tasks}
        gen = torch.Generator().manual_seed(int(root.generate_state(1)[0]))
        self.fresh = init_bank(scenario.model, answers, 1, gen)
        sizes = payload_bytes(self.fresh)
        self.kinds: tuple[str, ...] = module_kinds(scenario)
        E = scenario.model.n_experts
        k_e = self.config.experts_per_device
        if k_e is not None and k_e > E:
            raise ConfigError(
                f"federation.experts_per_device must be an integer in [1, {E}] (model.n_experts), got {k_e}"
            )
        role_rng = np.random.default_rng(role_ss)
        expert_mask = np.ones((self.n_nodes, E), dtype=bool)
        if k_e is not None and k_e < E:
            expert_mask[: self.n_devices] = False
            for d in range(self.n_devices):
                expert_mask[d, role_rng.choice(E, size=k_e, replace=False)] = True
        self.state = BankState.fresh(self.fresh, self.n_nodes, len(self.kinds), expert_mask)
        scale = self.config.payload_scale
        self.wire_bytes = {k: sizes[k] * scale * ((k_e or E) / E if k == "experts" else 1.0) for k in self.kinds}
        sh = self.data.shards
        self.members = Membership(
            np.ones(self.n_devices, dtype=bool),
            [set(m) for m in sh.modalities],
            [list(t) for t in sh.tasks],
            [dict(x) for x in sh.train],
            [dict(x) for x in sh.test],
        )
        self.roles = Roles()
        adv = self.config.adversaries
        n_adv = int(round(adv.fraction * self.n_devices))
        for d in role_rng.choice(self.n_devices, size=n_adv, replace=False):
            self.roles.attack[int(d)] = (adv.attack, adv.strength)
        inf = self.config.inference
        self.model_bytes = (
            inf.model_bytes
            if inf.model_bytes is not None
            else float(
                sum(p.numel() * p.element_size() for p in self.backbone.parameters())
                + sum(t[0].numel() * t.element_size() for t in self.fresh.values())
            )
        )
        self.memory_bytes = role_rng.uniform(*inf.device_memory_bytes_range, size=self.n_devices)
        self.ledger = Ledger(keep_rounds=self.config.keep_ledger_rounds)
        self.round_index = -1
        self.accuracy: dict[int, dict[str, float]] = {}
        self.p_correct: dict[int, dict[str, float]] = {}
        self.cold_starts: list[ColdStart] = []
        self.requests = self._draw_requests()
        self._view_cache: tuple[int, FederatedData] | None = None
        self._tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._tables_version = -1
        self._open = False
        self._trained = False
        self._ops: list[dict] = []
        self._events: list[dict] = []
        self._inference: InferenceResult | None = None
        self._losses = np.zeros(0)
        self._participants = np.zeros(0, dtype=np.int64)
        self.edge_down = np.zeros(self.topology.n_clusters, dtype=bool)
        self._clear_faults()

    # the bank state's parts, read by every operation
    @property
    def bank(self) -> Bank:
        return self.state.bank

    @property
    def synced(self) -> Bank:
        return self.state.synced

    @property
    def adam(self) -> AdamState:
        return self.state.adam

    @property
    def last_sync(self) -> np.ndarray:
        return self.state.last_sync

    @property
    def last_train(self) -> np.ndarray:
        return self.state.last_train

    @property
    def trained_ever(self) -> np.ndarray:
        return self.state.trained_ever

    @property
    def expert_mask(self) -> np.ndarray:
        return self.state.expert_mask

    def reference_round_cost(self) -> tuple[float, float]:
        """Latency (s) and energy (J) of one cloud aggregation of every module by every
        device (devices upload to their edge servers) on this run's network in its
        first round: the yardstick the envs normalise costs by. Priced on a scratch
        copy of the network without link faults; the run itself is not touched."""
        if not hasattr(self, "_reference"):
            scratch = FogNetwork(
                replace(self.scenario.network, faults=LinkFaultConfig()),
                np.random.default_rng(
                    np.random.SeedSequence(self._net_seed.entropy, spawn_key=self._net_seed.spawn_key)
                ),
            )
            scratch.new_round()
            ledger = Ledger()
            ledger.begin_round(0)
            charge_aggregation_parts(
                scratch, ledger, [(dict(self.wire_bytes), None)], self.scenario.network.n_tiers - 1
            )
            cost = ledger.end_round()
            self._reference = (cost.latency_s, cost.energy_j)
        return self._reference

    # ------------------------------------------------------------------ views
    def kind_index(self, kind: str) -> int:
        if kind not in self.kinds:
            raise ValueError(f"module kind must be one of {', '.join(map(repr, self.kinds))}, got {kind!r}")
        return self.kinds.index(kind)

    def expand_kinds(self, kinds) -> tuple[str, ...]:
        """``"heads"`` stands for every task head, ``"encoders"`` for every modality encoder."""
        if isinstance(kinds, str):
            kinds = (kinds,)
        out: list[str] = []
        for k in kinds:
            if k == "heads":
                out += [x for x in self.kinds if parse_kind(x).is_head]
            elif k == "encoders":
                out += [x for x in self.kinds if parse_kind(x).is_encoder]
            else:
                self.kind_index(k)
                out.append(k)
        return tuple(dict.fromkeys(out))

    def names_of(self, kinds) -> list[str]:
        kinds = set(kinds)
        return [n for n in self.bank if kind_of(n) in kinds]

    def cold(self, kind: str) -> np.ndarray:
        """Devices with a pending cold start of ``kind`` (bool ``[n_devices]``)."""
        out = np.zeros(self.n_devices, dtype=bool)
        out[[c.node for c in self.cold_starts if c.kind == kind]] = True
        return out

    # ------------------------------------------------------------------ the round
    @property
    def round_open(self) -> bool:
        """Whether a round is under way (between ``begin_round()`` and ``end_round()``)."""
        return self._open

    def replace_members(self, members: Membership) -> None:
        """Install another membership (who is active, modalities, tasks, shards), as a
        checkpoint restores it; the views cached on the old one are dropped."""
        self.members = members
        self._view_cache = None
        self._tables_version = -1

    def _require_open(self, what: str) -> None:
        if not self._open:
            raise RuntimeError(f"{what} needs an open round: call begin_round() first")

    def begin_round(self) -> None:
        """Advance the channel (and mobility), open the ledger's round."""
        if self._open:
            raise RuntimeError("begin_round() called twice: close the round with end_round() first")
        self.net.new_round()
        self.round_index = self.net.round_index
        self.ledger.begin_round(self.round_index)
        self._open, self._trained = True, False
        self._ops, self._inference = [], None
        self._losses = np.zeros(0)
        self._draw_faults()

    # ------------------------------------------------------------------ closing
    def end_round(self) -> RoundResult:
        """Serve pending requests if no operation did, run the specialists' extra steps,
        evaluate every active device on its active tasks, close the ledger's round,
        and draw the next round's events and inference requests."""
        self._require_open("end_round()")
        if len(self.requests) and self._inference is None:
            self.serve()
        self._train_specialists()
        self.accuracy, self.p_correct = self.measure()
        cost = self.ledger.end_round()
        if self.net.retransmitted_packets or self.net.retransmitted_bytes:
            self._faults.append(
                {
                    "fault": "packet_loss",
                    "retransmitted_packets": self.net.retransmitted_packets,
                    "retransmitted_bytes": self.net.retransmitted_bytes,
                }
            )
        self._open = False
        # a cold start trained from scratch long enough joins its module's federation
        self.cold_starts = [c for c in self.cold_starts if c.rounds < self.config.cold_start_rounds]
        events = self._draw_events()
        self.requests = self._draw_requests()
        loss = float(np.nanmean(self._losses)) if np.isfinite(self._losses).any() else float("nan")
        return RoundResult(
            self.round_index,
            self.accuracy,
            cost,
            loss,
            tuple(self._ops),
            tuple(events),
            self._inference,
            tuple(self.cold_starts),
            tuple(self._faults),
            self.p_correct,
        )

    def evaluate(self) -> dict[int, dict[str, float]]:
        """Accuracy of every active device's copy on each of its active tasks' test shard."""
        return self.measure()[0]

    def eval_shards(self) -> tuple[dict[str, np.ndarray], ...]:
        """What :meth:`measure` scores each device on: its active tasks' test shards,
        capped at ``eval_max_samples`` (the first ones). The shards are drawn with the
        data, so the set is fixed for the episode and only the model changes between
        rounds (until a device's tasks change)."""
        cap = self.config.eval_max_samples
        return tuple({t: i[:cap] for t, i in x.items()} for x in self.view().shards.test)

    def majority_rate(self) -> float:
        """What always answering each task's most common answer would score on
        :meth:`eval_shards`: the mean over (device, task) pairs of the share of the
        device's scored samples whose answer is the task's most common one among all
        scored samples."""
        shards = self.eval_shards()
        rates = []
        for t in self.tasks:
            labels = self.data.pools[t].label
            held = [x[t] for x in shards if t in x and len(x[t])]
            if not held:
                continue
            top = np.bincount(labels[np.concatenate(held)]).argmax()
            rates += [float(np.mean(labels[i] == top)) for i in held]
        return float(np.mean(rates)) if rates else float("nan")

    def measure(
        self, test: tuple[dict[str, np.ndarray], ...] | None = None, devices=None
    ) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
        """Accuracy and mean probability of the right answer of every active device's
        copy (or of ``devices``' only) on each of its active tasks, in one batched
        pass, on :meth:`eval_shards` (or on ``test``: per device, task -> pool indices).
        Samples a copy answers with non-finite logits count as wrong (probability 0) and,
        inside a round, are reported as a ``nonfinite_output`` fault per device."""
        view = self.view()
        sh = view.shards
        view = FederatedData(
            view.config,
            view.pools,
            Shards(sh.tasks, sh.modalities, sh.train, self.eval_shards() if test is None else test),
        )
        only = None if devices is None else set(int(d) for d in devices)
        devs = np.array(
            [d for d in range(self.n_devices) if view.shards.tasks[d] and (only is None or d in only)], dtype=np.int64
        )
        if not devs.size:
            return {}, {}
        nonfinite: dict[int, dict[str, int]] = {}
        out = evaluate_metrics(self.backbone, self.bank, view, devs, devs, self.model_config, nonfinite=nonfinite)
        if self._open:
            for d, per in sorted(nonfinite.items()):
                self._faults.append({"fault": "nonfinite_output", "device": int(d), "samples": dict(per)})
        return out

    def run_round(self, ops=()) -> RoundResult:
        """One round with ``ops`` executed in phase order (relays and roles, training,
        aggregations, inference)."""
        ops = list(ops)
        for op in ops:
            if not isinstance(op, (Aggregate, Relay, Specialize, Offload)):
                raise TypeError(f"ops must be Aggregate, Relay, Specialize or Offload records, got {op!r}")
        self.begin_round()
        for op in ops:
            if isinstance(op, Specialize):
                self.specialize(op.node, op.kind, op.revoke)
        for op in ops:
            if isinstance(op, Relay):
                self.relay(op.kind, op.source, op.target, op.path)
        self.train()
        for op in ops:
            if isinstance(op, Aggregate):
                self.aggregate(
                    op.kinds,
                    op.scope,
                    path=op.path,
                    clusters=op.clusters,
                    rule=op.rule,
                    gossip_rounds=op.gossip_rounds,
                    d2d_clusters=op.d2d_clusters,
                )
        offloads = [op for op in ops if isinstance(op, Offload)]
        if len(offloads) > 1:
            raise ValueError("ops may hold at most one Offload")
        if len(self.requests):
            self.serve(offloads[0].targets if offloads else None)
        return self.end_round()

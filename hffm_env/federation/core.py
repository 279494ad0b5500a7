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

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch

from hffm_env._validation import ConfigError, check_choice, check_int
from hffm_env.data import FederatedData, Shards, make_federated_data, task_spec
from hffm_env.data.partition import deal_shares
from hffm_env.data.registry import MODALITIES
from hffm_env.federation.aggregation import (
    aggregate_into,
    attack_updates,
    clip_updates,
    gossip_matrix,
)
from hffm_env.federation.config import ATTACKS, RULES
from hffm_env.federation.ops import (
    OFFLOAD_TARGETS,
    PATHS,
    RELAY_PATHS,
    SCOPES,
    Aggregate,
    Offload,
    Relay,
    Specialize,
)
from hffm_env.model.backbone import FrozenBackbone, build_vilt
from hffm_env.model.banks import ENCODER_OF, Bank, gather, head_kind, init_bank, kind_of, parse_kind, payload_bytes
from hffm_env.model.config import ModelConfig
from hffm_env.model.numerics import flush_denormals
from hffm_env.model.train import (AdamState, evaluate_metrics, local_train, right_answer_probability, step_tasks,
                                  task_inputs, used_names)
from hffm_env.model import m3t
from hffm_env.network.fog import FogNetwork
from hffm_env.network.config import LinkFaultConfig
from hffm_env.network.ledger import Ledger, RoundCost
from hffm_env.network.schedules import charge_aggregation_parts
from hffm_env.scenario import Scenario

SHARED_KINDS = ("adapters", "prompts", "experts", "gate")


@lru_cache(maxsize=4)
def load_backbone(config: ModelConfig) -> FrozenBackbone:
    """The frozen backbone of a model config (cached: it is read-only)."""
    return FrozenBackbone(build_vilt(config), compute_dtype=getattr(torch, config.backbone_dtype))


def module_kinds(scenario: Scenario) -> tuple[str, ...]:
    """The module kinds a scenario's model has and moves: the shared kinds of nonzero
    size, the encoder of every modality its tasks use, one head per task."""
    tasks = tuple(scenario.data.tasks)
    fresh = init_bank(scenario.model, {t: len(task_spec(t).answers) for t in tasks}, 1,
                      torch.Generator().manual_seed(0))
    sizes = payload_bytes(fresh)
    used = {m for t in tasks for m in task_spec(t).modalities}
    return tuple([k for k in SHARED_KINDS if sizes.get(k, 0) > 0] + [ENCODER_OF[m] for m in MODALITIES if m in used]
                 + [head_kind(t) for t in tasks])


def pair_mean(per_device: dict[int, dict[str, float]]) -> float:
    """Mean of a per-device, per-task metric over (device, task) pairs (NaN if none),
    summed in (device, task) order whatever the dicts' order: the same values give the
    same mean to the bit."""
    vals = [per_device[d][t] for d in sorted(per_device) for t in sorted(per_device[d])]
    return float(np.mean(vals)) if vals else float("nan")


SPECIALIST_GROUP = 2_000_000     # ledger groups of specialists' extra steps: one per device, apart from clusters


@dataclass(frozen=True)
class ColdStart:
    """A module device ``node`` needs and has never trained (paper Sec. V-B). It
    lasts until the module is relayed to the device or the device has trained it
    from scratch for ``federation.cold_start_rounds`` rounds (``rounds`` so far);
    meanwhile the device is outside the module's aggregations."""

    node: int
    kind: str
    cause: str          # "task_arrival" | "modality_on" | "join"
    rounds: int = 0


@dataclass(frozen=True)
class Requests:
    """This round's inference requests: requester, task, sample index in the task's pool."""

    device: np.ndarray
    task: tuple[str, ...]
    sample: np.ndarray

    def __len__(self) -> int:
        return len(self.device)


@dataclass(frozen=True)
class InferenceResult:
    """What serving the round's requests gave: per request the target, whether the
    answer was right, and the end-to-end seconds (input, compute, answer)."""

    targets: tuple[str, ...]
    correct: np.ndarray
    latency_s: np.ndarray
    failed: np.ndarray | None = None     # requests a fault left unserved (counted wrong)
    p_correct: np.ndarray | None = None  # probability the serving copy gave the right answer (0 if failed)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    @property
    def mean_p_correct(self) -> float:
        """Mean probability of the right answer over the requests (the smooth twin of :attr:`accuracy`)."""
        if self.p_correct is None or not len(self.p_correct):
            return float("nan")
        return float(self.p_correct.mean())


@dataclass(frozen=True)
class RoundResult:
    """One round: accuracy and mean probability of the right answer per device and
    task, its cost, and what changed."""

    round: int
    accuracy: dict[int, dict[str, float]]
    cost: RoundCost
    train_loss: float
    operations: tuple[dict, ...] = ()
    events: tuple[dict, ...] = ()
    inference: InferenceResult | None = None
    cold_starts: tuple[ColdStart, ...] = ()
    faults: tuple[dict, ...] = ()
    p_correct: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        """Mean over (device, task) pairs."""
        return pair_mean(self.accuracy)

    @property
    def mean_p_correct(self) -> float:
        """Mean probability of the right answer over (device, task) pairs."""
        return pair_mean(self.p_correct)

    @property
    def task_accuracy(self) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for per in self.accuracy.values():
            for t, a in per.items():
                out.setdefault(t, []).append(a)
        return {t: float(np.mean(v)) for t, v in sorted(out.items())}

    @property
    def latency_s(self) -> float:
        return self.cost.latency_s

    @property
    def energy_j(self) -> float:
        return self.cost.energy_j


@dataclass
class _Membership:
    """Who is active, which modalities are on, which tasks each device holds (with shards)."""

    active: np.ndarray
    modalities: list[set[str]]
    tasks: list[list[str]]
    train: list[dict[str, np.ndarray]]
    test: list[dict[str, np.ndarray]]
    version: int = 0

    def active_tasks(self, d: int) -> list[str]:
        if not self.active[d]:
            return []
        return [t for t in self.tasks[d] if set(task_spec(t).modalities) <= self.modalities[d]]


@dataclass
class _Roles:
    specialists: set[tuple[int, str]] = field(default_factory=set)
    attack: dict[int, tuple[str, float]] = field(default_factory=dict)


class Federation:
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
        self.bank: Bank = {n: t.repeat(self.n_nodes, *([1] * (t.dim() - 1))).contiguous() for n, t in self.fresh.items()}
        self.synced: Bank = {n: t.clone() for n, t in self.bank.items()}
        self.adam = AdamState.zeros_like(self.bank)
        sizes = payload_bytes(self.fresh)
        self.kinds: tuple[str, ...] = module_kinds(scenario)
        E = scenario.model.n_experts
        k_e = self.config.experts_per_device
        if k_e is not None and k_e > E:
            raise ConfigError(f"federation.experts_per_device must be an integer in [1, {E}] "
                              f"(model.n_experts), got {k_e}")
        role_rng = np.random.default_rng(role_ss)
        self.expert_mask = np.ones((self.n_nodes, E), dtype=bool)
        if k_e is not None and k_e < E:
            self.expert_mask[:self.n_devices] = False
            for d in range(self.n_devices):
                self.expert_mask[d, role_rng.choice(E, size=k_e, replace=False)] = True
        scale = self.config.payload_scale
        self.wire_bytes = {k: sizes[k] * scale * ((k_e or E) / E if k == "experts" else 1.0) for k in self.kinds}
        sh = self.data.shards
        self.members = _Membership(np.ones(self.n_devices, dtype=bool), [set(m) for m in sh.modalities],
                                   [list(t) for t in sh.tasks], [dict(x) for x in sh.train],
                                   [dict(x) for x in sh.test])
        self.roles = _Roles()
        adv = self.config.adversaries
        n_adv = int(round(adv.fraction * self.n_devices))
        for d in role_rng.choice(self.n_devices, size=n_adv, replace=False):
            self.roles.attack[int(d)] = (adv.attack, adv.strength)
        inf = self.config.inference
        self.model_bytes = inf.model_bytes if inf.model_bytes is not None else float(
            sum(p.numel() * p.element_size() for p in self.backbone.parameters())
            + sum(t[0].numel() * t.element_size() for t in self.fresh.values()))
        self.memory_bytes = role_rng.uniform(*inf.device_memory_bytes_range, size=self.n_devices)
        self.ledger = Ledger(keep_rounds=self.config.keep_ledger_rounds)
        self.round_index = -1
        self.last_sync = np.full((self.n_nodes, len(self.kinds)), -1, dtype=np.int64)
        self.last_train = np.full((self.n_nodes, len(self.kinds)), -1, dtype=np.int64)
        self.trained_ever = np.zeros((self.n_nodes, len(self.kinds)), dtype=bool)
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

    def reference_round_cost(self) -> tuple[float, float]:
        """Latency (s) and energy (J) of one cloud aggregation of every module by every
        device (devices upload to their edge servers) on this run's network in its
        first round: the yardstick the envs normalise costs by. Priced on a scratch
        copy of the network without link faults; the run itself is not touched."""
        if not hasattr(self, "_reference"):
            scratch = FogNetwork(replace(self.scenario.network, faults=LinkFaultConfig()), np.random.default_rng(
                np.random.SeedSequence(self._net_seed.entropy, spawn_key=self._net_seed.spawn_key)))
            scratch.new_round()
            ledger = Ledger()
            ledger.begin_round(0)
            charge_aggregation_parts(scratch, ledger, [(dict(self.wire_bytes), None)], self.scenario.network.n_tiers - 1)
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

    def active_tasks(self, d: int) -> list[str]:
        return self.members.active_tasks(d)

    def holds(self, kind: str) -> np.ndarray:
        """Which devices need module ``kind`` now (bool ``[n_devices]``): the shared
        kinds every active device with a task; an encoder the devices with an active
        task of its modality; a head the devices with that task active."""
        return self._membership_table(kind)[0].copy()

    def sample_counts(self, kind: str) -> np.ndarray:
        """Training samples behind each device's copy of ``kind`` (0 where not held)."""
        return self._membership_table(kind)[1].copy()

    def _membership_table(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``holds`` and ``sample_counts`` of ``kind``, cached until the membership changes."""
        self.kind_index(kind)
        if self._tables_version != self.members.version:
            self._tables, self._tables_version = {}, self.members.version
        if kind not in self._tables:
            tasks = [self._tasks_for(d, kind) for d in range(self.n_devices)]
            self._tables[kind] = (np.array([bool(t) for t in tasks], dtype=bool),
                                  np.array([sum(len(self.members.train[d][x]) for x in t) for d, t in enumerate(tasks)],
                                           dtype=np.float64))
        return self._tables[kind]

    def view(self, only: dict[int, list[str]] | None = None) -> FederatedData:
        """The federated data as it stands (active devices' active tasks; ``only``
        restricts devices to the listed tasks)."""
        if only is None and self._view_cache is not None and self._view_cache[0] == self.members.version:
            return self._view_cache[1]
        mem = self.members
        tasks = []
        for d in range(self.n_devices):
            ts = mem.active_tasks(d)
            if only is not None:
                ts = [t for t in ts if t in only.get(d, ())]
            tasks.append(tuple(ts))
        shards = Shards(tuple(tasks), tuple(tuple(sorted(m)) for m in mem.modalities),
                        tuple({t: mem.train[d][t] for t in tasks[d]} for d in range(self.n_devices)),
                        tuple({t: mem.test[d][t] for t in tasks[d]} for d in range(self.n_devices)))
        out = FederatedData(self.data.config, self.data.pools, shards)
        if only is None:
            self._view_cache = (mem.version, out)
        return out

    def names_of(self, kinds) -> list[str]:
        kinds = set(kinds)
        return [n for n in self.bank if kind_of(n) in kinds]

    def is_specialist(self, node: int, kind: str) -> bool:
        return (int(node), kind) in self.roles.specialists

    def specialist_mask(self, kind: str) -> np.ndarray:
        """Devices that are specialists of ``kind`` (bool ``[n_devices]``)."""
        out = np.zeros(self.n_devices, dtype=bool)
        out[[d for d, k in self.roles.specialists if k == kind]] = True
        return out

    def cold(self, kind: str) -> np.ndarray:
        """Devices with a pending cold start of ``kind`` (bool ``[n_devices]``)."""
        out = np.zeros(self.n_devices, dtype=bool)
        out[[c.node for c in self.cold_starts if c.kind == kind]] = True
        return out

    # ------------------------------------------------------------------ the round
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

    # ------------------------------------------------------------------ faults
    def _clear_faults(self) -> None:
        n = self.n_devices
        self._faults: list[dict] = []
        self._dropped_before = np.zeros(n, dtype=bool)
        self._dropped_after = np.zeros(n, dtype=bool)
        self._late = np.zeros(n, dtype=bool)
        self._slowdown = np.ones(n)
        self._train_s = np.zeros(n)          # each device's training seconds this round so far

    def _draw_faults(self) -> None:
        """This round's node faults (``federation.faults``) and the link failures the
        network drew; every one goes into the round's fault report."""
        self._clear_faults()
        f, topo = self.config.faults, self.topology
        if f.any:
            u = self.fault_rng.random((3, self.n_devices))
            self._dropped_before = u[0] < f.dropout_before_upload
            self._dropped_after = (u[1] < f.dropout_after_upload) & ~self._dropped_before
            slow = u[2] < f.straggler_fraction
            self._slowdown[slow] = f.straggler_slowdown
            v = self.fault_rng.random(topo.n_clusters)
            self.edge_down = np.where(self.edge_down, v >= f.edge_repair, v < f.edge_outage)
            self._faults += [{"fault": "edge_outage", "cluster": int(c), "server": int(topo.tier_offsets[1] + c),
                              "fallback": f.outage_fallback} for c in np.nonzero(self.edge_down)[0]]
        self._faults += [{"fault": "d2d_link_down", "link": [int(a), int(b)]}
                         for a, b in topo.d2d.edges[~self.net.d2d_up]]

    def _server_down(self, node: int) -> bool:
        """Whether ``node`` is an edge server that is out this round."""
        off = self.topology.tier_offsets[1]
        return self.topology.tier[node] == 1 and bool(self.edge_down[node - off])

    def faults(self) -> list[dict]:
        """The faults of the open (or last) round so far."""
        return list(self._faults)

    def train(self) -> np.ndarray:
        """Local training of the round's participants; charges each device's compute.
        (The specialists' extra steps follow their uploads, in :meth:`end_round`.)"""
        self._require_open("train()")
        if self._trained:
            raise RuntimeError("train() was already called in this round")
        self._trained = True
        cfg = self.config
        view = self.view()
        eligible = np.array([d for d in range(self.n_devices) if view.shards.tasks[d]], dtype=np.int64)
        if cfg.participation < 1.0 and eligible.size:
            take = self.rng.random(eligible.size) < cfg.participation
            take |= np.isin(eligible, [d for d, _ in self.roles.specialists])   # specialists always train
            if not take.any():
                take[self.rng.integers(eligible.size)] = True
            participants = eligible[take]
        else:
            participants = eligible
        flip = self._label_flippers()
        losses = np.zeros(0)
        if participants.size and (cfg.local_steps or cfg.local_epochs is not None):
            skipped: set[int] = set()
            losses = local_train(self.backbone, self.bank, self.adam, view, participants, participants,
                                 cfg.local_steps, cfg.batch_size, self.rng, self.model_config,
                                 expert_mask=self.expert_mask, flip_labels=flip, skipped=skipped,
                                 epochs=cfg.local_epochs)
            self._faults += [{"fault": "update_skipped", "device": d, "reason": "non-finite AdamW step"}
                             for d in sorted(skipped)]
            steps = np.array([len(step_tasks(view, int(d), cfg.local_steps, cfg.batch_size, cfg.local_epochs))
                              for d in participants])
            seconds = self.net.charge_compute(self.ledger, "train", "train", participants,
                                              steps * cfg.batch_size, slowdown=self._slowdown[participants],
                                              deadline_s=cfg.faults.round_deadline_s)
            self._train_s[participants] = seconds
            self._faults += [{"fault": "straggler", "device": int(d), "slowdown": float(self._slowdown[d])}
                             for d in participants if self._slowdown[d] > 1]
            if cfg.faults.round_deadline_s is not None:
                late = participants[seconds > cfg.faults.round_deadline_s]
                self._late[late] = True
                self._faults += [{"fault": "deadline_miss", "device": int(d), "compute_s": float(t),
                                  "deadline_s": cfg.faults.round_deadline_s}
                                 for d, t in zip(participants, seconds) if self._late[d]]
            for d in participants:
                for name, hit in (("dropout_before_upload", self._dropped_before),
                                  ("dropout_after_upload", self._dropped_after)):
                    if hit[d]:
                        self._faults.append({"fault": name, "device": int(d)})
            # a participant that drops out relays no one's D2D uploads or broadcasts this round
            self.net.stop_relaying(participants[(self._dropped_before | self._dropped_after)[participants]])
            for d in participants:
                for k in self._kinds_held_by(int(d)):
                    self.last_train[d, self.kind_index(k)] = self.round_index
                    self.trained_ever[d, self.kind_index(k)] = True
            trained = set(map(int, participants))
            self.cold_starts = [replace(c, rounds=c.rounds + 1) if c.node in trained else c for c in self.cold_starts]
        self._participants = participants
        self._losses = losses
        return losses

    def _label_flippers(self) -> np.ndarray:
        """Nodes that train on flipped labels (bool ``[n_nodes]``): the label-flipping attackers."""
        flip = np.zeros(self.n_nodes, dtype=bool)
        for d, (attack, _) in self.roles.attack.items():
            flip[d] = attack == "label_flip"
        return flip

    def _kinds_held_by(self, d: int) -> list[str]:
        return [k for k in self.kinds if self._tasks_for(d, k)]

    def _tasks_for(self, d: int, kind: str) -> list[str]:
        """The active tasks of device ``d`` whose training feeds module ``kind``."""
        tasks = self.members.active_tasks(d)
        k = parse_kind(kind)
        if k.is_head:
            return [k.task] if k.task in tasks else []
        if k.is_encoder:
            return [t for t in tasks if k.modality in task_spec(t).modalities]
        return tasks

    def _train_specialists(self) -> None:
        """Each specialist's ``specialist_steps`` extra steps on the modules it owns,
        all of them in the same steps (one pass trains them together). A specialist
        keeps its own copies, so it need not wait for the aggregate: the steps run
        after its upload, while the round's aggregations are under way, and land in
        its next contribution. Their compute is charged in the ``aggregate`` stage as
        a group of its own per device, so the round waits for them only where they
        outlast the aggregations; the energy always counts."""
        steps = self.config.specialist_steps
        if not steps or not self._trained:
            return
        owned: dict[int, list[str]] = {}
        for node, kind in sorted(self.roles.specialists):
            if self._tasks_for(node, kind):
                owned.setdefault(node, []).append(kind)
        if not owned:
            return
        nodes = sorted(owned)
        view = self.view({d: sorted({t for k in owned[d] for t in self._tasks_for(d, k)}) for d in nodes})
        devs = np.array(nodes, dtype=np.int64)
        # one batched pass per step for every specialist, each on its own modules
        local_train(self.backbone, self.bank, self.adam, view, devs, devs, steps, self.config.batch_size,
                    self.rng, self.model_config, expert_mask=self.expert_mask, flip_labels=self._label_flippers(),
                    only_kinds=[tuple(owned[d]) for d in nodes])
        self.net.charge_compute(self.ledger, "aggregate", "specialist", devs, steps * self.config.batch_size,
                                slowdown=self._slowdown[devs], group=SPECIALIST_GROUP + devs, step="specialist")
        for d in nodes:
            cols = [self.kind_index(k) for k in owned[d]]
            self.last_train[d, cols] = self.round_index
            self.trained_ever[d, cols] = True

    # ------------------------------------------------------------------ what a node sends
    def _sent(self, names: list[str], rows: np.ndarray, privacy: bool) -> dict[str, torch.Tensor]:
        """The values ``rows`` send for ``names``: honest updates, or an attacker's, then clipped."""
        idx = torch.as_tensor(rows)
        clip = self.config.privacy.clip_norm if privacy else None
        if clip is None and not any(int(r) in self.roles.attack for r in rows):
            return gather(self.bank, names, idx)              # honest, unclipped: the copies themselves
        base = gather(self.synced, names, idx)
        upd = {n: c - base[n] for n, c in gather(self.bank, names, idx).items()}
        for i, r in enumerate(rows):
            if int(r) in self.roles.attack:
                attack, strength = self.roles.attack[int(r)]
                one = attack_updates({n: u[i:i + 1] for n, u in upd.items()}, attack, strength, self.torch_gen)
                for n in names:
                    upd[n][i:i + 1] = one[n]
        if clip is not None:
            upd = clip_updates(upd, clip)
        return {n: base[n] + upd[n] for n in names}

    def _write(self, kinds, rows: np.ndarray) -> None:
        """Rows just received a copy: it is their new reference point."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        for n in self.names_of(kinds):
            self.synced[n][idx] = self.bank[n].index_select(0, idx)
        for k in kinds:
            self.last_sync[np.asarray(rows, dtype=np.int64), self.kind_index(k)] = self.round_index

    # ------------------------------------------------------------------ aggregation
    def aggregate(self, kinds, scope: str, *, path: str | None = None, clusters=None, rule: str | None = None,
                  gossip_rounds: int | None = None, d2d_clusters=None) -> dict:
        """Aggregate module ``kinds`` at ``scope`` (see :class:`~hffm_env.federation.ops.Aggregate`).

        Each kind is aggregated over the round's participants that hold it, weighted
        by their training samples; devices that hold it receive the result except
        specialists of that kind, who keep their own copy. Kinds with the same
        participants move together as one payload. With ``path="direct"`` at edge or
        cloud scope, the clusters in ``d2d_clusters`` reach their edge server through
        the cluster head instead (D2D gather and broadcast). Returns a record of what
        changed.

        Faults (``federation.faults``, ``network.faults``): participants that dropped
        out before uploading or missed the deadline are left out; those that dropped
        after uploading count but keep their own copy; a device that dropped out
        relays nothing for others, and devices a D2D route needs but that cannot reach
        their head (over working links and relaying devices) are left out; clusters
        whose edge server is down take the configured fallback (listed in the record's
        ``"outage"``).
        """
        self._require_open("aggregate()")
        kinds = self.expand_kinds(kinds)
        check_choice("scope", scope, SCOPES)
        path = PATHS[scope][0] if path is None else path
        check_choice(f"path (scope {scope!r})", path, PATHS[scope])
        rule = self.config.rule if rule is None else rule
        check_choice("rule", rule, RULES)
        topo = self.topology
        if clusters is None:
            clusters = np.arange(topo.n_clusters)
        else:
            clusters = np.unique(np.asarray(clusters, dtype=np.int64).ravel())
            bad = clusters[(clusters < 0) | (clusters >= topo.n_clusters)]
            if bad.size:
                raise ValueError(f"clusters must be in [0, {topo.n_clusters - 1}], got {bad.tolist()}")
        if d2d_clusters is not None and len(d2d_clusters) and (scope == "d2d" or path != "direct"):
            raise ValueError("d2d_clusters applies to scope 'edge' or 'cloud' with path 'direct' only")
        # an edge server that is down blocks every path through it (star climbs through it
        # only without a direct uplink)
        gated = scope != "d2d" and not (path == "star" and self.scenario.network.direct_uplink is not None)
        out = clusters[self.edge_down[clusters]] if gated else clusters[:0]
        fallback = self.config.faults.outage_fallback
        up = np.setdiff1d(clusters, out)
        to_cloud = out if fallback == "cloud" else out[:0]
        record = self._aggregate(kinds, scope, path, np.concatenate([up, to_cloud]), rule, gossip_rounds,
                                 d2d_clusters, to_cloud)
        if out.size:
            record["outage"] = {"clusters": out.tolist(), "fallback": fallback}
            if fallback == "d2d":
                self._aggregate(kinds, "d2d", "gather", out, rule, None, None, out[:0], fallback_for=len(self._ops) - 1)
        return record

    def _aggregate(self, kinds: tuple[str, ...], scope: str, path: str, clusters: np.ndarray, rule: str,
                   gossip_rounds: int | None, d2d_clusters, to_cloud: np.ndarray, fallback_for: int | None = None) -> dict:
        topo = self.topology
        in_scope = np.isin(topo.cluster, clusters)
        via_head = np.zeros(self.n_devices, dtype=bool)
        if d2d_clusters is not None and len(d2d_clusters):
            via_head = np.isin(topo.cluster, np.asarray(d2d_clusters, dtype=np.int64))
        gossip = scope == "d2d" and path == "gossip"
        took_part = np.zeros(self.n_devices, dtype=bool)
        took_part[self._participants] = True
        took_part &= ~(self._dropped_before | self._late)
        # D2D-routed devices cut off from their head by failed links cannot take part
        routed = in_scope & ((scope == "d2d" and not gossip) | (path == "d2d") | via_head) \
            & ~np.isin(topo.cluster, to_cloud)                 # those reach the cloud directly
        cut_off = routed & took_part
        if cut_off.any():
            cut_off &= ~self.net.reaches_head()
        took_part &= ~cut_off
        record = {"op": "aggregate", "scope": scope, "path": path, "rule": rule, "kinds": list(kinds),
                  "participants": {}}
        if fallback_for is not None:
            record["fallback_for"] = fallback_for
        if cut_off.any():
            self._faults.append({"fault": "d2d_unreachable", "devices": np.nonzero(cut_off)[0].tolist(),
                                 "op": len(self._ops)})
        # kinds with the same participants and weights move (and mix) together
        groups: dict[tuple, list[str]] = {}
        for k in kinds:
            # a device with the module cold is outside its federation until relayed or trained
            part = self.holds(k) & in_scope & took_part & ~self.cold(k)
            special = self.specialist_mask(k)
            if not self.config.specialists_contribute:
                part &= ~special
            if part.any():
                devs = np.nonzero(part)[0]
                # kinds move together only when the same specialists keep their copies
                key = (tuple(devs), tuple(self.sample_counts(k)[devs]), tuple(np.nonzero(special & part)[0]))
                groups.setdefault(key, []).append(k)
        parts = []
        off = topo.tier_offsets[1]
        for (devs, counts, special), ks in groups.items():
            devs = np.array(devs, dtype=np.int64)
            # specialists, devices that dropped after uploading and servers that are down keep their rows
            keep = {k: np.nonzero(self.holds(k) & self.specialist_mask(k))[0] for k in ks}
            frozen = np.concatenate([devs[self._dropped_after[devs]], off + to_cloud]).astype(np.int64)
            restores = [self._snapshot([k], keep[k]) for k in ks] + [self._snapshot(ks, frozen)]
            self._aggregate_values(ks, devs, np.maximum(np.array(counts, dtype=np.float64), 1.0), scope, path, rule,
                                   gossip_rounds)
            for restore in restores:
                restore()
            payload = {k: self.wire_bytes[k] for k in ks}
            if gossip:
                self._charge_gossip(payload, devs, gossip_rounds or self.config.gossip_rounds)
            # specialists keep their own copies: they receive (and pay for) nothing
            parts.append((payload, devs, devs[~self._dropped_after[devs] & ~np.isin(devs, special)]))
            for k in ks:
                record["participants"][k] = devs.tolist()
        if parts and not gossip:
            level = self.scenario.network.n_tiers - 1 if scope == "cloud" else 1
            if via_head.any():
                record["d2d_clusters"] = sorted(int(c) for c in d2d_clusters)
            direct = np.isin(topo.cluster, to_cloud)
            # clusters are disjoint, so each set of clusters is charged on its own path
            for sel, d2d, star in ((~via_head & ~direct, scope == "d2d" or path == "d2d", path == "star"),
                                   (via_head & ~direct, True, False), (direct, False, True)):
                sub = [(p, d[sel[d]], r[sel[r]]) for p, d, r in parts]
                charge_aggregation_parts(self.net, self.ledger, sub, level, d2d=d2d, star=star)
        self._ops.append(record)
        return record

    def _snapshot(self, kinds, rows: np.ndarray):
        """Save ``rows``' copies of ``kinds`` (bank, reference copy, sync round); the
        returned function puts them back."""
        if rows.size == 0:
            return lambda: None
        idx = torch.as_tensor(rows)
        names = self.names_of(kinds)
        bank, synced = gather(self.bank, names, idx), gather(self.synced, names, idx)
        cols = [self.kind_index(k) for k in kinds]
        sync = self.last_sync[np.ix_(rows, cols)].copy()

        def restore() -> None:
            for n in names:
                self.bank[n][idx] = bank[n]
                self.synced[n][idx] = synced[n]
            self.last_sync[np.ix_(rows, cols)] = sync

        return restore

    def _aggregate_values(self, kinds: list[str], devs: np.ndarray, w: np.ndarray, scope: str, path: str,
                          rule: str, gossip_rounds: int | None) -> None:
        topo, cfg = self.topology, self.config
        names = self.names_of(kinds)
        receivers = devs[[not any(self.is_specialist(d, k) for k in kinds) for d in devs]]
        sent = self._sent(names, devs, privacy=True)
        rule_args = {"trim_fraction": cfg.trim_fraction, "krum_f": cfg.krum_f, "bucket_size": cfg.bucket_size,
                     "bucket_generator": self.bucket_gen}
        mask = self.expert_mask[devs] if "experts" in kinds else None
        cluster = topo.cluster[devs]
        if scope == "d2d" and path == "gossip":
            self._gossip_values(names, sent, devs, w, gossip_rounds or cfg.gossip_rounds)
            self._write(kinds, receivers)
            return
        if scope == "cloud" and path == "star":
            # one flat aggregate at the top; the edge copies are not touched
            top = np.array([topo.top])
            targets = np.concatenate([top, devs])
            aggregate_into(self.bank, sent, np.zeros(devs.size, dtype=np.int64), w, targets,
                           np.zeros(targets.size, dtype=np.int64), rule, expert_mask=mask,
                           noise_std=self._noise_std(w, np.zeros(devs.size, dtype=np.int64)),
                           generator=self.torch_gen, **rule_args)
            self._write(kinds, np.concatenate([receivers, top]))
            return
        noise = self._noise_std(w, cluster)
        if scope == "d2d":
            aggregate_into(self.bank, sent, cluster, w, devs, cluster, rule, expert_mask=mask, noise_std=noise,
                           generator=self.torch_gen, **rule_args)
            self._write(kinds, receivers)
            return
        # edge level: one aggregate per cluster into the edge server's row (privacy noise added there)
        edges = topo.tier_offsets[1] + np.unique(cluster)
        aggregate_into(self.bank, sent, cluster, w, edges, edges - topo.tier_offsets[1], rule, expert_mask=mask,
                       noise_std=noise, generator=self.torch_gen, **rule_args)
        if scope == "edge":
            src = torch.as_tensor(topo.tier_offsets[1] + cluster)
            for n in names:
                self.bank[n][torch.as_tensor(devs)] = self.bank[n].index_select(0, src)
            self._write(kinds, np.concatenate([receivers, edges]))
            return
        # cloud: the edge aggregates, weighted by their clusters' samples, to the top and back down
        cw = np.bincount(cluster, weights=w, minlength=topo.n_clusters)[edges - topo.tier_offsets[1]]
        edge_sent = gather(self.bank, names, torch.as_tensor(edges))
        emask = None if mask is None else np.ones((edges.size, mask.shape[1]), dtype=bool)
        targets = np.concatenate([[topo.top], edges, devs])
        aggregate_into(self.bank, edge_sent, np.zeros(edges.size, dtype=np.int64), cw, targets,
                       np.zeros(targets.size, dtype=np.int64), rule, expert_mask=emask, **rule_args)
        self._write(kinds, np.concatenate([receivers, edges, [topo.top]]))

    def _noise_std(self, w: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Per group: DP-FedAvg noise std ``z·C·max(w)/Σw`` of its weighted mean (0 without privacy)."""
        p = self.config.privacy
        n_groups = int(groups.max()) + 1
        if p.clip_norm is None or p.noise_multiplier == 0:
            return np.zeros(n_groups)
        wmax = np.zeros(n_groups)
        np.maximum.at(wmax, groups, w)
        total = np.bincount(groups, weights=w, minlength=n_groups)
        return p.noise_multiplier * p.clip_norm * wmax / np.maximum(total, 1e-300)

    def _gossip_values(self, names, sent, devs, w, rounds) -> None:
        """Weighted consensus by gossip: ``W^r`` mixes ``w·x`` and ``w``; their ratio tends
        to the weighted average of each connected group of participants."""
        Wr = torch.as_tensor(np.linalg.matrix_power(self.gossip_weights(devs), rounds))
        wt = torch.as_tensor(w, dtype=torch.float64)
        den = Wr @ wt
        idx = torch.as_tensor(devs)
        for n in names:
            x = sent[n]
            flat = x.reshape(x.shape[0], -1).to(torch.float64)
            mixed = (Wr @ (wt[:, None] * flat)) / den[:, None]
            self.bank[n][idx] = mixed.reshape(x.shape).to(x.dtype)

    def gossip_weights(self, devs: np.ndarray, kind: str | None = None) -> np.ndarray:
        """Gossip matrix over ``devs``: this round's working D2D links among them (clusters
        are separate blocks)."""
        devs = np.asarray(devs, dtype=np.int64)
        pos = -np.ones(self.n_devices, dtype=np.int64)
        pos[devs] = np.arange(devs.size)
        e = self.topology.d2d.edges[self.net.d2d_up]       # links that are down carry nothing this round
        keep = (pos[e[:, 0]] >= 0) & (pos[e[:, 1]] >= 0)
        return gossip_matrix(devs.size, pos[e[keep]], kind or self.config.gossip_weights)

    def _charge_gossip(self, payload: dict, devs: np.ndarray, rounds: int) -> None:
        pos = -np.ones(self.n_devices, dtype=np.int64)
        pos[devs] = np.arange(devs.size)
        e = self.topology.d2d.edges[self.net.d2d_up]
        e = e[(pos[e[:, 0]] >= 0) & (pos[e[:, 1]] >= 0)]
        senders = np.concatenate([e[:, 0], e[:, 1]])
        receivers = np.concatenate([e[:, 1], e[:, 0]])
        for r in range(rounds):
            self.net.charge_d2d_hops(self.ledger, "aggregate", payload, senders, receivers,
                                     group=self.topology.cluster[senders], step=f"gossip:{r + 1}")

    # ------------------------------------------------------------------ relaying
    def relay(self, kind: str, source: int, target: int, path: str) -> dict:
        """Copy ``source``'s ``kind`` to device ``target`` over ``path``, charging every hop.

        A relay that a fault blocks (its D2D route cut by failed links, or an edge
        server on its way down) fails: nothing is copied or charged, the cold start
        stays, and the record and the round's fault report say why."""
        self._require_open("relay()")
        ki = self.kind_index(kind)
        check_choice("path", path, RELAY_PATHS)
        topo = self.topology
        source, target = int(source), int(target)
        if not 0 <= source < self.n_nodes:
            raise ValueError(f"source must be a node id in [0, {self.n_nodes - 1}], got {source}")
        if not 0 <= target < self.n_devices:
            raise ValueError(f"target must be a device id in [0, {self.n_devices - 1}], got {target}")
        if source == target:
            raise ValueError(f"source and target are the same node ({source})")
        names = self.names_of([kind])
        payload = {kind: self.wire_bytes[kind]}
        group = len(self._ops)
        record = {"op": "relay", "kind": kind, "source": source, "target": target, "path": path}
        if path == "d2d":
            if source >= self.n_devices:
                raise ValueError(f"a D2D relay needs a device source, got node {source} (tier "
                                 f"{self.scenario.network.tiers[topo.tier[source]].name})")
            comp, full = self.net.d2d_components(), self.net.d2d_components(working=False)
            if full[source] == full[target] and comp[source] != comp[target]:
                return self._relay_failed(record, "d2d_link_down")
            hops = self.net.d2d_path(source, target, payload[kind])
            self.net.charge_d2d_path(self.ledger, "relay", payload, hops, group=group)
        else:
            hops_up, turn, hops_down = self._tree_route(source, target, via_top=(path == "cloud"))
            if any(self._server_down(n) for n in hops_up + [turn] + hops_down):
                return self._relay_failed(record, "edge_outage")
            self._charge_tree_relay(payload, hops_up, hops_down, group=group)
        sent = self._sent(names, np.array([source]), privacy=False) if source < self.n_devices else \
            {n: self.bank[n][source:source + 1] for n in names}
        for n in names:
            self.bank[n][target] = sent[n][0]
            self.adam.m[n][target] = 0.0
            self.adam.v[n][target] = 0.0
            self.adam.step[n][target] = 0
        self._write([kind], np.array([target]))
        self.trained_ever[target, ki] = True
        self.cold_starts = [c for c in self.cold_starts if not (c.node == target and c.kind == kind)]
        self._ops.append(record)
        return record

    def _relay_failed(self, record: dict, reason: str) -> dict:
        record["failed"] = reason
        self._faults.append({"fault": "relay_failed", "reason": reason,
                             **{k: record[k] for k in ("kind", "source", "target", "path")}})
        self._ops.append(record)
        return record

    def _tree_route(self, source: int, target: int, via_top: bool) -> tuple[list[int], int, list[int]]:
        """A relay through the servers: the nodes that send up (``source`` first), the
        server where it turns (the lowest common one, or the top), and the nodes that
        receive on the way down (``target`` last)."""
        up, down = self._ancestors(source), self._ancestors(target)
        turn = self.topology.top if via_top else [n for n in up if n in down and n >= self.n_devices][0]
        return up[:up.index(turn)], turn, down[:down.index(turn)][::-1]

    def _ancestors(self, node: int) -> list[int]:
        out = [node]
        while self.topology.parent[out[-1]] >= 0:
            out.append(int(self.topology.parent[out[-1]]))
        return out

    def _charge_tree_relay(self, payload: dict, hops_up: list[int], hops_down: list[int], group: int) -> None:
        for i, n in enumerate(hops_up):
            self.net.charge_upload(self.ledger, "relay", payload, [n], group=group, step=f"up{i}")
        for i, n in enumerate(hops_down):
            self.net.charge_download(self.ledger, "relay", payload, [n], group=group, step=f"down{i}")

    # ------------------------------------------------------------------ specialization
    def specialize(self, node: int, kind: str, revoke: bool = False) -> dict:
        """Assign (or revoke) device ``node`` as specialist of ``kind``: it keeps its own
        copy through aggregations, trains it every round, and is the default relay source."""
        self.kind_index(kind)
        node = int(node)
        if not 0 <= node < self.n_devices:
            raise ValueError(f"node must be a device id in [0, {self.n_devices - 1}], got {node}")
        key = (node, kind)
        if revoke:
            if key not in self.roles.specialists:
                raise ValueError(f"device {node} is not a specialist of {kind!r}")
            self.roles.specialists.discard(key)
        else:
            if not self.holds(kind)[node]:
                raise ValueError(f"device {node} cannot specialise in {kind!r}: it has no active task that uses it")
            self.roles.specialists.add(key)
        record = {"op": "revoke" if revoke else "specialize", "node": node, "kind": kind}
        self._ops.append(record)
        return record

    def specialists(self, kind: str | None = None) -> list[tuple[int, str]]:
        return sorted(s for s in self.roles.specialists if kind is None or s[1] == kind)

    def set_attack(self, node: int, attack: str | None, strength: float = 1.0) -> None:
        """Make device ``node`` an adversary (``attack`` None: honest again)."""
        node = int(node)
        if not 0 <= node < self.n_devices:
            raise ValueError(f"node must be a device id in [0, {self.n_devices - 1}], got {node}")
        if attack is None:
            self.roles.attack.pop(node, None)
            return
        check_choice("attack", attack, ATTACKS)
        self.roles.attack[node] = (attack, float(strength))

    # ------------------------------------------------------------------ inference
    def _draw_requests(self) -> Requests:
        """Each active device's requests: Poisson(``requests_per_device``), a share
        ``foreign_fraction`` of them on a task it does not hold (drawn among the tasks
        some active device holds), the rest on its own tasks; each input is a held-out
        sample (of the device's own share, or of all holders' shares of a foreign task)."""
        inf = self.config.inference
        mem = self.members
        devs, tasks, samples = [], [], []
        if inf.requests_per_device > 0:
            held_out = {t: np.unique(np.concatenate([mem.test[x][t] for x in range(self.n_devices)
                                                     if t in mem.active_tasks(x) and len(mem.test[x][t])] or
                                                    [np.zeros(0, dtype=np.int64)]))
                        for t in self.tasks}
            for d in range(self.n_devices):
                own = [t for t in mem.active_tasks(d) if len(mem.test[d][t])]
                if not own:
                    continue
                foreign = [t for t in self.tasks if t not in mem.tasks[d] and len(held_out[t])]
                for _ in range(self.event_rng.poisson(inf.requests_per_device)):
                    if foreign and self.event_rng.random() < inf.foreign_fraction:
                        t = foreign[self.event_rng.integers(len(foreign))]
                        pool = held_out[t]
                    else:
                        t = own[self.event_rng.integers(len(own))]
                        pool = mem.test[d][t]
                    devs.append(d)
                    tasks.append(t)
                    samples.append(int(self.event_rng.choice(pool)))
        return Requests(np.array(devs, dtype=np.int64), tuple(tasks), np.array(samples, dtype=np.int64))

    def answers(self, node: int, task: str) -> bool:
        """Whether ``node``'s copy of ``task``'s head is a trained one: a device that
        holds the task with its head not cold, or a server that has received it."""
        k = self.kind_index(head_kind(task))
        if node >= self.n_devices:
            return bool(self.last_sync[node, k] >= 0)
        return bool(task in self.members.active_tasks(node) and self.trained_ever[node, k]
                    and not self.cold(head_kind(task))[node])

    def can_host(self) -> np.ndarray:
        """Devices whose memory holds the model (bool ``[n_devices]``)."""
        return (self.memory_bytes >= self.model_bytes) & self.members.active

    def peer_for(self, device: int, task: str) -> int:
        """The D2D peer that would serve ``device``'s request on ``task``: among the
        active devices of its cluster that can host the model, one whose head of the
        task is trained (:meth:`answers`) first, a specialist of that head next, then
        the best last accuracy on the task (lowest id on ties); −1 when there is none."""
        topo = self.topology
        host = self.can_host()
        cands = [int(p) for p in topo.members(topo.cluster[device]) if p != device and host[p]]
        if not cands:
            return -1
        head = head_kind(task)
        return max(cands, key=lambda p: (self.answers(p, task), self.is_specialist(p, head),
                                         self.accuracy.get(p, {}).get(task, 0.0), -p))

    def offload_mask(self) -> np.ndarray:
        """Valid targets per pending request (bool ``[n_requests, 4]`` in ``OFFLOAD_TARGETS`` order)."""
        r = self.requests
        mask = np.ones((len(r), len(OFFLOAD_TARGETS)), dtype=bool)
        host = self.can_host()
        for i, (d, t) in enumerate(zip(r.device, r.task)):
            mask[i, 0] = host[d]
            mask[i, 1] = self.peer_for(int(d), t) >= 0
        return mask

    def default_offload(self) -> tuple[str, ...]:
        """The fixed policy: run locally when the device can host the model, else at the edge."""
        mask = self.offload_mask()
        return tuple("local" if m[0] else "edge" for m in mask)

    def serve(self, targets=None) -> InferenceResult:
        """Serve the pending requests at ``targets`` (default: :meth:`default_offload`)."""
        self._require_open("serve()")
        r = self.requests
        targets = self.default_offload() if targets is None else tuple(targets)
        if len(targets) != len(r):
            raise ValueError(f"targets must name one of {OFFLOAD_TARGETS} for each of the {len(r)} requests, "
                             f"got {len(targets)}")
        mask = self.offload_mask()
        topo = self.topology
        holder = np.zeros(len(r), dtype=np.int64)
        for i, (d, t, tgt) in enumerate(zip(r.device, r.task, targets)):
            check_choice(f"targets[{i}]", tgt, OFFLOAD_TARGETS)
            j = OFFLOAD_TARGETS.index(tgt)
            if not mask[i, j]:
                raise ValueError(f"targets[{i}]={tgt!r} is not available for the request of device {d} "
                                 f"(allowed: {[o for o, ok in zip(OFFLOAD_TARGETS, mask[i]) if ok]})")
            holder[i] = {"local": d, "peer": self.peer_for(int(d), t) if tgt == "peer" else -1,
                         "edge": topo.parent[d], "cloud": topo.top}[tgt]
        failed = self._blocked_requests(targets, holder)
        correct, p_right = self._infer(holder)
        correct &= ~failed
        p_right[failed] = 0.0
        latency = self._charge_inference(targets, holder, failed)
        self._inference = InferenceResult(targets, correct, latency, failed, p_right)
        self._ops.append({"op": "offload", "targets": {t: targets.count(t) for t in OFFLOAD_TARGETS}})
        return self._inference

    def _blocked_requests(self, targets: tuple[str, ...], holder: np.ndarray) -> np.ndarray:
        """Requests a fault stops: a peer cut off by failed D2D links, or an edge or
        cloud target behind an edge server that is down (reported, served wrong)."""
        r, topo = self.requests, self.topology
        failed = np.zeros(len(r), dtype=bool)
        if not len(r) or (self.net.d2d_up.all() and not self.edge_down.any()):
            return failed
        comp = self.net.d2d_components()
        for i, (d, tgt, h) in enumerate(zip(r.device, targets, holder)):
            if tgt == "peer" and comp[d] != comp[h]:
                reason = "d2d_link_down"
            elif tgt in ("edge", "cloud") and self._server_down(int(topo.parent[d])):
                reason = "edge_outage"
            else:
                continue
            failed[i] = True
            self._faults.append({"fault": "request_failed", "device": int(d), "target": tgt, "reason": reason})
        return failed

    @flush_denormals
    @torch.inference_mode()
    def _infer(self, holder: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per request: whether the holder's copy answers right, and the probability it gives the right answer."""
        r = self.requests
        correct = np.zeros(len(r), dtype=bool)
        p_right = np.zeros(len(r))
        for task in sorted(set(r.task)):
            sel = np.array([t == task for t in r.task])
            inputs, labels = task_inputs(self.data, task, r.sample[sel][:, None])
            rows = torch.as_tensor(holder[sel])
            params = gather(self.bank, used_names(self.bank, task), rows)
            logits = m3t.forward(self.backbone, params, inputs, task, task_spec(task).modalities,
                                 self.model_config.experts_top_k)
            correct[sel] = (logits.argmax(-1) == labels).numpy()[:, 0]
            p_right[sel] = right_answer_probability(logits, labels).numpy()[:, 0]
        return correct, p_right

    def input_bytes(self, task: str) -> float:
        """Raw bytes of one input of ``task`` (uint8 image, int16 tokens, float32 signal)."""
        cfg = self.data.config
        size = {"image": 3 * cfg.image_size ** 2, "text": 2 * cfg.max_question_tokens, "sensor": 4 * cfg.sensor_length}
        return float(sum(size[m] for m in task_spec(task).modalities))

    def _charge_inference(self, targets: tuple[str, ...], holder: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """Charge the served requests (each its own ledger group) and return each one's
        latency: the input's way to the holder, the holder's compute, the answer's way
        back. Requests to the same kind of target are charged together, one call per hop."""
        r, net, led = self.requests, self.net, self.ledger
        inf = self.config.inference
        latency = np.zeros(len(r))
        if not len(r):
            return latency
        inp = np.array([self.input_bytes(t) for t in r.task])
        dev = np.asarray(r.device, dtype=np.int64)
        tgt = np.asarray(targets)
        group = 1_000_000 + np.arange(len(r))
        ok = ~np.asarray(failed, dtype=bool)
        one, ans = {"inference": 1.0}, {"inference": inf.answer_bytes}
        answer = inf.answer_bytes > 0
        for i in np.nonzero(ok & (tgt == "peer"))[0]:
            path = net.d2d_path(int(dev[i]), int(holder[i]), inp[i])
            latency[i] += net.charge_d2d_path(led, "inference", {"inference": inp[i]}, path, group=int(group[i]),
                                              step="input")
            if answer:
                latency[i] += net.charge_d2d_path(led, "inference", ans, path[::-1], group=int(group[i]),
                                                  step="answer")
        up = ok & np.isin(tgt, ("edge", "cloud"))
        if up.any():
            latency[up] += net.charge_upload(led, "inference", one, dev[up], copies=inp[up], group=group[up],
                                             step="input")
        cloud = ok & (tgt == "cloud")
        # each cloud request's chain device → ... → top, one tier per column
        chains = np.array([self._ancestors(int(d)) for d in dev[cloud]], dtype=np.int64).reshape(
            cloud.sum(), self.scenario.network.n_tiers)
        for k in range(1, chains.shape[1] - 1):            # on up through the servers below the top
            latency[cloud] += net.charge_upload(led, "inference", one, chains[:, k], copies=inp[cloud],
                                                group=group[cloud], step=f"input{k - 1}")
        if ok.any():
            latency[ok] += net.charge_cycles(led, "inference", "inference", holder[ok], inf.cycles_per_inference,
                                             group=group[ok], step="compute")
        edge = ok & (tgt == "edge")
        if answer and edge.any():
            latency[edge] += net.charge_download(led, "inference", ans, dev[edge], group=group[edge], step="answer0")
        if answer and cloud.any():
            for k, col in enumerate(range(chains.shape[1] - 2, -1, -1)):   # back down, tier by tier
                latency[cloud] += net.charge_download(led, "inference", ans, chains[:, col], group=group[cloud],
                                                      step=f"answer{k}")
        return latency

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
            self._faults.append({"fault": "packet_loss", "retransmitted_packets": self.net.retransmitted_packets,
                                 "retransmitted_bytes": self.net.retransmitted_bytes})
        self._open = False
        # a cold start trained from scratch long enough joins its module's federation
        self.cold_starts = [c for c in self.cold_starts if c.rounds < self.config.cold_start_rounds]
        events = self._draw_events()
        self.requests = self._draw_requests()
        loss = float(np.nanmean(self._losses)) if np.isfinite(self._losses).any() else float("nan")
        return RoundResult(self.round_index, self.accuracy, cost, loss, tuple(self._ops), tuple(events),
                           self._inference, tuple(self.cold_starts), tuple(self._faults), self.p_correct)

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

    def measure(self, test: tuple[dict[str, np.ndarray], ...] | None = None, devices=None
                ) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
        """Accuracy and mean probability of the right answer of every active device's
        copy (or of ``devices``' only) on each of its active tasks, in one batched
        pass, on :meth:`eval_shards` (or on ``test``: per device, task -> pool indices)."""
        view = self.view()
        sh = view.shards
        view = FederatedData(view.config, view.pools, Shards(sh.tasks, sh.modalities, sh.train,
                                                             self.eval_shards() if test is None else test))
        only = None if devices is None else set(int(d) for d in devices)
        devs = np.array([d for d in range(self.n_devices) if view.shards.tasks[d] and (only is None or d in only)],
                        dtype=np.int64)
        if not devs.size:
            return {}, {}
        return evaluate_metrics(self.backbone, self.bank, view, devs, devs, self.model_config)

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
                self.aggregate(op.kinds, op.scope, path=op.path, clusters=op.clusters, rule=op.rule,
                               gossip_rounds=op.gossip_rounds, d2d_clusters=op.d2d_clusters)
        offloads = [op for op in ops if isinstance(op, Offload)]
        if len(offloads) > 1:
            raise ValueError("ops may hold at most one Offload")
        if len(self.requests):
            self.serve(offloads[0].targets if offloads else None)
        return self.end_round()

    # ------------------------------------------------------------------ events
    def _draw_events(self) -> list[dict]:
        ev, rng, mem = self.config.events, self.event_rng, self.members
        out: list[dict] = []
        for d in range(self.n_devices):
            if mem.active[d]:
                if rng.random() < ev.leave and mem.active.sum() > 1:
                    out.append(self.set_active(d, False))
                    continue
                if rng.random() < ev.task_arrival:
                    new = [t for t in self.tasks if t not in mem.tasks[d]]
                    if new:
                        out.append(self.add_task(d, new[rng.integers(len(new))]))
                if rng.random() < ev.modality_off and len(mem.modalities[d]) > 1:
                    out.append(self.set_modality(d, sorted(mem.modalities[d])[rng.integers(len(mem.modalities[d]))],
                                                 False))
                off = [m for m in MODALITIES if m not in mem.modalities[d]]
                if off and rng.random() < ev.modality_on:
                    out.append(self.set_modality(d, off[rng.integers(len(off))], True))
            elif rng.random() < ev.join:
                out.append(self.set_active(d, True))
        return out

    def _changed(self, event: dict) -> dict:
        """Membership changed: new data view; every module the device now needs and
        has never trained is a cold start."""
        self.members.version += 1
        self._view_cache = None
        d = event["device"]
        held = self._kinds_held_by(d)
        self.cold_starts = [c for c in self.cold_starts if c.node != d or c.kind in held]
        pending = {c.kind for c in self.cold_starts if c.node == d}
        for k in held:
            if not self.trained_ever[d, self.kind_index(k)] and k not in pending:
                self.cold_starts.append(ColdStart(d, k, event["event"]))
        return event

    def _check_device(self, d) -> int:
        if not isinstance(d, (int, np.integer)) or not 0 <= int(d) < self.n_devices:
            raise ValueError(f"device must be an id in [0, {self.n_devices - 1}], got {d!r}")
        return int(d)

    def add_task(self, device: int, task: str) -> dict:
        """Task arrival: ``device`` starts holding ``task`` with a fresh shard drawn from
        the task's pool (the median shard size of its holders); its head starts cold,
        and the task's modalities are switched on (a new task brings its sensors).
        Under ``eval_split="global"`` the training shard comes from the task's train
        part and the test share is drawn from its test part as ``data.eval_shares``
        says (stratified by answer, or a simple random draw)."""
        d = self._check_device(device)
        check_choice("task", task, self.tasks)
        mem, cfg = self.members, self.data.config
        if task in mem.tasks[d]:
            raise ValueError(f"device {d} already holds task {task!r}")
        holders = [x for x in range(self.n_devices) if task in mem.train[x]]
        pool_n = len(self.data.pools[task].label)
        if cfg.eval_split == "global":
            part = self.data.shards.test_part[task]
            rest = np.setdiff1d(np.arange(pool_n), part)
            n_train = int(np.median([len(mem.train[x][task]) for x in holders])) if holders else 0
            n_test = int(np.median([len(mem.test[x][task]) for x in holders])) if holders else 1
            n_train = min(max(n_train, cfg.min_shard), len(rest))
            train = self.event_rng.choice(rest, size=n_train, replace=False)
            test = deal_shares(part, self.data.pools[task].label, [min(max(n_test, 1), len(part))], self.event_rng,
                               cfg.eval_shares == "stratified")[0]
        else:
            size = int(np.median([len(mem.train[x][task]) + len(mem.test[x][task]) for x in holders])) if holders else 0
            size = max(size, int(np.ceil(cfg.min_shard / (1.0 - cfg.test_fraction))) + 1)
            idx = self.event_rng.choice(pool_n, size=size, replace=False)
            n_test = max(1, int(round(cfg.test_fraction * size)))
            train, test = idx[n_test:], idx[:n_test]
        mem.tasks[d].append(task)
        mem.modalities[d] |= set(task_spec(task).modalities)
        mem.train[d][task], mem.test[d][task] = np.sort(train), np.sort(test)
        self._reset_rows(d, [head_kind(task)])
        return self._changed({"event": "task_arrival", "device": d, "task": task})

    def set_modality(self, device: int, modality: str, on: bool) -> dict:
        """Switch a modality of ``device`` on or off; tasks that need it pause while it is off."""
        d = self._check_device(device)
        check_choice("modality", modality, MODALITIES)
        if on:
            self.members.modalities[d].add(modality)
        else:
            self.members.modalities[d].discard(modality)
        return self._changed({"event": "modality_on" if on else "modality_off", "device": d, "modality": modality})

    def set_active(self, device: int, active: bool) -> dict:
        """A device leaves (drops its roles) or joins as a new device (its modules start from scratch)."""
        d = self._check_device(device)
        self.members.active[d] = bool(active)
        if active:
            self._reset_rows(d, list(self.kinds))
        else:
            self.roles.specialists = {s for s in self.roles.specialists if s[0] != d}
        return self._changed({"event": "join" if active else "leave", "device": d})

    def _reset_rows(self, d: int, kinds: list[str]) -> None:
        for k in kinds:
            ki = self.kind_index(k)
            self.trained_ever[d, ki] = False
            self.last_sync[d, ki] = -1
            self.last_train[d, ki] = -1
            for n in self.names_of([k]):
                self.bank[n][d] = self.fresh[n][0]
                self.synced[n][d] = self.fresh[n][0]
                self.adam.m[n][d] = 0.0
                self.adam.v[n][d] = 0.0
                self.adam.step[n][d] = 0

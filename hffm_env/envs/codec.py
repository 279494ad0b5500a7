"""The action: its ``MultiDiscrete`` blocks, their masks, and the translation both
ways between an action and the federation's operations.

Blocks, in the order of :data:`~hffm_env.envs.config.DECISIONS` (an env exposes a
subset of them):

* **aggregation** — per cluster and module group (:data:`AGG_GROUPS`), one of
  :data:`AGG_OPTIONS`: nothing, D2D consensus (gather at the head), edge aggregation
  (devices upload, or the head uploads after a D2D gather), cloud aggregation
  (the same two paths to the edge servers, then up), or star (the cluster's devices
  send straight to the cloud; the star clusters aggregate together there);
* **relaying** — per pending cold-start slot, one of :data:`RELAY_OPTIONS`: leave it
  cold, relay from the best D2D peer, from the edge server's copy, from the cloud's
  copy, or from the best holder anywhere through the servers;
* **specialization** — per device and specialisable kind (encoders, heads), whether
  the device is a specialist of it (changes become assign/revoke operations);
* **offloading** — per pending request slot, one of
  :data:`~hffm_env.federation.ops.OFFLOAD_TARGETS`.

A block an env does not expose is decided by the default fixed policy (see
:meth:`ActionCodec.default_choices` and :meth:`ActionCodec.default_action`).
:meth:`ActionCodec.encode_aggregation` writes aggregation operations (a Table I
schedule's, :func:`~hffm_env.federation.schedules.schedule_ops`) as the aggregation
block, so a policy that follows a schedule plays exactly its operations.
"""

from __future__ import annotations

import numpy as np

from hffm_env.envs.config import DECISIONS
from hffm_env.federation.ops import OFFLOAD_TARGETS, Aggregate, Offload, Relay, Specialize
from hffm_env.federation.schedules import schedule_ops
from hffm_env.model.banks import parse_kind
from hffm_env.network.schedules import table1_schedules

AGG_GROUPS = (("adapters",), ("prompts",), ("experts", "gate"), ("encoders",), ("heads",))
AGG_OPTIONS = ("none", "d2d", "edge", "edge_via_head", "cloud", "cloud_via_head", "star")
RELAY_OPTIONS = ("none", "d2d_peer", "edge_copy", "cloud_copy", "best_anywhere")


class InvalidAction(ValueError):
    """An action outside the space or masked out."""


class ActionCodec:
    """The action space of an :class:`~hffm_env.envs.core.EnvCore`: sizes, masks,
    decoding into operations, the default policy's choices, and encoding of
    aggregation operations."""

    def __init__(self, core):
        self.core = core
        self.config = core.config
        self.decisions = core.decisions
        self.n_devices, self.n_clusters = core.n_devices, core.n_clusters
        self.groups: list[tuple[str, ...]] = []
        for g in AGG_GROUPS:
            ks = [k for k in core.kinds if parse_kind(k).in_group(g)]
            if ks:
                self.groups.append(tuple(ks))
        self.special_kinds = tuple(k for k in core.kinds if parse_kind(k).family in ("heads", "encoders"))
        self.invalid: list[dict] = []

    @property
    def fed(self):
        return self.core.fed

    # ------------------------------------------------------------------ sizes
    def block_nvec(self, decision: str) -> np.ndarray:
        """The options per dimension of ``decision``'s block."""
        check_decision(decision)
        c = self.config
        if decision == "aggregation":
            return np.full(self.n_clusters * len(self.groups), len(AGG_OPTIONS))
        if decision == "relaying":
            return np.full(c.max_cold_starts, len(RELAY_OPTIONS))
        if decision == "specialization":
            return np.full(self.n_devices * len(self.special_kinds), 2)
        return np.full(c.max_requests, len(OFFLOAD_TARGETS))

    def nvec(self) -> np.ndarray:
        """The whole ``MultiDiscrete``'s sizes: the exposed blocks, concatenated."""
        return np.concatenate([self.block_nvec(d) for d in self.decisions])

    # ------------------------------------------------------------------ masks
    def masks(self, decision: str) -> np.ndarray:
        """Per dimension of ``decision``'s block, which options are valid (bool ``[dims, options]``)."""
        fed = self.fed
        nvec = self.block_nvec(decision)
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
            parts.append(np.concatenate([row[:n] for row, n in zip(m, self.block_nvec(d))]))
        return np.concatenate(parts)

    # ------------------------------------------------------------------ defaults
    def default_choices(self, decision: str) -> np.ndarray:
        """The default policy's choice per dimension of ``decision``'s block, valid
        under the masks: the aggregation of ``env.default_schedule`` this round (none
        in a cluster without active devices), relaying from a specialist
        (:meth:`default_relay`), the default offloading target, no specialist. It is
        also what replaces a masked choice."""
        n = len(self.block_nvec(decision))
        if decision == "aggregation":
            out = self.encode_aggregation(self.default_aggregation())
            out[~self.masks(decision)[np.arange(n), out]] = 0
            return out
        out = np.zeros(n, dtype=np.int64)
        if decision == "offloading" and len(self.fed.requests):
            default = [OFFLOAD_TARGETS.index(t) for t in self.fed.default_offload()][:n]
            out[: len(default)] = default
        if decision == "relaying":
            for i, cs in enumerate(self.fed.cold_starts[:n]):
                out[i] = self.default_relay(cs.node, cs.kind)
        return out

    def default_action(self) -> np.ndarray:
        """The default fixed policy's whole action this round (valid under the masks)."""
        return np.concatenate([self.default_choices(d) for d in self.decisions]).astype(np.int64)

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

    def default_aggregation(self) -> list[Aggregate]:
        """The operations of ``env.default_schedule`` in the round about to run."""
        key = self.config.default_schedule
        if key == "none":
            return []
        return schedule_ops(table1_schedules()[key], self.core.round + 1, self.fed.kinds)

    # ------------------------------------------------------------------ relay sources
    def relay_sources(self, target: int, kind: str) -> list[tuple[int, str] | None]:
        """For each of ``RELAY_OPTIONS``: the (source node, path) it would use, or None when unavailable."""
        fed, topo = self.fed, self.fed.topology
        ki = fed.kind_index(kind)
        held = fed.trained_ever[: self.n_devices, ki] & fed.members.active & ~fed.cold(kind)
        held[target] = False
        cands = np.nonzero(held)[0]
        score = self.core.score
        task = parse_kind(kind).task

        def rank(d):
            acc = score.get(int(d), {})
            value = acc.get(task, 0.0) if task else (np.mean(list(acc.values())) if acc else 0.0)
            return (fed.is_specialist(d, kind), value, -int(d))

        comp = fed.net.d2d_components(working=False)  # what is known before the round
        same = [d for d in cands if comp[d] == comp[target]]
        edge = int(topo.parent[target])
        out: list[tuple[int, str] | None] = [("none", "")]  # placeholder for option 0
        out.append((int(max(same, key=rank)), "d2d") if same else None)
        out.append((edge, "edge") if fed.last_sync[edge, ki] >= 0 else None)
        out.append((topo.top, "cloud") if fed.last_sync[topo.top, ki] >= 0 else None)
        out.append((int(max(cands, key=rank)), "edge") if len(cands) else None)
        return out

    # ------------------------------------------------------------------ decoding
    def split(self, action) -> dict[str, np.ndarray]:
        """Check ``action`` against the space and the masks and cut it into blocks.
        A masked choice raises ``InvalidAction`` (``env.invalid_action="raise"``) or is
        replaced by the default's and listed in :attr:`invalid`."""
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
            n = len(self.block_nvec(d))
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

    def ops(self, parts: dict[str, np.ndarray]) -> list:
        """The federation operations of one round from the action's blocks; the blocks
        not in ``parts`` take the default policy's."""
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
            ops += self.decode_aggregation(parts["aggregation"])
        else:
            ops += self.default_aggregation()
        if "offloading" in parts and len(fed.requests):
            codes = parts["offloading"][: len(fed.requests)]
            default = fed.default_offload()
            targets = [OFFLOAD_TARGETS[int(c)] for c in codes] + list(default[len(codes) :])
            ops.append(Offload(tuple(targets)))
        return ops

    def decode_aggregation(self, block: np.ndarray) -> list[Aggregate]:
        """The aggregation block as operations; groups with the same choice in every
        cluster move together, as one operation."""
        choice = np.asarray(block).reshape(self.n_clusters, len(self.groups))
        ops = []
        for g, kinds in enumerate(self.groups):
            col = choice[:, g]
            d2d = np.nonzero(col == AGG_OPTIONS.index("d2d"))[0]
            if d2d.size:
                ops.append(("d2d", kinds, tuple(d2d.tolist()), ()))
            for scope in ("edge", "cloud"):
                direct, via = AGG_OPTIONS.index(scope), AGG_OPTIONS.index(f"{scope}_via_head")
                cl = np.nonzero((col == direct) | (col == via))[0]
                if cl.size:
                    ops.append((scope, kinds, tuple(cl.tolist()), tuple(np.nonzero(col == via)[0].tolist())))
            star = np.nonzero(col == AGG_OPTIONS.index("star"))[0]
            if star.size:
                ops.append(("star", kinds, tuple(star.tolist()), ()))
        merged: dict[tuple, list[str]] = {}
        for scope, kinds, clusters, via in ops:
            merged.setdefault((scope, clusters, via), []).extend(kinds)
        out = []
        for (scope, clusters, via), kinds in merged.items():
            if scope == "star":
                out.append(Aggregate(tuple(kinds), "cloud", "star", clusters))
            elif scope == "d2d":
                out.append(Aggregate(tuple(kinds), scope, "gather", clusters))
            elif via:
                out.append(Aggregate(tuple(kinds), scope, "d2d", clusters, d2d_clusters=via))
            else:
                out.append(Aggregate(tuple(kinds), scope, "direct", clusters))
        return out

    # ------------------------------------------------------------------ encoding
    def encode_aggregation(self, ops) -> np.ndarray:
        """The aggregation block that plays ``ops`` (:class:`Aggregate` records, e.g. a
        schedule's round). Raises ``ValueError`` for what the block cannot express: a
        rule or gossip of its own, a module group only partly aggregated, or two
        operations on the same cluster and group."""
        C, G = self.n_clusters, len(self.groups)
        choice = np.zeros((C, G), dtype=np.int64)
        for op in ops:
            if not isinstance(op, Aggregate):
                raise ValueError(f"ops must be Aggregate records, got {op!r}")
            if op.rule is not None or op.gossip_rounds is not None or op.path == "gossip":
                raise ValueError(f"the aggregation block has no rule or gossip of its own; got {op!r}")
            kinds = set(self.fed.expand_kinds(op.kinds)) if self.fed is not None else set(op.kinds)
            cols = [g for g, ks in enumerate(self.groups) if set(ks) & kinds]
            partial = [self.groups[g] for g in cols if not set(self.groups[g]) <= kinds]
            if partial:
                raise ValueError(f"the aggregation block moves whole module groups; {op!r} covers part of {partial}")
            clusters = np.arange(C) if op.clusters is None else np.asarray(op.clusters, dtype=np.int64)
            option = np.full(C, _option_of(op), dtype=np.int64)
            if op.path == "d2d" and op.scope != "d2d" and op.d2d_clusters is not None:
                # only the named clusters go through their head
                direct = ~np.isin(np.arange(C), np.asarray(op.d2d_clusters, dtype=np.int64))
                option[direct] = AGG_OPTIONS.index(op.scope)
            for g in cols:
                if np.any(choice[clusters, g]):
                    raise ValueError(f"two operations aggregate group {self.groups[g]} in clusters {clusters.tolist()}")
                choice[clusters, g] = option[clusters]
        return choice.ravel()


def _option_of(op: Aggregate) -> int:
    """The ``AGG_OPTIONS`` index of an aggregation's scope and path."""
    path = op.path
    if op.scope == "d2d":
        name = "d2d"
    elif path == "star":
        name = "star"
    elif path in (None, "direct"):
        name = op.scope
    elif path == "d2d":
        name = f"{op.scope}_via_head"
    else:
        raise ValueError(f"no aggregation option for scope {op.scope!r} with path {path!r}")
    return AGG_OPTIONS.index(name)


def check_decision(decision: str) -> None:
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")

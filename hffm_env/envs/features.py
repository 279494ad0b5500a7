"""The observation, declared once: :data:`FEATURES` lists every table and, in order,
every feature of it with its width and meaning.

The observation space's shapes (:func:`table_shapes`), the column ranges
(:func:`layout`), the table in ``docs/environments.md`` (:func:`spec_markdown`) and
the assembled arrays (:class:`Observer`) all derive from that list, so the layout
cannot drift from its description. Widths are written with the scenario's sizes:
``M`` modalities, ``T`` tasks, ``K`` module kinds, ``O`` offloading targets, ``R``
relay options; rows are ``D`` devices, ``C`` clusters, or a slot count of
``EnvConfig``.

Rates are log10(1 + Mbit/s); costs are in reference rounds (see the reward) as
log(1 + x), so finite in float32 however costly a scenario is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hffm_env.data.registry import MODALITIES
from hffm_env.envs.codec import RELAY_OPTIONS
from hffm_env.federation.ops import OFFLOAD_TARGETS
from hffm_env.model.banks import gather


@dataclass(frozen=True)
class Feature:
    """One block of columns of a table: ``width`` is ``"1"`` or a size symbol
    (``M``, ``T``, ``K``, ``O``, ``R``)."""

    name: str
    width: str
    doc: str


@dataclass(frozen=True)
class Table:
    """One key of the observation ``Dict``: ``rows`` is ``D``, ``C``, an
    ``EnvConfig`` slot count or ``""`` (a vector); ``low`` its lower bound."""

    key: str
    rows: str
    low: float
    doc: str
    features: tuple[Feature, ...]


def _f(name: str, width: str, doc: str) -> Feature:
    return Feature(name, width, doc)


FEATURES: tuple[Table, ...] = (
    Table(
        "devices",
        "D",
        0.0,
        "one row per device of the network",
        (
            _f("active", "1", "1 while the device is in the federation"),
            _f("modalities", "M", "which modalities are on: image, text, sensor"),
            _f("tasks", "T", "which tasks the device holds"),
            _f("samples", "1", "training samples of its active tasks / pool size"),
            _f("cluster", "1", "cluster index scaled to [0, 1]"),
            _f("is_head", "1", "1 for the cluster head"),
            _f("can_host", "1", "1 when its memory holds the whole model"),
            _f("uplink", "1", "uplink rate"),
            _f("score", "T", "last score per task (`env__reward_metric`)"),
            _f("staleness", "K", "per kind: rounds since the copy was last received, in episodes"),
            _f("cluster_distance", "K", "per kind: relative distance to the cluster's mean copy"),
            _f("global_distance", "K", "per kind: relative distance to all holders' mean copy"),
            _f("specialist", "K", "per kind: 1 when the device is a specialist of it"),
            _f("cold_start", "K", "per kind: 1 while a cold start of it is pending"),
        ),
    ),
    Table(
        "clusters",
        "C",
        0.0,
        "one row per cluster",
        (
            _f("members", "1", "members per device of the network"),
            _f("active_members", "1", "active members per device of the network"),
            _f("head_uplink", "1", "the head's uplink rate"),
            _f("edge_uplink", "1", "the edge server's uplink rate"),
            _f("score", "T", "mean score per task of its members"),
            _f("edge_staleness", "K", "per kind: rounds since the edge copy was last received, in episodes"),
            _f("edge_distance", "K", "per kind: the edge copy's relative distance to the holders' mean"),
        ),
    ),
    Table(
        "globals",
        "",
        -np.inf,
        "the episode as a whole",
        (
            _f("round", "1", "round / `env__max_rounds`"),
            _f("energy_spent", "1", "energy spent, per round of the episode"),
            _f("latency_spent", "1", "latency spent, per round of the episode"),
            _f("mean_score", "1", "mean score over (device, task) pairs"),
            _f("delta_score", "1", "the last round's Δscore (may be negative)"),
            _f("last_latency", "1", "the last round's latency"),
            _f("last_energy", "1", "the last round's energy"),
            _f("cold_starts", "1", "pending cold starts per slot"),
            _f("requests", "1", "pending requests per slot"),
        ),
    ),
    Table(
        "requests",
        "max_requests",
        0.0,
        "one row per pending inference request slot",
        (
            _f("present", "1", "1 when the slot holds a request"),
            _f("device", "1", "the requester, scaled to [0, 1]"),
            _f("cluster", "1", "its cluster, scaled to [0, 1]"),
            _f("task", "T", "the task, one-hot"),
            _f("valid_targets", "O", "which of local, peer, edge, cloud can serve it"),
            _f("input_kb", "1", "the request's input size in kB"),
        ),
    ),
    Table(
        "cold_starts",
        "max_cold_starts",
        0.0,
        "one row per pending cold-start slot",
        (
            _f("present", "1", "1 when the slot holds a cold start"),
            _f("device", "1", "the device, scaled to [0, 1]"),
            _f("kind", "K", "the module kind, one-hot"),
            _f("relay_sources", "R", "which of the relay options can send it"),
        ),
    ),
)

TABLES = {t.key: t for t in FEATURES}


def sizes(core) -> dict[str, int]:
    """The size symbols' values for ``core``'s scenario."""
    return {
        "1": 1,
        "M": len(MODALITIES),
        "T": len(core.tasks),
        "K": len(core.kinds),
        "O": len(OFFLOAD_TARGETS),
        "R": len(RELAY_OPTIONS),
        "D": core.n_devices,
        "C": core.n_clusters,
        "max_requests": core.config.max_requests,
        "max_cold_starts": core.config.max_cold_starts,
    }


def layout(core) -> dict[str, dict[str, slice]]:
    """Per table, each feature's column range."""
    n = sizes(core)
    out = {}
    for table in FEATURES:
        start, cols = 0, {}
        for f in table.features:
            cols[f.name] = slice(start, start + n[f.width])
            start += n[f.width]
        out[table.key] = cols
    return out


def table_shapes(core) -> dict[str, tuple[int, ...]]:
    """The observation ``Dict``'s shapes."""
    n = sizes(core)
    out = {}
    for table in FEATURES:
        width = sum(n[f.width] for f in table.features)
        out[table.key] = (n[table.rows], width) if table.rows else (width,)
    return out


def _width_formula(table: Table) -> str:
    counts: dict[str, int] = {}
    for f in table.features:
        counts[f.width] = counts.get(f.width, 0) + 1
    ones = counts.pop("1", 0)
    known = {"M": len(MODALITIES), "O": len(OFFLOAD_TARGETS), "R": len(RELAY_OPTIONS)}
    for sym in ("M", "O", "R"):
        ones += known[sym] * counts.pop(sym, 0)
    terms = [str(ones)] if ones else []
    terms += [f"{c}{s}" if c > 1 else s for s, c in sorted(counts.items(), key=lambda x: "TK".index(x[0]))]
    return "+".join(terms)


def spec_markdown() -> str:
    """The observation table of ``docs/environments.md``, generated from :data:`FEATURES`:
    one line per feature, in column order."""
    rows_of = {"": "", "max_requests": "env__max_requests, ", "max_cold_starts": "env__max_cold_starts, "}
    fixed = {"M": len(MODALITIES), "O": len(OFFLOAD_TARGETS), "R": len(RELAY_OPTIONS)}
    lines = ["| key, shape | feature | width | meaning |", "| --- | --- | --- | --- |"]
    for t in FEATURES:
        for i, f in enumerate(t.features):
            key = f"`{t.key}` `[{rows_of.get(t.rows, t.rows + ', ')}{_width_formula(t)}]`" if i == 0 else ""
            width = f"{f.width} = {fixed[f.width]}" if f.width in fixed else f.width
            lines.append(f"| {key} | `{f.name}` | {width} | {f.doc} |")
    return "\n".join(lines)


def _log_rate(rate_bps) -> np.ndarray:
    """A link rate as log10(1 + Mbit/s): 0 for none, about 2 for 100 Mbit/s."""
    return np.log10(1.0 + np.nan_to_num(np.asarray(rate_bps, dtype=np.float64)) / 1e6)


class Observer:
    """Computes every feature of :data:`FEATURES` for an :class:`~hffm_env.envs.core.EnvCore`
    and assembles the tables in the declared order."""

    def __init__(self, core):
        self.core = core
        self.layout = layout(core)
        self.shapes = table_shapes(core)

    def observe(self) -> dict[str, np.ndarray]:
        cols = self._columns()
        return {t.key: self._assemble(t, cols[t.key]) for t in FEATURES}

    def _assemble(self, table: Table, cols: dict[str, np.ndarray]) -> np.ndarray:
        shape = self.shapes[table.key]
        out = np.zeros(shape, dtype=np.float32)
        if not table.rows:
            out = out[None]
        for f in table.features:
            sl = self.layout[table.key][f.name]
            block = np.asarray(cols[f.name], dtype=np.float64)
            out[:, sl] = block.reshape(out.shape[0], sl.stop - sl.start)
        return out if table.rows else out[0]

    # ------------------------------------------------------------------ columns
    def _columns(self) -> dict[str, dict[str, np.ndarray]]:
        core = self.core
        fed, topo = core.fed, core.fed.topology
        D, C, T = core.n_devices, core.n_clusters, len(core.tasks)
        mem = fed.members
        edges = topo.tier_ids(1)
        div_c, div_g, div_s = self._divergence(edges)
        r = max(fed.round_index, 0)
        # rounds since a copy was received, in episodes (never received: the rounds so far + 1)
        stale = (np.where(fed.last_sync >= 0, r - fed.last_sync, r + 1) / core.config.max_rounds).astype(np.float32)
        acc = np.zeros((D, T), dtype=np.float32)
        for d, per in core.score.items():
            for t, a in per.items():
                acc[d, core.tasks.index(t)] = a
        up = fed.net.uplink_rate_bps if fed.net.round_index >= 0 else np.zeros(fed.n_nodes)
        spec = np.zeros((D, len(core.kinds)), dtype=np.float32)
        for d, k in fed.roles.specialists:
            spec[d, core.kinds.index(k)] = 1
        cold = np.zeros((D, len(core.kinds)), dtype=np.float32)
        for cs in fed.cold_starts:
            cold[cs.node, core.kinds.index(cs.kind)] = 1
        pool = core.scenario.data.pool_size
        devices = {
            "active": mem.active,
            "modalities": [[m in mem.modalities[d] for m in MODALITIES] for d in range(D)],
            "tasks": [[t in fed.active_tasks(d) for t in core.tasks] for d in range(D)],
            "samples": [sum(len(mem.train[d][t]) for t in fed.active_tasks(d)) / pool for d in range(D)],
            "cluster": topo.cluster[:D] / max(C - 1, 1),
            "is_head": np.isin(np.arange(D), topo.heads),
            "can_host": fed.can_host(),
            "uplink": _log_rate(up[:D]),
            "score": acc,
            "staleness": stale[:D],
            "cluster_distance": div_c,
            "global_distance": div_g,
            "specialist": spec,
            "cold_start": cold,
        }
        sizes_ = topo.cluster_sizes()
        active_c = np.bincount(topo.cluster[mem.active], minlength=C)
        cl_acc = np.zeros((C, T), dtype=np.float32)
        for c in range(C):
            members = [d for d in topo.members(c) if d in core.score]
            for j, t in enumerate(core.tasks):
                vals = [core.score[d][t] for d in members if t in core.score[d]]
                cl_acc[c, j] = np.mean(vals) if vals else 0.0
        clusters = {
            "members": sizes_ / max(D, 1),
            "active_members": active_c / max(D, 1),
            "head_uplink": _log_rate(np.array([up[h] if h >= 0 else 0.0 for h in topo.heads])),
            "edge_uplink": _log_rate(up[edges]),
            "score": cl_acc,
            "edge_staleness": stale[edges],
            "edge_distance": div_s,
        }
        R = core.config.max_rounds
        costs = np.log1p(
            [
                core.energy_spent / core.energy_scale / R,
                core.latency_spent / core.latency_scale / R,
                core.last["latency"],
                core.last["energy"],
            ]
        )
        glob = {
            "round": core.round / R,
            "energy_spent": costs[0],
            "latency_spent": costs[1],
            "mean_score": core.mean_score,
            "delta_score": core.last["delta_score"],
            "last_latency": costs[2],
            "last_energy": costs[3],
            "cold_starts": len(fed.cold_starts) / core.config.max_cold_starts,
            "requests": len(fed.requests) / core.config.max_requests,
        }
        return {
            "devices": devices,
            "clusters": clusters,
            "globals": glob,
            "requests": self._request_columns(),
            "cold_starts": self._cold_columns(),
        }

    def _flat(self, kind: str, rows: np.ndarray) -> torch.Tensor:
        fed = self.core.fed
        copies = gather(fed.bank, fed.names_of([kind]), torch.as_tensor(rows))
        return torch.cat([t.reshape(len(rows), -1) for t in copies.values()], 1)

    def _divergence(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per device and kind: relative L2 distance of its copy to the mean copy of
        the holders in its cluster, and of all holders (0 where not held); per edge
        server and kind: of its copy to the holders' mean."""
        core = self.core
        fed, topo = core.fed, core.fed.topology
        D, K = core.n_devices, len(core.kinds)
        div_c = np.zeros((D, K), dtype=np.float32)
        div_g = np.zeros((D, K), dtype=np.float32)
        div_s = np.zeros((len(edges), K), dtype=np.float32)
        averaging: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}  # per holder set (kinds share them)
        for j, k in enumerate(core.kinds):
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

    def _request_columns(self) -> dict[str, np.ndarray]:
        core = self.core
        fed = core.fed
        R, T = core.config.max_requests, len(core.tasks)
        cols = {
            "present": np.zeros(R, np.float32),
            "device": np.zeros(R, np.float32),
            "cluster": np.zeros(R, np.float32),
            "task": np.zeros((R, T), np.float32),
            "valid_targets": np.zeros((R, len(OFFLOAD_TARGETS)), np.float32),
            "input_kb": np.zeros(R, np.float32),
        }
        req = fed.requests
        mask = fed.offload_mask() if len(req) else np.zeros((0, len(OFFLOAD_TARGETS)), dtype=bool)
        for i in range(min(len(req), R)):
            d, t = int(req.device[i]), req.task[i]
            cols["present"][i] = 1.0
            cols["device"][i] = d / max(core.n_devices - 1, 1)
            cols["cluster"][i] = fed.topology.cluster[d] / max(core.n_clusters - 1, 1)
            cols["task"][i, core.tasks.index(t)] = 1.0
            cols["valid_targets"][i] = mask[i]
            cols["input_kb"][i] = fed.input_bytes(t) / 1e3
        return cols

    def _cold_columns(self) -> dict[str, np.ndarray]:
        core = self.core
        M, K = core.config.max_cold_starts, len(core.kinds)
        cols = {
            "present": np.zeros(M, np.float32),
            "device": np.zeros(M, np.float32),
            "kind": np.zeros((M, K), np.float32),
            "relay_sources": np.zeros((M, len(RELAY_OPTIONS)), np.float32),
        }
        for i, cs in enumerate(core.fed.cold_starts[:M]):
            cols["present"][i] = 1.0
            cols["device"][i] = cs.node / max(core.n_devices - 1, 1)
            cols["kind"][i, core.kinds.index(cs.kind)] = 1.0
            cols["relay_sources"][i] = [s is not None for s in core.codec.relay_sources(cs.node, cs.kind)]
        return cols

"""The aggregate operation: module groups averaged (or combined by a robust rule)
at a scope, over a path, charged on the fog network.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

import numpy as np
import torch

from hffm_env._validation import check_choice
from hffm_env.federation.aggregation import (
    aggregate_into,
    attack_updates,
    clip_updates,
    finite_rows,
    gossip_average,
    gossip_matrix,
)
from hffm_env.federation.config import RULES
from hffm_env.federation.ops import PATHS, SCOPES
from hffm_env.model.banks import gather
from hffm_env.network.schedules import charge_aggregation_parts


class AggregateOp:
    """Aggregations of module groups at a scope over a path, by a rule. A part of :class:`~hffm_env.federation.core.Federation`."""

    # ------------------------------------------------------------------ what a node sends
    def _sent(self, names: list[str], rows: np.ndarray, privacy: bool) -> dict[str, torch.Tensor]:
        """The values ``rows`` send for ``names``: honest updates, or an attacker's, then clipped."""
        idx = torch.as_tensor(rows)
        clip = self.config.privacy.clip_norm if privacy else None
        if clip is None and not any(int(r) in self.roles.attack for r in rows):
            return gather(self.bank, names, idx)  # honest, unclipped: the copies themselves
        base = gather(self.synced, names, idx)
        upd = {n: c - base[n] for n, c in gather(self.bank, names, idx).items()}
        for i, r in enumerate(rows):
            if int(r) in self.roles.attack:
                attack, strength = self.roles.attack[int(r)]
                one = attack_updates({n: u[i : i + 1] for n, u in upd.items()}, attack, strength, self.torch_gen)
                for n in names:
                    upd[n][i : i + 1] = one[n]
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
    def aggregate(
        self,
        kinds,
        scope: str,
        *,
        path: str | None = None,
        clusters=None,
        rule: str | None = None,
        gossip_rounds: int | None = None,
        d2d_clusters=None,
    ) -> dict:
        """Aggregate module ``kinds`` at ``scope`` (see :class:`~hffm_env.federation.ops.Aggregate`).

        Each kind is aggregated over the round's participants that hold it, weighted
        by their training samples; devices that hold it receive the result except
        specialists of that kind, who keep their own copy. Kinds with the same
        participants move together as one payload. With ``path="d2d"`` at edge or
        cloud scope, every cluster reaches its edge server through the cluster head
        (D2D gather and broadcast), or only the clusters in ``d2d_clusters`` when it
        is given (the others upload directly). Returns a record of what changed.

        Faults (``federation.faults``, ``network.faults``): participants that dropped
        out before uploading or missed the deadline are left out; those that dropped
        after uploading count but keep their own copy; a device that dropped out
        relays nothing for others, and devices a D2D route needs but that cannot reach
        their head (over working links and relaying devices) are left out; clusters
        whose edge server is down take the configured fallback (listed in the record's
        ``"outage"``). A contribution with a NaN or ±inf is charged but refused where it
        arrives (a ``nonfinite_upload`` fault); its sender still receives the result.
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
        if d2d_clusters is not None:
            if scope == "d2d" or path != "d2d":
                raise ValueError(
                    f"d2d_clusters applies to scope 'edge' or 'cloud' with path 'd2d' only, got scope {scope!r}, "
                    f"path {path!r}"
                )
            d2d_clusters = np.unique(np.asarray(d2d_clusters, dtype=np.int64).ravel())
            outside = np.setdiff1d(d2d_clusters, clusters)
            if outside.size:
                raise ValueError(
                    f"d2d_clusters must be among the aggregated clusters {clusters.tolist()}, got {outside.tolist()}"
                )
        # an edge server that is down blocks every path through it (star climbs through it
        # only without a direct uplink)
        gated = scope != "d2d" and not (path == "star" and self.scenario.network.direct_uplink is not None)
        out = clusters[self.edge_down[clusters]] if gated else clusters[:0]
        fallback = self.config.faults.outage_fallback
        up = np.setdiff1d(clusters, out)
        to_cloud = out if fallback == "cloud" else out[:0]
        # path "d2d" with d2d_clusters: those clusters go through the head, the rest upload directly
        mixed = d2d_clusters is not None
        record = self._aggregate(
            kinds,
            scope,
            "direct" if mixed else path,
            np.concatenate([up, to_cloud]),
            rule,
            gossip_rounds,
            d2d_clusters,
            to_cloud,
        )
        record["path"] = path
        if out.size:
            record["outage"] = {"clusters": out.tolist(), "fallback": fallback}
            if fallback == "d2d":
                self._aggregate(kinds, "d2d", "gather", out, rule, None, None, out[:0], fallback_for=len(self._ops) - 1)
        return record

    def _aggregate(
        self,
        kinds: tuple[str, ...],
        scope: str,
        path: str,
        clusters: np.ndarray,
        rule: str,
        gossip_rounds: int | None,
        d2d_clusters,
        to_cloud: np.ndarray,
        fallback_for: int | None = None,
    ) -> dict:
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
        routed = (
            in_scope & ((scope == "d2d" and not gossip) | (path == "d2d") | via_head) & ~np.isin(topo.cluster, to_cloud)
        )  # those reach the cloud directly
        cut_off = routed & took_part
        if cut_off.any():
            cut_off &= ~self.net.reaches_head()
        took_part &= ~cut_off
        record = {
            "op": "aggregate",
            "scope": scope,
            "path": path,
            "rule": rule,
            "kinds": list(kinds),
            "participants": {},
        }
        if fallback_for is not None:
            record["fallback_for"] = fallback_for
        if cut_off.any():
            self._faults.append(
                {"fault": "d2d_unreachable", "devices": np.nonzero(cut_off)[0].tolist(), "op": len(self._ops)}
            )
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
            unreached = self._aggregate_values(
                ks, devs, np.maximum(np.array(counts, dtype=np.float64), 1.0), scope, path, rule, gossip_rounds
            )
            for restore in restores:
                restore()
            payload = {k: self.wire_bytes[k] for k in ks}
            if gossip:
                self._charge_gossip(payload, devs, gossip_rounds or self.config.gossip_rounds)
            # specialists keep their own copies: they receive (and pay for) nothing
            # and neither do devices whose cluster formed no aggregate (every contribution refused)
            gets = ~self._dropped_after[devs] & ~np.isin(devs, special) & ~np.isin(devs, unreached)
            parts.append((payload, devs, devs[gets]))
            for k in ks:
                record["participants"][k] = devs.tolist()
        if parts and not gossip:
            level = self.scenario.network.n_tiers - 1 if scope == "cloud" else 1
            if via_head.any():
                record["d2d_clusters"] = sorted(int(c) for c in d2d_clusters)
            direct = np.isin(topo.cluster, to_cloud)
            # clusters are disjoint, so each set of clusters is charged on its own path
            for sel, d2d, star in (
                (~via_head & ~direct, scope == "d2d" or path == "d2d", path == "star"),
                (via_head & ~direct, True, False),
                (direct, False, True),
            ):
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

    def _aggregate_values(
        self,
        kinds: list[str],
        devs: np.ndarray,
        w: np.ndarray,
        scope: str,
        path: str,
        rule: str,
        gossip_rounds: int | None,
    ) -> np.ndarray:
        """Combine what ``devs`` send for ``kinds`` and write the result where it goes.

        A contribution with a non-finite value is refused where it arrives (and
        reported); its sender still receives the result, like every participant. Returns
        the devices that receive nothing: those of a cluster whose every contribution
        was refused (no aggregate forms there) and, in gossip, the refused ones (they
        keep their copies)."""
        topo, cfg = self.topology, self.config
        names = self.names_of(kinds)
        receivers = devs[[not any(self.is_specialist(d, k) for k in kinds) for d in devs]]
        sent = self._sent(names, devs, privacy=True)
        ok = self._refuse_nonfinite(sent, devs, kinds)
        if not ok.all():
            keep = torch.as_tensor(np.nonzero(ok)[0])
            sent = {n: v.index_select(0, keep) for n, v in sent.items()}
        src, w = devs[ok], w[ok]
        if src.size == 0:
            return devs
        rule_args = {
            "trim_fraction": cfg.trim_fraction,
            "krum_f": cfg.krum_f,
            "bucket_size": cfg.bucket_size,
            "bucket_generator": self.bucket_gen,
        }
        mask = self.expert_mask[src] if "experts" in kinds else None
        cluster = topo.cluster[src]
        if scope == "d2d" and path == "gossip":
            mixed = gossip_average(self.gossip_weights(src), gossip_rounds or cfg.gossip_rounds, w, sent)
            idx = torch.as_tensor(src)
            for n in names:
                self.bank[n][idx] = mixed[n]
            self._write(kinds, receivers[np.isin(receivers, src)])
            return devs[~ok]
        if scope == "cloud" and path == "star":
            # one flat aggregate at the top; the edge copies are not touched
            top = np.array([topo.top])
            targets = np.concatenate([top, devs])
            aggregate_into(
                self.bank,
                sent,
                np.zeros(src.size, dtype=np.int64),
                w,
                targets,
                np.zeros(targets.size, dtype=np.int64),
                rule,
                expert_mask=mask,
                noise_std=self._noise_std(w, np.zeros(src.size, dtype=np.int64)),
                generator=self.torch_gen,
                **rule_args,
            )
            self._write(kinds, np.concatenate([receivers, top]))
            return devs[:0]
        noise = self._noise_std(w, cluster)
        # an aggregate forms only in clusters with at least one contribution that arrived
        served = np.isin(topo.cluster[devs], cluster)
        if scope == "d2d":
            targets = devs[served]
            aggregate_into(
                self.bank,
                sent,
                cluster,
                w,
                targets,
                topo.cluster[targets],
                rule,
                expert_mask=mask,
                noise_std=noise,
                generator=self.torch_gen,
                **rule_args,
            )
            self._write(kinds, receivers[np.isin(receivers, targets)])
            return devs[~served]
        # edge level: one aggregate per cluster into the edge server's row (privacy noise added there)
        off = topo.tier_offsets[1]
        edges = off + np.unique(cluster)
        aggregate_into(
            self.bank,
            sent,
            cluster,
            w,
            edges,
            edges - off,
            rule,
            expert_mask=mask,
            noise_std=noise,
            generator=self.torch_gen,
            **rule_args,
        )
        if scope == "edge":
            got = devs[served]
            rows = torch.as_tensor(off + topo.cluster[got])
            for n in names:
                self.bank[n][torch.as_tensor(got)] = self.bank[n].index_select(0, rows)
            self._write(kinds, np.concatenate([receivers[np.isin(receivers, got)], edges]))
            return devs[~served]
        # cloud: the edge aggregates, weighted by their clusters' samples, to the top and back
        # down to every participating cluster
        cw = np.bincount(cluster, weights=w, minlength=topo.n_clusters)[edges - off]
        edge_sent = gather(self.bank, names, torch.as_tensor(edges))
        emask = None if mask is None else np.ones((edges.size, mask.shape[1]), dtype=bool)
        down = off + np.unique(topo.cluster[devs])
        targets = np.concatenate([[topo.top], down, devs])
        aggregate_into(
            self.bank,
            edge_sent,
            np.zeros(edges.size, dtype=np.int64),
            cw,
            targets,
            np.zeros(targets.size, dtype=np.int64),
            rule,
            expert_mask=emask,
            **rule_args,
        )
        self._write(kinds, np.concatenate([receivers, down, [topo.top]]))
        return devs[:0]

    def _refuse_nonfinite(self, sent: dict[str, torch.Tensor], nodes: np.ndarray, kinds) -> np.ndarray:
        """Which of ``nodes``' contributions ``sent`` arrive finite (bool ``[len(nodes)]``).
        The receiver refuses the others whole, and each goes into the round's fault
        report as ``nonfinite_upload``."""
        ok = finite_rows(sent)
        self._faults += [
            {"fault": "nonfinite_upload", "node": int(n), "kinds": list(kinds), "op": len(self._ops)}
            for n in np.asarray(nodes)[~ok]
        ]
        return ok

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

    def gossip_weights(self, devs: np.ndarray, kind: str | None = None) -> np.ndarray:
        """Gossip matrix over ``devs``: this round's working D2D links among them (clusters
        are separate blocks)."""
        devs = np.asarray(devs, dtype=np.int64)
        pos = -np.ones(self.n_devices, dtype=np.int64)
        pos[devs] = np.arange(devs.size)
        e = self.topology.d2d.edges[self.net.d2d_up]  # links that are down carry nothing this round
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
            self.net.charge_d2d_hops(
                self.ledger,
                "aggregate",
                payload,
                senders,
                receivers,
                group=self.topology.cluster[senders],
                step=f"gossip:{r + 1}",
            )

"""The relay operation: a trained holder's module copied to a device, over D2D hops
or up and down the server tree.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

import numpy as np

from hffm_env._validation import check_choice
from hffm_env.federation.ops import RELAY_PATHS


class RelayOp:
    """Relays of a trained holder's module to a device. A part of :class:`~hffm_env.federation.core.Federation`."""

    # ------------------------------------------------------------------ relaying
    def relay(self, kind: str, source: int, target: int, path: str) -> dict:
        """Copy ``source``'s ``kind`` to device ``target`` over ``path``, charging every hop.

        A relay that a fault blocks (its D2D route cut by failed links, or an edge
        server on its way down) fails: nothing is copied or charged, the cold start
        stays, and the record and the round's fault report say why. A copy with a
        non-finite value travels (and is charged) but the target refuses it: the relay
        fails the same way, reported as ``nonfinite_upload`` and ``relay_failed``."""
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
                raise ValueError(
                    f"a D2D relay needs a device source, got node {source} (tier "
                    f"{self.scenario.network.tiers[topo.tier[source]].name})"
                )
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
        sent = (
            self._sent(names, np.array([source]), privacy=False)
            if source < self.n_devices
            else {n: self.bank[n][source : source + 1] for n in names}
        )
        if not self._refuse_nonfinite(sent, np.array([source]), [kind])[0]:
            return self._relay_failed(record, "nonfinite_upload")
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
        self._faults.append(
            {"fault": "relay_failed", "reason": reason, **{k: record[k] for k in ("kind", "source", "target", "path")}}
        )
        self._ops.append(record)
        return record

    def _tree_route(self, source: int, target: int, via_top: bool) -> tuple[list[int], int, list[int]]:
        """A relay through the servers: the nodes that send up (``source`` first), the
        server where it turns (the lowest common one, or the top), and the nodes that
        receive on the way down (``target`` last)."""
        up, down = self._ancestors(source), self._ancestors(target)
        turn = self.topology.top if via_top else [n for n in up if n in down and n >= self.n_devices][0]
        return up[: up.index(turn)], turn, down[: down.index(turn)][::-1]

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

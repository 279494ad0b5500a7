"""Faults and adversaries of a round: edge outages, stragglers and dropouts drawn at
the round's start, and the attacks devices run.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

import numpy as np

from hffm_env._validation import check_choice
from hffm_env.federation.config import ATTACKS


class FaultsMixin:
    """Edge outages, stragglers and dropouts of a round, and the devices' attacks. A part of :class:`~hffm_env.federation.core.Federation`."""

    # ------------------------------------------------------------------ faults
    def _clear_faults(self) -> None:
        n = self.n_devices
        self._faults: list[dict] = []
        self._dropped_before = np.zeros(n, dtype=bool)
        self._dropped_after = np.zeros(n, dtype=bool)
        self._late = np.zeros(n, dtype=bool)
        self._slowdown = np.ones(n)
        self._train_s = np.zeros(n)  # each device's training seconds this round so far

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
            self._faults += [
                {
                    "fault": "edge_outage",
                    "cluster": int(c),
                    "server": int(topo.tier_offsets[1] + c),
                    "fallback": f.outage_fallback,
                }
                for c in np.nonzero(self.edge_down)[0]
            ]
        self._faults += [
            {"fault": "d2d_link_down", "link": [int(a), int(b)]} for a, b in topo.d2d.edges[~self.net.d2d_up]
        ]

    def _server_down(self, node: int) -> bool:
        """Whether ``node`` is an edge server that is out this round."""
        off = self.topology.tier_offsets[1]
        return self.topology.tier[node] == 1 and bool(self.edge_down[node - off])

    def faults(self) -> list[dict]:
        """The faults of the open (or last) round so far."""
        return list(self._faults)

    def _label_flippers(self) -> np.ndarray:
        """Nodes that train on flipped labels (bool ``[n_nodes]``): the label-flipping attackers."""
        flip = np.zeros(self.n_nodes, dtype=bool)
        for d, (attack, _) in self.roles.attack.items():
            flip[d] = attack == "label_flip"
        return flip

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

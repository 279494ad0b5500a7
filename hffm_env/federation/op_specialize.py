"""The specialize operation: specialists own modules, keep their copies through
aggregations and train them more after their upload.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

import numpy as np

from hffm_env.federation.records import SPECIALIST_GROUP
from hffm_env.model.train import local_train


class SpecializeOp:
    """Specialist roles and the specialists' extra training. A part of :class:`~hffm_env.federation.core.Federation`."""

    def is_specialist(self, node: int, kind: str) -> bool:
        return (int(node), kind) in self.roles.specialists

    def specialist_mask(self, kind: str) -> np.ndarray:
        """Devices that are specialists of ``kind`` (bool ``[n_devices]``)."""
        out = np.zeros(self.n_devices, dtype=bool)
        out[[d for d, k in self.roles.specialists if k == kind]] = True
        return out

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
        local_train(
            self.backbone,
            self.bank,
            self.adam,
            view,
            devs,
            devs,
            steps,
            self.config.batch_size,
            self.rng,
            self.model_config,
            expert_mask=self.expert_mask,
            flip_labels=self._label_flippers(),
            only_kinds=[tuple(owned[d]) for d in nodes],
        )
        self.net.charge_compute(
            self.ledger,
            "aggregate",
            "specialist",
            devs,
            steps * self.config.batch_size,
            slowdown=self._slowdown[devs],
            group=SPECIALIST_GROUP + devs,
            step="specialist",
        )
        for d in nodes:
            cols = [self.kind_index(k) for k in owned[d]]
            self.last_train[d, cols] = self.round_index
            self.trained_ever[d, cols] = True

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

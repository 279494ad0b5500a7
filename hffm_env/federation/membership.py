"""Membership and events: who is active, which modalities are on, which tasks each
device holds, the views of the data they give, and the events that change them.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

import numpy as np

from hffm_env._validation import check_choice
from hffm_env.data import FederatedData, Shards, task_spec
from hffm_env.data.partition import deal_shares
from hffm_env.data.registry import MODALITIES
from hffm_env.federation.records import ColdStart
from hffm_env.model.banks import head_kind


class MembershipMixin:
    """Who is active with which modalities and tasks, the data views, and the events. A part of :class:`~hffm_env.federation.core.Federation`."""

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
            self._tables[kind] = (
                np.array([bool(t) for t in tasks], dtype=bool),
                np.array(
                    [sum(len(self.members.train[d][x]) for x in t) for d, t in enumerate(tasks)], dtype=np.float64
                ),
            )
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
        shards = Shards(
            tuple(tasks),
            tuple(tuple(sorted(m)) for m in mem.modalities),
            tuple({t: mem.train[d][t] for t in tasks[d]} for d in range(self.n_devices)),
            tuple({t: mem.test[d][t] for t in tasks[d]} for d in range(self.n_devices)),
        )
        out = FederatedData(self.data.config, self.data.pools, shards)
        if only is None:
            self._view_cache = (mem.version, out)
        return out

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
                    out.append(
                        self.set_modality(d, sorted(mem.modalities[d])[rng.integers(len(mem.modalities[d]))], False)
                    )
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
            test = deal_shares(
                part,
                self.data.pools[task].label,
                [min(max(n_test, 1), len(part))],
                self.event_rng,
                cfg.eval_shares == "stratified",
            )[0]
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

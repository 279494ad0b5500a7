"""Local training of a round: every participating device's steps on the modules it
holds, in one batched pass per step.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hffm_env.data import task_spec
from hffm_env.model.banks import parse_kind
from hffm_env.model.train import local_train, step_tasks


class TrainingMixin:
    """The round's local training of every participating device. A part of :class:`~hffm_env.federation.core.Federation`."""

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
            take |= np.isin(eligible, [d for d, _ in self.roles.specialists])  # specialists always train
            if not take.any():
                take[self.rng.integers(eligible.size)] = True
            participants = eligible[take]
        else:
            participants = eligible
        flip = self._label_flippers()
        losses = np.zeros(0)
        if participants.size and (cfg.local_steps or cfg.local_epochs is not None):
            skipped: set[int] = set()
            losses = local_train(
                self.backbone,
                self.bank,
                self.adam,
                view,
                participants,
                participants,
                cfg.local_steps,
                cfg.batch_size,
                self.rng,
                self.model_config,
                expert_mask=self.expert_mask,
                flip_labels=flip,
                skipped=skipped,
                epochs=cfg.local_epochs,
            )
            self._faults += [
                {"fault": "update_skipped", "device": d, "reason": "non-finite AdamW step"} for d in sorted(skipped)
            ]
            steps = np.array(
                [len(step_tasks(view, int(d), cfg.local_steps, cfg.batch_size, cfg.local_epochs)) for d in participants]
            )
            seconds = self.net.charge_compute(
                self.ledger,
                "train",
                "train",
                participants,
                steps * cfg.batch_size,
                slowdown=self._slowdown[participants],
                deadline_s=cfg.faults.round_deadline_s,
            )
            self._train_s[participants] = seconds
            self._faults += [
                {"fault": "straggler", "device": int(d), "slowdown": float(self._slowdown[d])}
                for d in participants
                if self._slowdown[d] > 1
            ]
            if cfg.faults.round_deadline_s is not None:
                late = participants[seconds > cfg.faults.round_deadline_s]
                self._late[late] = True
                self._faults += [
                    {
                        "fault": "deadline_miss",
                        "device": int(d),
                        "compute_s": float(t),
                        "deadline_s": cfg.faults.round_deadline_s,
                    }
                    for d, t in zip(participants, seconds)
                    if self._late[d]
                ]
            for d in participants:
                for name, hit in (
                    ("dropout_before_upload", self._dropped_before),
                    ("dropout_after_upload", self._dropped_after),
                ):
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

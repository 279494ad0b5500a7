"""The serve (offload) operation: this round's inference requests, run where the
agent sends them, scored and charged.

A part of :class:`~hffm_env.federation.core.Federation`, whose state it reads and
writes."""

from __future__ import annotations

import numpy as np
import torch

from hffm_env._validation import check_choice
from hffm_env.data import task_spec
from hffm_env.federation.ops import OFFLOAD_TARGETS
from hffm_env.federation.records import InferenceResult, Requests
from hffm_env.model import m3t
from hffm_env.model.banks import gather, head_kind
from hffm_env.model.numerics import flush_denormals
from hffm_env.model.train import right_answer_probability, task_inputs, used_names


class ServeOp:
    """The round's inference requests: drawn, served where the agent sends them, charged. A part of :class:`~hffm_env.federation.core.Federation`."""

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
            held_out = {
                t: np.unique(
                    np.concatenate(
                        [
                            mem.test[x][t]
                            for x in range(self.n_devices)
                            if t in mem.active_tasks(x) and len(mem.test[x][t])
                        ]
                        or [np.zeros(0, dtype=np.int64)]
                    )
                )
                for t in self.tasks
            }
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
        return bool(
            task in self.members.active_tasks(node)
            and self.trained_ever[node, k]
            and not self.cold(head_kind(task))[node]
        )

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
        return max(
            cands,
            key=lambda p: (
                self.answers(p, task),
                self.is_specialist(p, head),
                self.accuracy.get(p, {}).get(task, 0.0),
                -p,
            ),
        )

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
            raise ValueError(
                f"targets must name one of {OFFLOAD_TARGETS} for each of the {len(r)} requests, got {len(targets)}"
            )
        mask = self.offload_mask()
        topo = self.topology
        holder = np.zeros(len(r), dtype=np.int64)
        for i, (d, t, tgt) in enumerate(zip(r.device, r.task, targets)):
            check_choice(f"targets[{i}]", tgt, OFFLOAD_TARGETS)
            j = OFFLOAD_TARGETS.index(tgt)
            if not mask[i, j]:
                raise ValueError(
                    f"targets[{i}]={tgt!r} is not available for the request of device {d} "
                    f"(allowed: {[o for o, ok in zip(OFFLOAD_TARGETS, mask[i]) if ok]})"
                )
            holder[i] = {
                "local": d,
                "peer": self.peer_for(int(d), t) if tgt == "peer" else -1,
                "edge": topo.parent[d],
                "cloud": topo.top,
            }[tgt]
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
            logits = m3t.forward(
                self.backbone, params, inputs, task, task_spec(task).modalities, self.model_config.experts_top_k
            )
            correct[sel] = (logits.argmax(-1) == labels).numpy()[:, 0]
            p_right[sel] = right_answer_probability(logits, labels).numpy()[:, 0]
        return correct, p_right

    def input_bytes(self, task: str) -> float:
        """Raw bytes of one input of ``task`` (uint8 image, int16 tokens, float32 signal)."""
        cfg = self.data.config
        size = {"image": 3 * cfg.image_size**2, "text": 2 * cfg.max_question_tokens, "sensor": 4 * cfg.sensor_length}
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
            latency[i] += net.charge_d2d_path(
                led, "inference", {"inference": inp[i]}, path, group=int(group[i]), step="input"
            )
            if answer:
                latency[i] += net.charge_d2d_path(led, "inference", ans, path[::-1], group=int(group[i]), step="answer")
        up = ok & np.isin(tgt, ("edge", "cloud"))
        if up.any():
            latency[up] += net.charge_upload(
                led, "inference", one, dev[up], copies=inp[up], group=group[up], step="input"
            )
        cloud = ok & (tgt == "cloud")
        # each cloud request's chain device → ... → top, one tier per column
        chains = np.array([self._ancestors(int(d)) for d in dev[cloud]], dtype=np.int64).reshape(
            cloud.sum(), self.scenario.network.n_tiers
        )
        for k in range(1, chains.shape[1] - 1):  # on up through the servers below the top
            latency[cloud] += net.charge_upload(
                led, "inference", one, chains[:, k], copies=inp[cloud], group=group[cloud], step=f"input{k - 1}"
            )
        if ok.any():
            latency[ok] += net.charge_cycles(
                led, "inference", "inference", holder[ok], inf.cycles_per_inference, group=group[ok], step="compute"
            )
        edge = ok & (tgt == "edge")
        if answer and edge.any():
            latency[edge] += net.charge_download(led, "inference", ans, dev[edge], group=group[edge], step="answer0")
        if answer and cloud.any():
            for k, col in enumerate(range(chains.shape[1] - 2, -1, -1)):  # back down, tier by tier
                latency[cloud] += net.charge_download(
                    led, "inference", ans, chains[:, col], group=group[cloud], step=f"answer{k}"
                )
        return latency

"""Checkpoints of a federation's learned state, in safetensors only.

:func:`save_checkpoint` writes everything a :class:`~hffm_env.federation.core.Federation`
has learned and who holds what, between two rounds:

* the module banks ``bank`` and ``synced`` and the banked AdamW state (``m``, ``v``,
  ``step``), one tensor per parameter name with the node axis first;
* the trackers ``last_sync`` / ``last_train`` (stored as rounds before the saved
  round, −1 for "never"), ``trained_ever`` and ``expert_mask``;
* the membership (active devices, modalities, tasks, train/test shard indices), the
  roles (specialists, adversaries), the last accuracy per device and task, the
  pending cold starts and inference requests.

Tensors go in the safetensors file; the small structured data (roles, modalities,
task lists, the scenario and seed, the saved round, a SHA-256 digest per tensor)
go in its string metadata as JSON. Nothing is pickled, and loading never runs code
from the file.

A checkpoint holds no channel state, topology, ledger or random streams: those
follow from the scenario and seed, and after :func:`load_checkpoint` the run's
randomness (training batches, events, requests, noise, fading) continues from the
loading federation's own streams. The trackers are restored relative to the loading
federation's ``round_index``, so staleness reads the same; a copy older than the
loading run itself (its round would be negative) is recorded as received in round 0.

:func:`load_checkpoint` only accepts a checkpoint of the same scenario (every field
but ``name``) and seed. It checks the whole file first (format, config, every
tensor's presence, shape, dtype and digest, every index and name) and only then
swaps the state in, so a failed load raises :class:`CheckpointError` and leaves the
federation exactly as it was. :func:`save_checkpoint` writes a temporary file in
the target's directory and renames it over the target, so an interrupted save never
destroys an earlier checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hffm_env.data.registry import MODALITIES
from hffm_env.federation.config import ATTACKS
from hffm_env.federation.core import Federation
from hffm_env.federation.records import ColdStart, Membership, Requests, Roles

FORMAT = "hffm_env.federation.checkpoint"
FORMAT_VERSION = 1
COLD_START_CAUSES = ("task_arrival", "modality_on", "join")


class CheckpointError(ValueError):
    """A checkpoint cannot be saved or loaded: unreadable, of another run, or inconsistent."""


# ---------------------------------------------------------------------- saving
def save_checkpoint(fed: Federation, path: str | os.PathLike) -> None:
    """Write ``fed``'s learned state to the safetensors file ``path`` (atomically).

    Raises :class:`CheckpointError` while a round is open (between ``begin_round()``
    and ``end_round()`` the state is half-updated).
    """
    path = os.fspath(path)
    if not isinstance(fed, Federation):
        raise TypeError(f"fed must be a Federation, got {type(fed).__name__}")
    if fed.round_open:
        raise CheckpointError(
            f"cannot save checkpoint {path!r}: round {fed.round_index} is still open; call end_round() first"
        )
    tensors = _tensors_of(fed)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "scenario": json.dumps(scenario_fingerprint(fed.scenario), sort_keys=True),
        "seed": json.dumps(fed.seed),
        "round_index": json.dumps(fed.round_index),
        "kinds": json.dumps(list(fed.kinds)),
        "members": json.dumps(
            {
                "modalities": [sorted(m) for m in fed.members.modalities],
                "tasks": [list(t) for t in fed.members.tasks],
                "train_tasks": [list(x) for x in fed.members.train],
                "test_tasks": [list(x) for x in fed.members.test],
            }
        ),
        "roles": json.dumps(
            {
                "specialists": [[int(d), k] for d, k in sorted(fed.roles.specialists)],
                "attack": [[int(d), a, float(s)] for d, (a, s) in sorted(fed.roles.attack.items())],
            }
        ),
        "accuracy": json.dumps({str(int(d)): {t: float(a) for t, a in per.items()} for d, per in fed.accuracy.items()}),
        "cold_starts": json.dumps([[int(c.node), c.kind, c.cause, int(c.rounds)] for c in fed.cold_starts]),
        "requests": json.dumps({"task": list(fed.requests.task)}),
        "sha256": json.dumps({k: _digest(t) for k, t in sorted(tensors.items())}),
    }
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable where the platform allows it (POSIX)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensors_of(fed: Federation) -> dict[str, torch.Tensor]:
    out = fed.state.state_dict(fed.round_index)
    mem = fed.members
    out["members/active"] = torch.from_numpy(mem.active.astype(bool))
    for split, shards in (("train", mem.train), ("test", mem.test)):
        for d, per in enumerate(shards):
            for task, idx in per.items():
                out[f"members/{split}/{d}/{task}"] = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))
    out["requests/device"] = torch.from_numpy(np.ascontiguousarray(fed.requests.device, dtype=np.int64))
    out["requests/sample"] = torch.from_numpy(np.ascontiguousarray(fed.requests.sample, dtype=np.int64))
    return out


def _digest(t: torch.Tensor) -> str:
    flat = t.detach().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy() if flat.numel() else b"").hexdigest()


def scenario_fingerprint(scenario) -> dict[str, Any]:
    """The scenario as ``{dotted field path: JSON value}`` (tuples as lists), without its name."""
    flat: dict[str, Any] = {}

    def walk(value, prefix):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(value, (list, tuple)) and value:
            for i, v in enumerate(value):
                walk(v, f"{prefix}.{i}")
        else:
            flat[prefix] = json.loads(json.dumps(value))

    tree = dataclasses.asdict(scenario)
    tree.pop("name", None)
    walk(tree, "")
    return flat


# ---------------------------------------------------------------------- loading
def load_checkpoint(fed: Federation, path: str | os.PathLike) -> None:
    """Replace ``fed``'s learned state with the checkpoint at ``path``.

    ``fed`` must run the checkpoint's scenario and seed and have no open round.
    Every check runs before anything is changed: on :class:`CheckpointError` the
    federation is untouched.
    """
    path = os.fspath(path)
    if not isinstance(fed, Federation):
        raise TypeError(f"fed must be a Federation, got {type(fed).__name__}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    if fed.round_open:
        raise CheckpointError(
            f"cannot load checkpoint {path!r}: round {fed.round_index} is still open; call end_round() first"
        )
    meta, tensors = _read(path)
    state = _Reader(fed, path, meta, tensors).state()
    _swap_in(fed, state)


def _read(path: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except Exception as exc:  # safetensors reports every malformed file with its own error type
        raise CheckpointError(
            f"checkpoint {path!r} is not a readable safetensors file (truncated, corrupt or another format): {exc}"
        ) from exc
    return meta, tensors


class _Reader:
    """Validates one checkpoint against the federation it is loaded into and builds the new state."""

    def __init__(self, fed: Federation, path: str, meta: dict[str, str], tensors: dict[str, torch.Tensor]):
        self.fed, self.path, self.meta, self.tensors = fed, path, meta, tensors

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.path!r}: {what}")

    def field(self, key: str) -> Any:
        if key not in self.meta:
            raise self.fail(f"metadata field {key!r} is missing")
        try:
            return json.loads(self.meta[key])
        except json.JSONDecodeError as exc:
            raise self.fail(f"metadata field {key!r} is not valid JSON ({exc})") from exc

    def state(self) -> dict[str, Any]:
        fed = self.fed
        fmt = self.meta.get("format")
        if fmt != FORMAT:
            raise self.fail(
                f"not an hffm_env federation checkpoint (metadata 'format' is {fmt!r}, expected {FORMAT!r})"
            )
        version = self.meta.get("format_version")
        if version != str(FORMAT_VERSION):
            raise self.fail(f"format_version {version!r} is not supported (this hffm_env reads {FORMAT_VERSION})")
        self.check_config()
        if self.field("kinds") != list(fed.kinds):
            raise self.fail(f"module kinds {self.field('kinds')} differ from this run's {list(fed.kinds)}")
        members = self.members()
        expected = self.expected(members)
        missing = sorted(set(expected) - set(self.tensors))
        if missing:
            raise self.fail(
                f"tensor {missing[0]!r} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        extra = sorted(set(self.tensors) - set(expected))
        if extra:
            raise self.fail(
                f"unexpected tensor {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
            )
        for key, (shape, dtype) in expected.items():
            t = self.tensors[key]
            if t.dtype != dtype:
                raise self.fail(f"tensor {key!r} has dtype {t.dtype}, expected {dtype}")
            if shape is not None and tuple(t.shape) != shape:
                raise self.fail(f"tensor {key!r} has shape {list(t.shape)}, expected {list(shape)}")
            if shape is None and t.dim() != 1:
                raise self.fail(f"tensor {key!r} must be 1-D, got shape {list(t.shape)}")
        digests = self.field("sha256")
        if not isinstance(digests, dict) or set(digests) != set(self.tensors):
            raise self.fail("metadata field 'sha256' must give one digest per tensor")
        for key in sorted(self.tensors):
            if _digest(self.tensors[key]) != digests[key]:
                raise self.fail(f"tensor {key!r} does not match its SHA-256 digest: the file is corrupt")
        state = {
            "members": self.shards(members),
            "roles": self.roles(),
            "accuracy": self.accuracy(),
            "cold_starts": self.cold_starts(),
            "requests": self.requests(),
            "bank_state": self.bank_state(),
        }
        return state

    # -------------------------------------------------------------- config
    def check_config(self) -> None:
        fed = self.fed
        saved = self.field("scenario")
        if not isinstance(saved, dict):
            raise self.fail("metadata field 'scenario' must be an object of field paths")
        here = scenario_fingerprint(fed.scenario)
        diffs = []
        if self.field("seed") != fed.seed:
            diffs.append(f"seed: checkpoint {self.field('seed')!r}, this run {fed.seed!r}")
        absent = "<absent>"
        for key in sorted(set(saved) | set(here)):
            a, b = saved.get(key, absent), here.get(key, absent)
            if not _same(a, b):
                diffs.append(f"{key}: checkpoint {a!r}, this run {b!r}")
        if diffs:
            raise self.fail("it was saved by a different run; differing fields: " + "; ".join(diffs))

    # -------------------------------------------------------------- tensors expected
    def members(self) -> dict[str, list]:
        fed = self.fed
        m = self.field("members")
        keys = ("modalities", "tasks", "train_tasks", "test_tasks")
        if not isinstance(m, dict) or any(not isinstance(m.get(k), list) or len(m[k]) != fed.n_devices for k in keys):
            raise self.fail(
                f"metadata field 'members' must hold lists {keys} of {fed.n_devices} entries (one per device)"
            )
        for key, allowed in (
            ("modalities", MODALITIES),
            ("tasks", fed.tasks),
            ("train_tasks", fed.tasks),
            ("test_tasks", fed.tasks),
        ):
            for d, names in enumerate(m[key]):
                if not isinstance(names, list) or any(x not in allowed for x in names) or len(set(names)) != len(names):
                    raise self.fail(f"members.{key}[{d}] must be distinct names among {list(allowed)}, got {names!r}")
        return m

    def expected(self, members: dict[str, list]) -> dict[str, tuple[tuple[int, ...] | None, torch.dtype]]:
        """Every tensor's key, shape (None: any length, 1-D) and dtype."""
        fed = self.fed
        out: dict[str, tuple[tuple[int, ...] | None, torch.dtype]] = dict(fed.state.expected())
        out["members/active"] = ((fed.n_devices,), torch.bool)
        for split in ("train", "test"):
            for d, tasks in enumerate(members[f"{split}_tasks"]):
                for task in tasks:
                    out[f"members/{split}/{d}/{task}"] = (None, torch.int64)
        out["requests/device"] = (None, torch.int64)
        out["requests/sample"] = (None, torch.int64)
        return out

    # -------------------------------------------------------------- structured state
    def shards(self, m: dict[str, list]) -> Membership:
        fed = self.fed
        split_of = {}
        for split in ("train", "test"):
            split_of[split] = []
            for d, tasks in enumerate(m[f"{split}_tasks"]):
                per = {}
                for task in tasks:
                    key = f"members/{split}/{d}/{task}"
                    idx = self.tensors[key].numpy().copy()
                    self.check_indices(key, idx, len(fed.data.pools[task].label))
                    per[task] = idx
                split_of[split].append(per)
        for d, tasks in enumerate(m["tasks"]):
            lacking = [t for t in tasks if t not in split_of["train"][d] or t not in split_of["test"][d]]
            if lacking:
                raise self.fail(f"device {d} holds task(s) {lacking} but has no train/test shard for them")
        active = self.tensors["members/active"].numpy().copy()
        return Membership(
            active,
            [set(x) for x in m["modalities"]],
            [list(x) for x in m["tasks"]],
            split_of["train"],
            split_of["test"],
            version=fed.members.version + 1,
        )

    def check_indices(self, key: str, idx: np.ndarray, n: int) -> None:
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise self.fail(f"tensor {key!r} holds indices outside [0, {n - 1}]: {bad[:5].tolist()}")

    def node(self, what: str, d: Any, n: int) -> int:
        if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < n:
            raise self.fail(f"{what} must be a device id in [0, {n - 1}], got {d!r}")
        return d

    def roles(self) -> Roles:
        fed = self.fed
        r = self.field("roles")
        if not isinstance(r, dict) or not all(isinstance(r.get(k), list) for k in ("specialists", "attack")):
            raise self.fail("metadata field 'roles' must hold lists 'specialists' and 'attack'")
        roles = Roles()
        for i, s in enumerate(r["specialists"]):
            if not isinstance(s, list) or len(s) != 2 or s[1] not in fed.kinds:
                raise self.fail(
                    f"roles.specialists[{i}] must be [device, kind] with kind among {list(fed.kinds)}, got {s!r}"
                )
            roles.specialists.add((self.node(f"roles.specialists[{i}] device", s[0], fed.n_devices), s[1]))
        for i, a in enumerate(r["attack"]):
            if (
                not isinstance(a, list)
                or len(a) != 3
                or a[1] not in ATTACKS
                or not isinstance(a[2], (int, float))
                or not math.isfinite(a[2])
            ):
                raise self.fail(
                    f"roles.attack[{i}] must be [device, attack, strength] with attack among "
                    f"{list(ATTACKS)} and a finite strength, got {a!r}"
                )
            roles.attack[self.node(f"roles.attack[{i}] device", a[0], fed.n_devices)] = (a[1], float(a[2]))
        return roles

    def accuracy(self) -> dict[int, dict[str, float]]:
        fed = self.fed
        acc = self.field("accuracy")
        if not isinstance(acc, dict):
            raise self.fail("metadata field 'accuracy' must map device ids to {task: accuracy}")
        out: dict[int, dict[str, float]] = {}
        for d, per in acc.items():
            dev = self.node("accuracy device", int(d) if d.isdigit() else d, fed.n_devices)
            if not isinstance(per, dict) or any(
                t not in fed.tasks or not isinstance(a, (int, float)) for t, a in per.items()
            ):
                raise self.fail(f"accuracy[{d}] must map tasks among {list(fed.tasks)} to numbers, got {per!r}")
            out[dev] = {t: float(a) for t, a in per.items()}
        return out

    def cold_starts(self) -> list[ColdStart]:
        fed = self.fed
        pending = self.field("cold_starts")
        if not isinstance(pending, list):
            raise self.fail("metadata field 'cold_starts' must be a list of [device, kind, cause, rounds]")
        out = []
        for i, c in enumerate(pending):
            if (
                not isinstance(c, list)
                or len(c) != 4
                or c[1] not in fed.kinds
                or c[2] not in COLD_START_CAUSES
                or not isinstance(c[3], int)
                or isinstance(c[3], bool)
                or c[3] < 0
            ):
                raise self.fail(
                    f"cold_starts[{i}] must be [device, kind, cause, rounds] with kind among "
                    f"{list(fed.kinds)}, cause among {list(COLD_START_CAUSES)} and rounds an integer "
                    f">= 0, got {c!r}"
                )
            out.append(ColdStart(self.node(f"cold_starts[{i}] device", c[0], fed.n_devices), c[1], c[2], c[3]))
        return out

    def requests(self) -> Requests:
        fed = self.fed
        r = self.field("requests")
        tasks = r.get("task") if isinstance(r, dict) else None
        device = self.tensors["requests/device"].numpy().copy()
        sample = self.tensors["requests/sample"].numpy().copy()
        if not isinstance(tasks, list) or any(t not in fed.tasks for t in tasks):
            raise self.fail(f"requests.task must be a list of tasks among {list(fed.tasks)}")
        if not len(tasks) == len(device) == len(sample):
            raise self.fail(
                f"requests: {len(tasks)} tasks, {len(device)} devices and {len(sample)} samples must be as many"
            )
        self.check_indices("requests/device", device, fed.n_devices)
        for i, t in enumerate(tasks):
            self.check_indices("requests/sample", sample[i : i + 1], len(fed.data.pools[t].label))
        return Requests(device, tuple(tasks), sample)

    def bank_state(self) -> dict[str, torch.Tensor]:
        """The bank state's tensors, checked by the state itself."""
        names = set(self.fed.state.expected())
        tensors = {k: t for k, t in self.tensors.items() if k in names}
        try:
            self.fed.state.check_state_dict(tensors)
        except ValueError as exc:
            raise self.fail(str(exc)) from exc
        return tensors


def _same(a: Any, b: Any) -> bool:
    """Equal config values (2 == 2.0, NaN == NaN, but True != 1)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _swap_in(fed: Federation, state: dict[str, Any]) -> None:
    """Install a validated state; nothing here can fail half-way."""
    fed.state.load_state_dict(state["bank_state"], fed.round_index)
    fed.replace_members(state["members"])
    fed.roles = state["roles"]
    fed.accuracy = state["accuracy"]
    fed.cold_starts = state["cold_starts"]
    fed.requests = state["requests"]

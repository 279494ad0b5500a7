"""Fixed controllers with SB3's ``predict(obs, state, episode_start, deterministic)``.

Every policy is built for one env (``policy = make_policy("hfm_2", env)``) and acts on
that env's whole ``MultiDiscrete`` action, block by block (aggregation, relaying,
specialization, offloading; only the blocks the env exposes). A policy decides each
block it knows and leaves the others to the env's default fixed policy's choice.

* **Table I schedules** (``star``, ``edge_only``, ``edge_only_d2d``, ``hfm_<E>``,
  ``hfm_d2d_<E>``, any ``E_agg``, and the periodic ``edge_every_<k>``,
  ``d2d_every_<k>``) decide the aggregation block from the round number alone: the
  schedule's operations of that round
  (:func:`~hffm_env.federation.schedules.schedule_ops`), written as the block by the
  env's action codec.
* **Heuristics** (they read the simulator's state through ``env.unwrapped.core``, as a
  privileged controller would): relaying from the nearest holder of the module (a
  D2D peer, else the edge copy, else the cloud copy, else any holder);
  specialization of the device with the most data for each encoder/head in each
  cluster; offloading to the cheapest target (local, peer, edge, cloud in that
  order) whose copy's estimated score is within a tolerance of the best one's.
* **local_only**: no aggregation (a cost floor; not in Table I).
* **random**: uniform over the valid options of every dimension.
"""

from __future__ import annotations

import numpy as np

from hffm_env.envs.codec import RELAY_OPTIONS
from hffm_env.federation.ops import OFFLOAD_TARGETS
from hffm_env.federation.schedules import schedule_ops
from hffm_env.network.schedules import TABLE1_KEYS, schedule_from_key

SCHEDULE_KEYS = TABLE1_KEYS


class BasePolicy:
    """Common plumbing: the env's blocks, the defaults for blocks a policy leaves alone."""

    name = "base"

    def __init__(self, env):
        self.env = env
        self.core = env.unwrapped.core
        self.codec = self.core.codec
        self.blocks = self.core.decisions
        self.sizes = [len(self.codec.block_nvec(d)) for d in self.blocks]

    # SB3's signature, so evaluation treats learned and fixed policies alike
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        parts = []
        for block, n in zip(self.blocks, self.sizes):
            choice = self.decide(block, observation)
            default = self.codec.default_choices(block)
            choice = default if choice is None else np.asarray(choice, dtype=np.int64).copy()
            # a fixed policy never plays a masked option: such dimensions take the default's
            bad = ~self.codec.masks(block)[np.arange(n), choice]
            choice[bad] = default[bad]
            parts.append(choice)
        return np.concatenate(parts).astype(np.int64), state

    def decide(self, block: str, observation) -> np.ndarray | None:
        return None

    def _schedule_choice(self, key: str) -> np.ndarray:
        """The aggregation block that plays schedule ``key``'s operations this round."""
        if key == "none":
            return np.zeros(len(self.codec.block_nvec("aggregation")), dtype=np.int64)
        ops = schedule_ops(schedule_from_key(key), self.core.round + 1, self.core.fed.kinds)
        return self.codec.encode_aggregation(ops)


class SchedulePolicy(BasePolicy):
    """One of the paper's fixed aggregation schedules (Table I)."""

    def __init__(self, env, key: str):
        super().__init__(env)
        schedule_from_key(key)
        self.key = key
        self.name = key

    def decide(self, block, observation):
        if block == "aggregation":
            return self._schedule_choice(self.key)
        return None


class DefaultPolicy(BasePolicy):
    """The env's own default for every exposed block: the default aggregation schedule
    (``env.default_schedule``) and the fallback option of every other block, as the
    env plays for the blocks an id does not expose."""

    name = "default"


class LocalOnlyPolicy(BasePolicy):
    """No aggregation at all: every device keeps fine-tuning its own copy (a reference
    point below every Table I schedule in cost)."""

    name = "local_only"

    def decide(self, block, observation):
        if block == "aggregation":
            return self._schedule_choice("none")
        return None


class RelayHeuristic(BasePolicy):
    """Serve every cold start from the nearest holder: D2D peer, edge copy, cloud copy, anyone."""

    name = "relay_nearest"

    def decide(self, block, observation):
        if block != "relaying":
            return None
        mask = self.codec.masks("relaying")
        out = np.zeros(len(mask), dtype=np.int64)
        for i, m in enumerate(mask):
            for option in ("d2d_peer", "edge_copy", "cloud_copy", "best_anywhere"):
                if m[RELAY_OPTIONS.index(option)]:
                    out[i] = RELAY_OPTIONS.index(option)
                    break
        return out


class SpecializationHeuristic(BasePolicy):
    """In each cluster, the device with the most training data for an encoder/head specialises in it."""

    name = "specialize_most_data"

    def decide(self, block, observation):
        if block != "specialization":
            return None
        core, fed = self.core, self.core.fed
        S = len(self.codec.special_kinds)
        out = np.zeros(core.n_devices * S, dtype=np.int64)
        for j, kind in enumerate(self.codec.special_kinds):
            counts = fed.sample_counts(kind)
            for c in range(core.n_clusters):
                members = fed.topology.members(c)
                members = members[counts[members] > 0]
                if members.size:
                    out[int(members[np.argmax(counts[members])]) * S + j] = 1
        return out


class OffloadHeuristic(BasePolicy):
    """Run each request at the cheapest valid target (local, peer, edge, cloud in that
    order) whose estimated score on the request's task is within ``tolerance`` of the
    best target's. The estimate of a copy that is not trained for the task
    (:meth:`~hffm_env.federation.core.Federation.answers`) is 0; otherwise it is the
    last score of the device (local, peer), of the cluster's holders (edge) or of
    every holder (cloud)."""

    name = "offload_cheapest"

    def __init__(self, env, tolerance: float = 0.02):
        super().__init__(env)
        self.tolerance = tolerance

    def decide(self, block, observation):
        if block != "offloading":
            return None
        core, fed = self.core, self.core.fed
        out = self.codec.default_choices("offloading")
        req = fed.requests
        if not len(req):
            return out
        mask = fed.offload_mask()
        score = core.score
        topo = fed.topology
        for i in range(min(len(req), len(out))):
            d, t = int(req.device[i]), req.task[i]
            peer = fed.peer_for(d, t)
            holders = [x for x in score if t in score[x] and fed.answers(x, t)]
            cluster = [x for x in holders if topo.cluster[x] == topo.cluster[d]]
            estimate = [
                score[d][t] if fed.answers(d, t) and t in score.get(d, {}) else 0.0,
                score.get(peer, {}).get(t, 0.0) if peer >= 0 and fed.answers(peer, t) else 0.0,
                float(np.mean([score[x][t] for x in cluster]))
                if cluster and fed.answers(int(topo.parent[d]), t)
                else 0.0,
                float(np.mean([score[x][t] for x in holders])) if holders and fed.answers(topo.top, t) else 0.0,
            ]
            valid = [j for j in range(len(OFFLOAD_TARGETS)) if mask[i, j]]
            best = max(estimate[j] for j in valid)
            out[i] = next(j for j in valid if estimate[j] >= best - self.tolerance)
        return out


def sample_valid_action(mask, nvec, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random valid option for every dimension of a ``MultiDiscrete``
    action: ``mask`` is the flat ``action_masks()``, ``nvec`` the space's sizes."""
    rows = np.split(np.asarray(mask), np.cumsum(nvec)[:-1])
    return np.array([rng.choice(np.flatnonzero(r)) for r in rows], dtype=np.int64)


class RandomPolicy(BasePolicy):
    """Uniform over the valid options of every dimension (its own seeded generator)."""

    name = "random"

    def __init__(self, env, seed: int = 0):
        super().__init__(env)
        self.rng = np.random.default_rng(seed)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        return sample_valid_action(self.codec.action_masks(), self.codec.nvec(), self.rng), state


class CombinedPolicy(BasePolicy):
    """Each block decided by the first of ``policies`` that decides it."""

    def __init__(self, env, policies: list[BasePolicy], name: str):
        super().__init__(env)
        self.policies = policies
        self.name = name

    def decide(self, block, observation):
        for p in self.policies:
            choice = p.decide(block, observation)
            if choice is not None:
                return choice
        return None


BASELINES = ("default",) + SCHEDULE_KEYS + ("local_only", "heuristics", "random")


def make_policy(name: str, env, seed: int = 0) -> BasePolicy:
    """A fixed policy by name: ``default`` (the env's own default for every block), a
    schedule key (``hfm_4``, ``d2d_every_4`` etc. too), ``local_only``, ``relay_nearest``,
    ``specialize_most_data``, ``offload_cheapest``, ``heuristics`` (all three
    heuristics with HF-FM E_agg=2 aggregation), or ``random``."""
    if name == "default":
        return DefaultPolicy(env)
    if name == "random":
        return RandomPolicy(env, seed)
    if name == "local_only":
        return LocalOnlyPolicy(env)
    if name == "relay_nearest":
        return RelayHeuristic(env)
    if name == "specialize_most_data":
        return SpecializationHeuristic(env)
    if name == "offload_cheapest":
        return OffloadHeuristic(env)
    if name == "heuristics":
        return CombinedPolicy(
            env,
            [SchedulePolicy(env, "hfm_2"), RelayHeuristic(env), SpecializationHeuristic(env), OffloadHeuristic(env)],
            "heuristics",
        )
    try:
        return SchedulePolicy(env, name)
    except ValueError:
        raise ValueError(
            f"policy must be one of {', '.join(BASELINES)}, relay_nearest, specialize_most_data, "
            f"offload_cheapest, hfm_<E>, hfm_d2d_<E>, edge_every_<k>, d2d_every_<k>, or a saved model "
            f"path, got {name!r}"
        ) from None


def applies(name: str, env_id: str) -> bool:
    """Whether the fixed policy ``name`` decides anything on ``env_id`` (else it is the default policy)."""
    blocks = {
        "Aggregation": {"aggregation"},
        "Relaying": {"relaying"},
        "Specialization": {"specialization"},
        "Offloading": {"offloading"},
        "HFFM": {"aggregation", "relaying", "specialization", "offloading"},
    }
    exposed = blocks[env_id.split("/")[-1].split("-")[0]]
    needs = {
        "relay_nearest": {"relaying"},
        "specialize_most_data": {"specialization"},
        "offload_cheapest": {"offloading"},
        "random": set(exposed),
        "heuristics": set(exposed),
        "default": set(exposed),
    }
    return bool(needs.get(name, {"aggregation"}) & exposed)

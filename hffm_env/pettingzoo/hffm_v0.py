"""``hffm_v0``: the HF-FM as a multi-agent PettingZoo environment.

Agents are the edge servers, ``edge_0 … edge_{C−1}`` (each speaks for its cluster
and its head), and with ``env__device_agents=True`` also the devices
``device_0 … device_{D−1}``. One step is one federated round.

* ``edge_c`` observes its cluster's row, the globals, and the mean and max of its
  current members' device rows (see :mod:`hffm_env.envs.hffm_env` for the
  features); it acts ``MultiDiscrete([7] × groups)``: its cluster's aggregation
  choice per module group (``AGG_OPTIONS``).
* ``device_d`` observes its own row, its cluster's row and the globals; it acts
  ``MultiDiscrete([2] × S + [4] × 2)``: whether it specialises in each encoder/head,
  and where its first two pending inference requests run (later ones and all
  requests without device agents follow the default policy).

Rewards: the team reward of the Gymnasium env for every agent
(``env__shared_reward=True``, default), or per agent the same terms
(:mod:`hffm_env.envs.rewards`, ``env__reward_terms``) over its own scope: an edge
server gets its cluster's Δscore, the served score of its members' requests, the
energy its cluster's nodes spent (and a share of the cloud's) and its replaced
choices; a device its own.
The AEC form is PettingZoo's conversion of the parallel one.

``parallel_env(preset="tiny", **overrides)``, ``env(...)`` (AEC), ``raw_env`` (the
parallel class).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from hffm_env.envs.codec import AGG_OPTIONS
from hffm_env.envs.core import EnvCore
from hffm_env.envs.render import CoreRenderer
from hffm_env.envs.rewards import reward_terms
from hffm_env.federation.ops import OFFLOAD_TARGETS
from hffm_env.scenario import make_scenario

REQUESTS_PER_DEVICE_AGENT = 2


class HFFMParallelEnv(ParallelEnv):
    metadata = {"name": "hffm_v0", "render_modes": ["rgb_array", "human"], "render_fps": 2, "is_parallelizable": True}

    def __init__(self, preset: str = "tiny", render_mode: str | None = None, **overrides: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.scenario = make_scenario(preset, **overrides)
        self.devices_act = self.scenario.env.device_agents
        decisions = ("aggregation", "specialization", "offloading") if self.devices_act else ("aggregation",)
        self.core = EnvCore(self.scenario, decisions)
        C, D = self.core.n_clusters, self.core.n_devices
        self.possible_agents = [f"edge_{c}" for c in range(C)] + (
            [f"device_{d}" for d in range(D)] if self.devices_act else []
        )
        self.agents = []
        shapes = self.core.obs_shapes
        f_dev, f_cl, f_g = shapes["devices"][1], shapes["clusters"][1], shapes["globals"][0]
        G, S = len(self.core.codec.groups), len(self.core.codec.special_kinds)
        self._obs_spaces, self._act_spaces = {}, {}
        for a in self.possible_agents:
            size = f_cl + f_g + 2 * f_dev if a.startswith("edge_") else f_dev + f_cl + f_g
            self._obs_spaces[a] = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
            self._act_spaces[a] = spaces.MultiDiscrete(
                [len(AGG_OPTIONS)] * G
                if a.startswith("edge_")
                else [2] * S + [len(OFFLOAD_TARGETS)] * REQUESTS_PER_DEVICE_AGENT
            )
        self._renderer = CoreRenderer()
        self._rng = np.random.default_rng()

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        return self._act_spaces[agent]

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.core.reset(int(self._rng.integers(2**31 - 1)))
        self.agents = list(self.possible_agents)
        obs = self._observe()
        return obs, {a: {} for a in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode: call reset()")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions must hold one action per live agent; missing {missing}")
        flat = self._joint_action(actions)
        reward, terminated, truncated, info = self.core.step(flat)
        rewards = {a: reward for a in self.agents} if self.scenario.env.shared_reward else self._own_rewards()
        obs = self._observe()
        agents = list(self.agents)
        terms = {a: terminated for a in agents}
        truncs = {a: truncated for a in agents}
        infos = {a: info for a in agents}
        if terminated or truncated:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def render(self):
        if self.render_mode is None:
            return None
        return self._renderer.render(self.core, self.render_mode)

    def close(self):
        self._renderer.close()

    # ------------------------------------------------------------------ helpers
    def _observe(self) -> dict[str, np.ndarray]:
        o = self.core.observe()
        topo = self.core.fed.topology
        out = {}
        for a in self.possible_agents:
            kind, i = a.split("_")
            i = int(i)
            if kind == "edge":
                members = topo.members(i)
                rows = o["devices"][members] if len(members) else np.zeros((1, o["devices"].shape[1]), np.float32)
                out[a] = np.concatenate([o["clusters"][i], o["globals"], rows.mean(0), rows.max(0)])
            else:
                out[a] = np.concatenate([o["devices"][i], o["clusters"][topo.cluster[i]], o["globals"]])
        return {a: out[a].astype(np.float32) for a in self.agents or self.possible_agents}

    def _joint_action(self, actions) -> np.ndarray:
        core, codec = self.core, self.core.codec
        parts = []
        G = len(codec.groups)
        agg = np.zeros(core.n_clusters * G, dtype=np.int64)
        for c in range(core.n_clusters):
            a = np.asarray(actions[f"edge_{c}"])
            if not self._act_spaces[f"edge_{c}"].contains(a.astype(np.int64)):
                raise ValueError(f"action of edge_{c} must be in {self._act_spaces[f'edge_{c}']}, got {a!r}")
            agg[c * G : (c + 1) * G] = a
        parts.append(agg)
        if self.devices_act:
            S = len(codec.special_kinds)
            spec = np.zeros(core.n_devices * S, dtype=np.int64)
            req = core.fed.requests
            self._requesters = [int(d) for d in req.device]
            off = codec.default_choices("offloading")
            for d in range(core.n_devices):
                a = np.asarray(actions[f"device_{d}"]).astype(np.int64)
                if not self._act_spaces[f"device_{d}"].contains(a):
                    raise ValueError(f"action of device_{d} must be in {self._act_spaces[f'device_{d}']}, got {a!r}")
                spec[d * S : (d + 1) * S] = a[:S]
                mine = [i for i in np.nonzero(req.device == d)[0] if i < core.config.max_requests]
                for k, i in enumerate(mine[:REQUESTS_PER_DEVICE_AGENT]):
                    off[i] = a[S + k]
            parts += [spec, off]
        return np.concatenate(parts)

    def agent_actions(self, joint) -> dict[str, np.ndarray]:
        """Each live agent's action from a joint action of the core's blocks (the
        inverse of how the agents' actions are joined): an edge agent gets its
        cluster's aggregation choices; a device agent its specialisation choices and
        the offloading choices of its first pending requests (0 where it has fewer)."""
        core, codec = self.core, self.core.codec
        joint = np.asarray(joint, dtype=np.int64)
        if joint.shape != codec.nvec().shape:
            raise ValueError(f"joint action must have shape {codec.nvec().shape}, got {joint.shape}")
        blocks, start = {}, 0
        for d in core.decisions:
            n = len(codec.block_nvec(d))
            blocks[d], start = joint[start : start + n], start + n
        G = len(codec.groups)
        out = {f"edge_{c}": blocks["aggregation"][c * G : (c + 1) * G].copy() for c in range(core.n_clusters)}
        if self.devices_act:
            S = len(codec.special_kinds)
            req = core.fed.requests
            for d in range(core.n_devices):
                mine = [i for i in np.nonzero(req.device == d)[0] if i < core.config.max_requests]
                off = [int(blocks["offloading"][i]) for i in mine[:REQUESTS_PER_DEVICE_AGENT]]
                off += [0] * (REQUESTS_PER_DEVICE_AGENT - len(off))
                out[f"device_{d}"] = np.concatenate([blocks["specialization"][d * S : (d + 1) * S], off])
        return {a: out[a] for a in self.agents}

    def _own_rewards(self) -> dict[str, float]:
        """Each agent's terms of :mod:`hffm_env.envs.rewards` over its own scope: an edge
        server's cluster (its nodes' energy and a share of the cloud's), a device itself;
        a replaced choice counts against the agent that made it."""
        core, c = self.core, self.scenario.env
        fed, topo = core.fed, core.fed.topology
        rows = fed.ledger.records(fed.round_index)
        node = rows["src"]
        owner = np.where(
            node < topo.n_devices,
            topo.cluster[np.minimum(node, topo.n_devices - 1)],
            np.where(topo.tier[node] == 1, node - topo.tier_offsets[1], -1),
        )
        cloud_j = rows["joules"][owner < 0].sum() / topo.n_clusters
        invalid = self._invalid_by_agent()
        out = {}
        for a in self.agents:
            kind, i = a.split("_")
            i = int(i)
            if kind == "edge":
                members = [int(d) for d in topo.members(i)]
                energy = (rows["joules"][owner == i].sum() + cloud_j) / (core.energy_scale / topo.n_clusters)
            else:
                members = [i]
                energy = rows["joules"][node == i].sum() / (core.energy_scale / topo.n_devices)
            view = core.view(members, energy=float(energy), invalid=invalid.get(a, 0))
            out[a] = float(sum(reward_terms(view, c).values()))
        return out

    def _invalid_by_agent(self) -> dict[str, int]:
        """Replaced choices per agent: aggregation dimensions by cluster, specialisation
        dimensions by device, offloading slots by requester."""
        codec = self.core.codec
        out: dict[str, int] = {}
        for e in codec.invalid:
            if e["decision"] == "aggregation":
                agent = f"edge_{e['index'] // len(codec.groups)}"
            elif e["decision"] == "specialization":
                agent = f"device_{e['index'] // len(codec.special_kinds)}"
            else:
                agent = f"device_{self._requesters[e['index']]}"
            out[agent] = out.get(agent, 0) + 1
        return out


raw_env = HFFMParallelEnv


def parallel_env(preset: str = "tiny", render_mode: str | None = None, **overrides: Any) -> HFFMParallelEnv:
    """The parallel environment."""
    return HFFMParallelEnv(preset, render_mode, **overrides)


def env(preset: str = "tiny", render_mode: str | None = None, **overrides: Any):
    """The AEC environment (PettingZoo's conversion of the parallel one)."""
    return parallel_to_aec(parallel_env(preset, render_mode, **overrides))

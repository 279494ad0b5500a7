"""Gymnasium environments: one federated round of an HF-FM per step.

## Ids

| id | the agent decides | the rest (default fixed policy) |
| --- | --- | --- |
| ``hffm_env/Aggregation-v0`` | per cluster and module group: none, D2D consensus, edge, edge via head, cloud, cloud via head, star | cold starts relayed from a specialist if any (else cold), no specialists, requests local if the device can host the model else edge |
| ``hffm_env/Relaying-v0`` | per pending cold start: none, D2D peer, edge copy, cloud copy, best holder anywhere | aggregation by ``env.default_schedule`` (edge-only) |
| ``hffm_env/Specialization-v0`` | per device and encoder/head: specialist or not | as above |
| ``hffm_env/Offloading-v0`` | per pending inference request: local, D2D peer, edge, cloud | as above |
| ``hffm_env/HFFM-v0`` | all four (one ``MultiDiscrete``, blocks in that order) | — |

``Relaying-v0``, ``Specialization-v0`` and ``HFFM-v0`` switch events on (task arrival
0.1, modality on/off 0.05, join/leave 0.02 per device and round) and
``Offloading-v0`` and ``HFFM-v0`` inference requests (1 per device and round, half
on a task the requester does not hold) unless overridden.

## Observation

A ``Dict`` of float32 ``Box``es: ``devices [D, …]``, ``clusters [C, …]``,
``globals``, ``requests [env.max_requests, …]`` and ``cold_starts
[env.max_cold_starts, …]``. Every column is declared once, in order, in
:data:`hffm_env.envs.features.FEATURES`; the spaces and the table in
``docs/environments.md`` (``features.spec_markdown()``) are generated from it.

## Action

``MultiDiscrete`` blocks (see :mod:`hffm_env.envs.codec`); ``action_masks()`` gives
the valid options (sb3-contrib ``MaskablePPO``). An out-of-space action raises. A
masked choice is replaced by the default policy's and costs ``env.invalid_penalty``
of reward (``env.invalid_action="penalize"``, the default), or raises
``InvalidAction`` naming the decision, index and allowed options (``"raise"``).

## Reward, episode end

``w_acc·Δscore + w_inference·served score − w_latency·latency/ref −
w_energy·energy/ref`` (``EnvConfig``): the named terms of
:mod:`hffm_env.envs.rewards`, chosen by ``env.reward_terms``. The score is the mean over (device, task)
pairs of the probability the device's model gives the right answer
(``env.reward_metric="p_correct"``; ``"accuracy"`` for the share of right answers),
on an evaluation set fixed for the episode: every device's test share of each of
its tasks, dealt from the task's held-out part stratified by answer
(``data.eval_split="global"``, ``data.eval_shares="stratified"``).
``info`` carries ``mean_accuracy`` and ``mean_p_correct`` either way. Truncation after ``env.max_rounds`` rounds;
termination when the energy spent exceeds ``env.energy_budget_j``.

## Faults, checkpoints

``federation__faults__*`` (dropouts, stragglers and a round deadline, edge-server
outages) and ``network__faults__*`` (D2D link failures, packet loss) strike during
the round, after the action; ``info["faults"]`` lists each one. ``save_checkpoint`` /
``load_checkpoint`` store the learned state as safetensors.

## Version history

* v0: first release.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hffm_env.envs.core import EnvCore
from hffm_env.envs.features import TABLES
from hffm_env.envs.render import CoreRenderer
from hffm_env.federation.core import pair_mean
from hffm_env.scenario import make_scenario


class HFFMEnv(gym.Env):
    """An HF-FM over a fog network; each step runs one federated round with real fine-tuning.

    Parameters
    ----------
    decisions:
        Which of ``aggregation``, ``relaying``, ``specialization``, ``offloading`` the
        agent takes (each registered id passes its own, ``ENV_SPECS``).
    preset:
        Scenario preset: ``tiny``, ``small`` or ``paper``.
    render_mode:
        None, ``"rgb_array"`` or ``"human"``.
    scenario_defaults:
        ``__``-path overrides applied before ``overrides`` (each id's events or
        requests, ``ENV_SPECS``).
    **overrides:
        ``__``-path overrides of the scenario, e.g. ``env__max_rounds=10``,
        ``federation__local_steps=4``, ``network__d2d_radius_m=50``.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 2}

    def __init__(
        self,
        decisions=("aggregation",),
        preset: str = "tiny",
        render_mode: str | None = None,
        scenario_defaults: dict | None = None,
        **overrides: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.scenario = make_scenario(preset, **{**(scenario_defaults or {}), **overrides})
        self.core = EnvCore(self.scenario, tuple(decisions))
        self.action_space = spaces.MultiDiscrete(self.core.codec.nvec())
        self.observation_space = spaces.Dict(
            {
                key: spaces.Box(low=TABLES[key].low, high=np.inf, shape=shape, dtype=np.float32)
                for key, shape in self.core.obs_shapes.items()
            }
        )
        self._renderer = CoreRenderer()
        self._ended: str | None = None

    @property
    def federation(self):
        """The running :class:`~hffm_env.federation.core.Federation` (None before reset)."""
        return self.core.fed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset(int(self.np_random.integers(2**31 - 1)))
        self._ended = None
        return self.core.observe(), {
            "round": 0,
            "mean_accuracy": pair_mean(self.core.accuracy),
            "mean_p_correct": pair_mean(self.core.fed.p_correct),
        }

    def step(self, action):
        if self.core.fed is None:
            raise RuntimeError("step() called before reset()")
        if self._ended:
            raise RuntimeError(f"step() called after the episode {self._ended} (round {self.core.round}): call reset()")
        reward, terminated, truncated, info = self.core.step(action)
        self._ended = "terminated" if terminated else "was truncated" if truncated else None
        if self.render_mode == "human":
            self.render()
        return self.core.observe(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Flat boolean mask over every option of every action dimension."""
        if self.core.fed is None:
            raise RuntimeError("action_masks() called before reset()")
        return self.core.codec.action_masks()

    def save_checkpoint(self, path) -> None:
        """Save the running federation's learned state to the safetensors file ``path``
        (see :mod:`hffm_env.federation.checkpoint`)."""
        from hffm_env.federation.checkpoint import save_checkpoint

        if self.core.fed is None:
            raise RuntimeError("save_checkpoint() called before reset()")
        save_checkpoint(self.core.fed, path)

    def load_checkpoint(self, path) -> None:
        """Load a checkpoint of this scenario and seed (``reset`` with the seed it was
        saved under) into the running federation; the episode's round count, spent
        energy and random streams go on from this env's own. The next reward's
        Δscore starts from the checkpoint's model, scored on this episode's set."""
        from hffm_env.federation.checkpoint import load_checkpoint

        if self.core.fed is None:
            raise RuntimeError("load_checkpoint() called before reset()")
        load_checkpoint(self.core.fed, path)
        self.core.sync_metrics()

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        return self._renderer.render(self.core, self.render_mode)

    def close(self):
        self._renderer.close()

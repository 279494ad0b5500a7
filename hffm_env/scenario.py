"""Scenarios: one frozen config per layer, composed; named presets; keyword overrides.

``make_scenario("paper")`` returns the scenario of the paper's case study;
``make_scenario("tiny", network__d2d_radius_m=80.0, seed=3)`` overrides fields by
path, ``__`` separating the levels (an integer level indexes a tuple, e.g.
``network__tiers__0__count=12``). An unknown path raises a :class:`ConfigError`
listing the fields that exist there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from hffm_env._validation import MAX_BYTES, MAX_SEED, ConfigError, check_int, check_positive
from hffm_env.data.config import DataConfig
from hffm_env.envs.config import EnvConfig
from hffm_env.federation.config import FederationConfig
from hffm_env.model.config import ModelConfig
from hffm_env.network.config import ChannelConfig, ComputeConfig, LinkConfig, NetworkConfig, TierConfig


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a run, layer by layer.

    ``payload_bytes`` maps each transmitted module kind to its size in bytes for
    cost-only studies (``hffm costs``); the federated round derives sizes from the
    real bank (``hffm_env.model.payload_bytes``). The data and model configs must
    agree on image size, vocabulary, question and signal lengths.
    """

    name: str = "custom"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    payload_bytes: dict[str, float] = field(default_factory=lambda: {"adapters": 5.0e6, "heads": 1.0e6})
    federation: FederationConfig = field(default_factory=FederationConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.network, NetworkConfig):
            raise ConfigError(f"network must be a NetworkConfig, got {self.network!r}")
        if not isinstance(self.data, DataConfig):
            raise ConfigError(f"data must be a DataConfig, got {self.data!r}")
        if not isinstance(self.model, ModelConfig):
            raise ConfigError(f"model must be a ModelConfig, got {self.model!r}")
        if not isinstance(self.federation, FederationConfig):
            raise ConfigError(f"federation must be a FederationConfig, got {self.federation!r}")
        if not isinstance(self.env, EnvConfig):
            raise ConfigError(f"env must be an EnvConfig, got {self.env!r}")
        for field_name in ("image_size", "vocab_size", "sensor_length"):
            if getattr(self.data, field_name) != getattr(self.model, field_name):
                raise ConfigError(
                    f"data.{field_name}={getattr(self.data, field_name)} must equal "
                    f"model.{field_name}={getattr(self.model, field_name)}"
                )
        if self.data.max_question_tokens != self.model.max_text_tokens:
            raise ConfigError(
                f"data.max_question_tokens={self.data.max_question_tokens} must equal "
                f"model.max_text_tokens={self.model.max_text_tokens}"
            )
        k_e = self.federation.experts_per_device
        if k_e is not None and k_e > self.model.n_experts:
            raise ConfigError(
                f"federation.experts_per_device must be an integer in [1, {self.model.n_experts}] "
                f"(model.n_experts), got {k_e}"
            )
        faults = self.federation.faults
        if faults.outage_fallback == "cloud" and faults.edge_outage > 0 and self.network.direct_uplink is None:
            raise ConfigError(
                "federation.faults.outage_fallback='cloud' needs network.direct_uplink (a device-to-"
                "cloud link); choose 'd2d' or 'skip', or give the network a direct uplink"
            )
        if not isinstance(self.payload_bytes, dict) or not self.payload_bytes:
            raise ConfigError(f"payload_bytes must be a non-empty dict module -> bytes, got {self.payload_bytes!r}")
        for module, size in self.payload_bytes.items():
            if not isinstance(module, str) or not module:
                raise ConfigError(f"payload_bytes keys must be module names (non-empty strings), got {module!r}")
            check_positive(f"payload_bytes[{module!r}]", size, MAX_BYTES)
        check_int("seed", self.seed, low=0, high=MAX_SEED)

    def replace(self, **overrides: Any) -> "Scenario":
        """A copy with fields overridden by ``__``-separated paths."""
        return apply_overrides(self, overrides)


_LEAF = object()


def _apply_tree(obj: Any, tree: dict, prefix: str) -> Any:
    """Apply a tree of overrides to ``obj`` with one constructor call per object, so
    fields that constrain each other (a tier count and the area) change together."""
    if isinstance(obj, tuple):
        items = list(obj)
        for head, sub in tree.items():
            if not head.lstrip("-").isdigit() or not -len(obj) <= int(head) < len(obj):
                raise ConfigError(f"override {prefix + head!r}: {head!r} must be an index in [0, {len(obj) - 1}]")
            i = int(head)
            items[i] = sub[_LEAF] if _LEAF in sub else _apply_tree(items[i], sub, f"{prefix}{head}__")
        return tuple(items)
    if isinstance(obj, dict):
        out = dict(obj)
        for head, sub in tree.items():
            if _LEAF in sub:
                out[head] = sub[_LEAF]
            elif head in obj:
                out[head] = _apply_tree(obj[head], sub, f"{prefix}{head}__")
            else:
                raise ConfigError(f"override {prefix + head!r}: unknown key {head!r}; allowed: {sorted(obj)}")
        return out
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"override {prefix.rstrip('_')!r}: {type(obj).__name__} has no fields to override")
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for head, sub in tree.items():
        if head not in names:
            raise ConfigError(
                f"override {prefix + head!r}: {type(obj).__name__} has no field {head!r}; allowed: {names}"
            )
        changes[head] = sub[_LEAF] if _LEAF in sub else _apply_tree(getattr(obj, head), sub, f"{prefix}{head}__")
    return dataclasses.replace(obj, **changes)


def apply_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    tree: dict = {}
    for key, value in overrides.items():
        node = tree
        for part in key.split("__"):
            if _LEAF in node:
                raise ConfigError(f"override {key!r} conflicts with an override of its parent field")
            node = node.setdefault(part, {})
        if node:
            raise ConfigError(f"override {key!r} conflicts with an override of one of its fields")
        node[_LEAF] = value
    return _apply_tree(scenario, tree, "")


# ---------------------------------------------------------------------- presets
def _paper_network(devices: int = 40, edges: int = 10) -> NetworkConfig:
    """The reference implementation's cost constants and accounting (docs/network.md),
    with ``devices`` devices and ``edges`` edge servers.

    Compatibility choices, all local to this preset, each reproducing what the
    reference cost script does:

    * ``noise_bandwidth_scale=1e-3``: it multiplies the noise density (per Hz) by a
      bandwidth written in kHz, so its noise power is 1000x below N0·B;
    * ``rayleigh_mean_power=2``: its fading is |x + jy|² with x, y ~ N(0, 1);
    * ``fading_per_round=False`` and ``d2d_patch_weight="rate"``: it draws each
      link's fading once, keeps it for all rounds, and patches the D2D graph with the
      minimum spanning tree of transfer times (the better direction of each pair);
    * ``rate_power_w`` on the uplink (1.0 W) and D2D (0.2 W) next to
      ``tx_power_w=0.6``: it computes uplink rates at 1000 mW and D2D rates at
      200 mW while charging energy at 600 mW for both. Each override means what it
      says: ``tx_power_w`` moves the energy only, ``rate_power_w`` the rate only;
    * ``charge_downlink=False`` and ``cycles_per_sample=0``: it charges uploads and
      the D2D consensus only, and no local compute;
    * the paper's Table I prints mW·s/1000 and labels it "kJ": numerically J.
    """
    backhaul = LinkConfig("wired", tx_power_w=0.8, rate_bps=4.0e6, fixed_latency_s=0.1)
    return NetworkConfig(
        tiers=(
            TierConfig(
                "device",
                devices,
                uplink=LinkConfig("wireless", bandwidth_hz=1e6, tx_power_w=0.6, rate_power_w=1.0, antenna_gain_db=0.0),
            ),
            TierConfig("edge", edges, uplink=backhaul, min_separation_m=500.0),
            TierConfig("cloud", 1),
        ),
        area_side_m=5000.0,
        cluster_center_offset_m=1000.0,
        cluster_radius_m=500.0,
        d2d_radius_m=30.0,
        d2d_patch_weight="rate",
        d2d=LinkConfig("wireless", bandwidth_hz=8e6, tx_power_w=0.6, rate_power_w=0.2, antenna_gain_db=0.0),
        direct_uplink=backhaul,
        channel=ChannelConfig(
            reference_gain_db=-30.0,
            reference_distance_m=1.0,
            pathloss_exponent=3.0,
            shadowing_std_db=0.0,
            fading="rayleigh",
            rayleigh_mean_power=2.0,
            fading_per_round=False,
            noise_psd_dbm_per_hz=-174.0,
            noise_bandwidth_scale=1e-3,
        ),
        compute=ComputeConfig(cycles_per_sample=0.0),
        cluster_head="random",
        charge_downlink=False,
    )


def paper() -> Scenario:
    """The paper's case study: 40 devices, 10 edge servers, 1 cloud; 6 MB of adapters + heads.

    In the federated round, ``payload_scale=16`` makes a device's modules (about
    0.36 MB in the shipped model) weigh about 6 MB on the wire, as the reference's
    ViLT-B/32 adapters and heads do. Local training is the reference's budget: one
    epoch of the device's shard per round in batches of 8. Where it differs from the
    reference, and why: each task's pool holds 1,000 samples (the reference trains on
    the whole of ArtVQA and GQA), so that an epoch of all 40 devices costs about two
    seconds on two cores; the shipped backbone is small (hidden 128, 4 layers), and
    trains at learning rate 3e-3 where ViLT-B/32 takes 1e-4. Every device is scored
    on all of its test share (100 held-out samples per task, stratified by answer).
    """
    # 6 MB = 48,000 kbit in the reference; its split between adapters and heads is ours.
    return Scenario(
        name="paper",
        network=_paper_network(),
        payload_bytes={"adapters": 5.4e6, "heads": 0.6e6},
        data=DataConfig(tasks=("scene_qa", "style_qa"), pool_size=1000, tasks_per_device=(1, 1), dirichlet_alpha=0.1),
        model=ModelConfig(learning_rate=3e-3),
        federation=FederationConfig(payload_scale=16.0, local_epochs=1.0, batch_size=8),
    )


def _two_tier(devices: int, edges: int, side_m: float, center_offset_m: float, radius_m: float) -> NetworkConfig:
    """Devices → edge servers → cloud with the FL-over-wireless default channel."""
    return NetworkConfig(
        tiers=(
            TierConfig("device", devices, uplink=LinkConfig("wireless", bandwidth_hz=5e6, tx_power_w=0.2)),
            TierConfig(
                "edge",
                edges,
                uplink=LinkConfig("wired", tx_power_w=1.0, rate_bps=100e6, fixed_latency_s=0.01),
                min_separation_m=500.0,
            ),
            TierConfig("cloud", 1),
        ),
        area_side_m=side_m,
        cluster_center_offset_m=center_offset_m,
        cluster_radius_m=radius_m,
        d2d_radius_m=60.0,
        d2d=LinkConfig("wireless", bandwidth_hz=10e6, tx_power_w=0.1),
    )


def small() -> Scenario:
    """20 devices in 5 clusters on the paper's network (links, channel and accounting
    of :func:`_paper_network`), four tasks; modules charged at their real size. Four
    local steps of 8 samples per round at learning rate 3e-3; every device is scored
    on all of its test share (200 held-out samples per task, stratified by answer)."""
    return Scenario(
        name="small",
        network=_paper_network(devices=20, edges=5),
        payload_bytes={"adapters": 1.0e6, "heads": 0.1e6},
        data=DataConfig(tasks=("scene_qa", "style_qa", "sensor", "digits_qa"), pool_size=2000, tasks_per_device=(1, 2)),
        model=ModelConfig(learning_rate=3e-3),
        federation=FederationConfig(local_steps=4, batch_size=8),
    )


def tiny() -> Scenario:
    """8 devices in 2 clusters: fast, for tests and demos (the first two of the shipped
    backbone's four layers; one local step of 4 samples per round at learning rate
    5e-3; every device is scored on all of its test share, 160 held-out samples per task
    stratified by answer, so the reward's accuracy term sits above its measurement
    noise)."""
    return Scenario(
        name="tiny",
        network=_two_tier(8, 2, 1500.0, 200.0, 100.0),
        payload_bytes={"adapters": 0.2e6, "heads": 0.02e6},
        data=DataConfig(tasks=("scene_qa", "sensor"), pool_size=1600, tasks_per_device=(1, 2), dirichlet_alpha=0.5),
        model=ModelConfig(num_layers=2, learning_rate=5e-3),
        federation=FederationConfig(local_steps=1, batch_size=4),
    )


PRESETS: dict[str, Callable[[], Scenario]] = {"tiny": tiny, "small": small, "paper": paper}


def make_scenario(preset: str = "tiny", **overrides: Any) -> Scenario:
    """The named preset with ``__``-path overrides applied (see module docstring)."""
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(map(repr, PRESETS))}, got {preset!r}")
    return apply_overrides(PRESETS[preset](), overrides)

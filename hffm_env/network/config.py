"""Configuration of the fog network: tiers, placement, links, channel, compute, mobility.

All quantities are SI (m, s, W, J, Hz, bit/s). Every dataclass is frozen and checks
its fields in ``__post_init__``; a bad value raises :class:`hffm_env.ConfigError`
naming the field and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hffm_env._validation import (
    MAX_BANDWIDTH_HZ,
    MAX_BYTES,
    MAX_CLOCK_HZ,
    MAX_COUNT,
    MAX_CYCLES,
    MAX_DISTANCE_M,
    MAX_DURATION_S,
    MAX_FACTOR,
    MAX_POWER_W,
    MAX_RATE_BPS,
    ConfigError,
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
    check_range_pair,
    check_real,
)

LINK_KINDS = ("wireless", "wired")
CLUSTER_HEAD_RULES = ("random", "central", "max_degree")
MOBILITY_MODELS = ("static", "random_direction")
MAX_SPEED_MPS = 1e4  # faster than a satellite in low orbit (7.8e3 m/s)
MAX_KAPPA = 1e-20  # effective switched capacitance: eight orders above the usual 1e-28


@dataclass(frozen=True)
class LinkConfig:
    """One class of link.

    ``kind="wireless"``: the rate is Shannon's ``B·log2(1 + P·g·|h|²/(N0·B))`` from the
    channel model, with ``bandwidth_hz`` and ``P = rate_power_w`` (``tx_power_w`` when
    None). ``kind="wired"``: a fixed ``rate_bps`` (backhaul).
    Energy is ``tx_power_w·time`` for both kinds: ``tx_power_w`` is the power drawn
    while sending. ``rate_power_w`` is for models that compute the rate at another
    power than they charge energy at, as the reference cost script does (the
    ``paper`` preset); it must be None on a wired link.
    ``fixed_latency_s`` is added to every transfer over the link (propagation, protocol).
    ``antenna_gain_db`` is the link budget's combined transmit and receive antenna
    gain, added to the channel's path gain of every link of this class.
    """

    kind: str = "wireless"
    bandwidth_hz: float = 1e6
    tx_power_w: float = 0.2
    rate_bps: float | None = None
    fixed_latency_s: float = 0.0
    antenna_gain_db: float = 0.0
    rate_power_w: float | None = None

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, LINK_KINDS)
        check_non_negative("fixed_latency_s", self.fixed_latency_s, MAX_DURATION_S)
        check_real("antenna_gain_db", self.antenna_gain_db, low=-100.0, high=100.0)
        # checked for wired links too, though unused there: a typo must not pass silently
        check_positive("bandwidth_hz", self.bandwidth_hz, MAX_BANDWIDTH_HZ)
        if self.kind == "wireless":
            check_positive("tx_power_w", self.tx_power_w, MAX_POWER_W)
            if self.rate_bps is not None:
                raise ConfigError(
                    "rate_bps must be None for a wireless link (its rate comes from the channel), "
                    f"got {self.rate_bps!r}"
                )
            if self.rate_power_w is not None:
                check_positive("rate_power_w", self.rate_power_w, MAX_POWER_W)
        else:
            if self.rate_power_w is not None:
                raise ConfigError(
                    f"rate_power_w must be None for a wired link (its rate is rate_bps), got {self.rate_power_w!r}"
                )
            check_non_negative("tx_power_w", self.tx_power_w, MAX_POWER_W)
            if self.rate_bps is None:
                raise ConfigError("rate_bps must be a positive number for a wired link, got None")
            check_positive("rate_bps", self.rate_bps, MAX_RATE_BPS)


@dataclass(frozen=True)
class ChannelConfig:
    """Large-scale path loss, small-scale fading and thermal noise.

    Path gain in dB is ``reference_gain_db − 10·pathloss_exponent·log10(d / reference_distance_m)``
    plus zero-mean Gaussian shadowing of ``shadowing_std_db``. This one law covers
    both the reference implementation (−30 dB at 1 m, exponent 3) and the
    128.1 + 37.6·log10(d/km) dB law of the FL-over-wireless literature (−128.1 dB at
    1000 m, exponent 3.76), which is the default.

    Distances below ``min_distance_m`` (coincident or nearly coincident nodes) are
    evaluated at ``min_distance_m``: the far-field law has no meaning closer than that.

    ``fading="rayleigh"`` multiplies the gain by |h|², exponential with mean
    ``rayleigh_mean_power`` (1 for a normalised channel), redrawn every round; with
    ``fading_per_round=False`` each link keeps the draw made with the placement (the
    reference's static channel).

    ``noise_bandwidth_scale`` multiplies the noise power ``N0·B``. It is 1 everywhere
    except in the ``paper`` preset, where it is 1e-3 to reproduce the reference code,
    which multiplies a per-Hz noise density by a bandwidth written in kHz.
    """

    reference_gain_db: float = -128.1
    reference_distance_m: float = 1000.0
    pathloss_exponent: float = 3.76
    shadowing_std_db: float = 8.0
    fading: str = "rayleigh"
    rayleigh_mean_power: float = 1.0
    fading_per_round: bool = True
    noise_psd_dbm_per_hz: float = -174.0
    noise_bandwidth_scale: float = 1.0
    min_distance_m: float = 1.0

    def __post_init__(self) -> None:
        check_real("reference_gain_db", self.reference_gain_db, low=-300.0, high=0.0)
        check_positive("reference_distance_m", self.reference_distance_m, MAX_DISTANCE_M)
        check_real("pathloss_exponent", self.pathloss_exponent, low=1.0, high=10.0)
        check_non_negative("shadowing_std_db", self.shadowing_std_db, 100.0)
        check_choice("fading", self.fading, ("rayleigh", "none"))
        check_positive("rayleigh_mean_power", self.rayleigh_mean_power, MAX_FACTOR)
        if not isinstance(self.fading_per_round, bool):
            raise ConfigError(f"fading_per_round must be True or False, got {self.fading_per_round!r}")
        check_real("noise_psd_dbm_per_hz", self.noise_psd_dbm_per_hz, low=-250.0, high=0.0)
        check_positive("noise_bandwidth_scale", self.noise_bandwidth_scale, MAX_FACTOR)
        check_positive("min_distance_m", self.min_distance_m, MAX_DISTANCE_M)


@dataclass(frozen=True)
class ComputeConfig:
    """Local-training compute of devices.

    One local pass over ``n`` samples takes ``cycles_per_sample·n / f`` seconds and
    ``kappa·cycles_per_sample·n·f²`` joules, with ``f`` the device's CPU frequency drawn
    uniformly in ``cpu_freq_hz_range`` at placement (the κ·c·D·f² model of the
    FL-over-wireless literature). ``cycles_per_sample = 0`` charges no compute, as
    the reference cost script does.
    """

    cycles_per_sample: float = 1e7
    cpu_freq_hz_range: tuple[float, float] = (0.7e9, 1.0e9)
    kappa: float = 1e-28

    def __post_init__(self) -> None:
        check_non_negative("cycles_per_sample", self.cycles_per_sample, MAX_CYCLES)
        object.__setattr__(
            self, "cpu_freq_hz_range", check_range_pair("cpu_freq_hz_range", self.cpu_freq_hz_range, high=MAX_CLOCK_HZ)
        )
        check_non_negative("kappa", self.kappa, MAX_KAPPA)


@dataclass(frozen=True)
class MobilityConfig:
    """Device motion between rounds.

    ``"random_direction"``: each round every device moves ``speed·round_duration_s``
    metres in a uniformly random direction, with speed uniform in ``speed_mps_range``,
    reflected at the area's borders. A device farther than the cluster radius from its
    cluster's centre hands over to the nearest cluster; D2D graphs are rebuilt.
    """

    model: str = "static"
    speed_mps_range: tuple[float, float] = (0.5, 2.0)
    round_duration_s: float = 10.0

    def __post_init__(self) -> None:
        check_choice("model", self.model, MOBILITY_MODELS)
        object.__setattr__(
            self,
            "speed_mps_range",
            check_range_pair("speed_mps_range", self.speed_mps_range, low_inclusive=True, high=MAX_SPEED_MPS),
        )
        check_positive("round_duration_s", self.round_duration_s, MAX_DURATION_S)


@dataclass(frozen=True)
class LinkFaultConfig:
    """Link faults, drawn per round from the network's generator (only when nonzero).

    ``d2d_failure``: each D2D link is down for the round with this probability (both
    directions; routes avoid it, and devices it cuts off from their head cannot take
    part in D2D operations). ``packet_loss``: every wireless transfer is sent as
    packets of ``packet_bytes``, each lost independently with this probability and
    retransmitted until it arrives (ARQ); the retransmissions cost airtime, energy
    and bytes on the ledger.
    """

    d2d_failure: float = 0.0
    packet_loss: float = 0.0
    packet_bytes: float = 1500.0

    def __post_init__(self) -> None:
        check_real("faults.d2d_failure", self.d2d_failure, low=0.0, high=1.0)
        check_real("faults.packet_loss", self.packet_loss, low=0.0, high=1.0, high_inclusive=False)
        check_positive("faults.packet_bytes", self.packet_bytes, MAX_BYTES)


@dataclass(frozen=True)
class TierConfig:
    """One tier of the hierarchy: its name, how many nodes, and its links to the tier above.

    Tier 0 is always the devices. Tier 1 nodes are the cluster anchors (edge servers,
    or access points in a deeper hierarchy): each device belongs to one of them. A
    node of tier k ≥ 2 is the parent of the tier k−1 nodes nearest to it. ``uplink``
    (this tier → its parent) is None only for the top tier; ``downlink`` (parent →
    this tier) defaults to the uplink's class when None. ``cpu_freq_hz`` and
    ``compute_power_w`` are a server's (tiers ≥ 1) compute speed and power draw, used
    for inference served there; devices take theirs from :class:`ComputeConfig`.
    """

    name: str
    count: int
    uplink: LinkConfig | None = None
    min_separation_m: float = 0.0
    downlink: LinkConfig | None = None
    cpu_freq_hz: float = 2.0e10
    compute_power_w: float = 50.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"TierConfig.name must be a non-empty string, got {self.name!r}")
        check_int(f"tiers[{self.name}].count", self.count, low=1, high=MAX_COUNT)
        check_non_negative(f"tiers[{self.name}].min_separation_m", self.min_separation_m, MAX_DISTANCE_M)
        check_positive(f"tiers[{self.name}].cpu_freq_hz", self.cpu_freq_hz, MAX_CLOCK_HZ)
        check_non_negative(f"tiers[{self.name}].compute_power_w", self.compute_power_w, MAX_POWER_W)
        for name in ("uplink", "downlink"):
            link = getattr(self, name)
            if link is not None and not isinstance(link, LinkConfig):
                raise ConfigError(f"tiers[{self.name}].{name} must be a LinkConfig or None, got {link!r}")
        if self.downlink is not None and self.uplink is None:
            raise ConfigError(f"tiers[{self.name}].downlink must be None for the top tier, got {self.downlink!r}")

    @property
    def downlink_link(self) -> LinkConfig | None:
        """The parent → this-tier link class (the uplink's class unless set)."""
        return self.downlink if self.downlink is not None else self.uplink


def _default_tiers() -> tuple[TierConfig, ...]:
    return (
        TierConfig("device", 40, uplink=LinkConfig("wireless", bandwidth_hz=1e6, tx_power_w=0.2)),
        TierConfig(
            "edge",
            10,
            uplink=LinkConfig("wired", tx_power_w=1.0, rate_bps=100e6, fixed_latency_s=0.01),
            min_separation_m=500.0,
        ),
        TierConfig("cloud", 1),
    )


@dataclass(frozen=True)
class NetworkConfig:
    """The whole fog network.

    Placement follows the reference: tier-1 nodes uniformly in a square of
    ``area_side_m`` at least ``min_separation_m`` apart; each cluster has a centre at
    most ``cluster_center_offset_m`` from its tier-1 node and its devices lie uniformly
    in a disc of ``cluster_radius_m`` around that centre; centres and devices are
    redrawn until they lie inside the square. Devices are split over the
    clusters as evenly as possible.

    The D2D graph of a cluster links devices closer than ``d2d_radius_m`` (a random
    geometric graph) and, when that leaves it disconnected, adds the edges of the
    minimum spanning tree of the cluster's pairs, weighted by ``d2d_patch_weight``:
    ``"distance"``, or ``"rate"`` (the transfer time at the channel drawn with the
    graph, as the reference does). ``direct_uplink`` is the
    device-to-top-tier link used by star (cloud-only) federated learning; None means
    star traffic goes up the hierarchy. ``charge_downlink`` says whether sending an
    aggregate back down from a higher tier (server downlinks, and the D2D relay of a
    higher tier's aggregate) is charged; D2D consensus inside a cluster always is.
    ``faults`` draws link failures and packet loss (:class:`LinkFaultConfig`; none by default).
    """

    tiers: tuple[TierConfig, ...] = field(default_factory=_default_tiers)
    area_side_m: float = 5000.0
    cluster_center_offset_m: float = 1000.0
    cluster_radius_m: float = 500.0
    d2d_radius_m: float = 30.0
    d2d_patch_weight: str = "distance"
    d2d: LinkConfig = field(default_factory=lambda: LinkConfig("wireless", bandwidth_hz=8e6, tx_power_w=0.1))
    direct_uplink: LinkConfig | None = None
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    mobility: MobilityConfig = field(default_factory=MobilityConfig)
    cluster_head: str = "random"
    charge_downlink: bool = True
    faults: LinkFaultConfig = field(default_factory=LinkFaultConfig)

    def __post_init__(self) -> None:
        tiers = tuple(self.tiers) if isinstance(self.tiers, (list, tuple)) else None
        if tiers is None or len(tiers) < 2 or not all(isinstance(t, TierConfig) for t in tiers):
            raise ConfigError(f"tiers must be a sequence of at least 2 TierConfig (devices first), got {self.tiers!r}")
        object.__setattr__(self, "tiers", tiers)
        for lower, upper in zip(tiers[:-1], tiers[1:]):
            if upper.count > lower.count:
                raise ConfigError(
                    f"tiers[{upper.name}].count must be in [1, {lower.count}] (no more nodes than in tier "
                    f"{lower.name!r} below it), got {upper.count}"
                )
            if lower.uplink is None:
                raise ConfigError(f"tiers[{lower.name}].uplink must be a LinkConfig (it has a tier above), got None")
        if tiers[-1].uplink is not None:
            raise ConfigError(f"tiers[{tiers[-1].name}].uplink must be None (top tier), got {tiers[-1].uplink!r}")
        if len({t.name for t in tiers}) != len(tiers):
            raise ConfigError(f"tiers names must be unique, got {[t.name for t in tiers]!r}")
        check_positive("area_side_m", self.area_side_m, MAX_DISTANCE_M)
        check_non_negative("cluster_center_offset_m", self.cluster_center_offset_m, MAX_DISTANCE_M)
        check_positive("cluster_radius_m", self.cluster_radius_m, MAX_DISTANCE_M)
        check_non_negative("d2d_radius_m", self.d2d_radius_m, MAX_DISTANCE_M)
        for name in ("d2d", "channel", "compute", "mobility", "faults"):
            expected = {
                "d2d": LinkConfig,
                "channel": ChannelConfig,
                "compute": ComputeConfig,
                "mobility": MobilityConfig,
                "faults": LinkFaultConfig,
            }[name]
            if not isinstance(getattr(self, name), expected):
                raise ConfigError(f"{name} must be a {expected.__name__}, got {getattr(self, name)!r}")
        if self.d2d.kind != "wireless":
            raise ConfigError(f"d2d.kind must be 'wireless', got {self.d2d.kind!r}")
        if self.direct_uplink is not None and not isinstance(self.direct_uplink, LinkConfig):
            raise ConfigError(f"direct_uplink must be a LinkConfig or None, got {self.direct_uplink!r}")
        check_choice("cluster_head", self.cluster_head, CLUSTER_HEAD_RULES)
        check_choice("d2d_patch_weight", self.d2d_patch_weight, ("distance", "rate"))
        if not isinstance(self.charge_downlink, bool):
            raise ConfigError(f"charge_downlink must be True or False, got {self.charge_downlink!r}")
        # Rejection sampling must be able to place the tier-1 nodes at their separation.
        for t in tiers[1:]:
            if t.count > 1 and t.min_separation_m > 0:
                per_side = self.area_side_m / t.min_separation_m + 1
                packable = per_side * per_side  # float product: inf, not OverflowError, for huge areas
                if t.count > packable:
                    raise ConfigError(
                        f"tiers[{t.name}].min_separation_m={t.min_separation_m:g} is too large to place "
                        f"{t.count} nodes in a square of area_side_m={self.area_side_m:g} (at most ~{int(packable)} "
                        "fit): lower it or raise area_side_m"
                    )

    @property
    def n_devices(self) -> int:
        return self.tiers[0].count

    @property
    def n_clusters(self) -> int:
        return self.tiers[1].count

    @property
    def n_tiers(self) -> int:
        return len(self.tiers)

"""Bad network configs fail at construction with a message naming the field and the range."""

import pytest

from hffm_env import ConfigError, make_scenario
from hffm_env.network import ChannelConfig, ComputeConfig, LinkConfig, MobilityConfig, NetworkConfig, TierConfig


def _tiers(devices=8, edges=2):
    return (
        TierConfig("device", devices, uplink=LinkConfig()),
        TierConfig("edge", edges, uplink=LinkConfig("wired", rate_bps=1e8)),
        TierConfig("cloud", 1),
    )


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: LinkConfig(tx_power_w=-0.1), "tx_power_w"),
        (lambda: LinkConfig(bandwidth_hz=0.0), "bandwidth_hz"),
        (lambda: LinkConfig(bandwidth_hz=float("nan")), "bandwidth_hz"),
        (lambda: LinkConfig(kind="fibre"), "kind"),
        (lambda: LinkConfig("wired", rate_bps=None), "rate_bps"),
        (lambda: LinkConfig("wired", rate_bps=-5.0), "rate_bps"),
        (lambda: LinkConfig(fixed_latency_s=-1.0), "fixed_latency_s"),
        (lambda: ChannelConfig(pathloss_exponent=0.5), "pathloss_exponent"),
        (lambda: ChannelConfig(fading="rician"), "fading"),
        (lambda: ChannelConfig(shadowing_std_db=-1.0), "shadowing_std_db"),
        (lambda: ComputeConfig(cpu_freq_hz_range=(2e9, 1e9)), "cpu_freq_hz_range"),
        (lambda: ComputeConfig(kappa=-1e-28), "kappa"),
        (lambda: MobilityConfig(model="teleport"), "model"),
        (lambda: TierConfig("device", 0), "count"),
        (lambda: TierConfig("device", 3.5), "count"),
        (lambda: NetworkConfig(tiers=_tiers(devices=4, edges=5)), "tiers[edge].count"),
        (lambda: NetworkConfig(tiers=_tiers(), d2d_radius_m="far"), "d2d_radius_m"),
        (lambda: NetworkConfig(tiers=_tiers(), d2d_radius_m=True), "d2d_radius_m"),
        (lambda: NetworkConfig(tiers=_tiers(), area_side_m=0), "area_side_m"),
        (lambda: NetworkConfig(tiers=_tiers(), cluster_head="oldest"), "cluster_head"),
        (lambda: NetworkConfig(tiers=_tiers()[:1]), "tiers"),
        (lambda: NetworkConfig(tiers=(TierConfig("device", 8), TierConfig("edge", 2))), "tiers[device].uplink"),
        (
            lambda: NetworkConfig(
                tiers=(TierConfig("device", 8, uplink=LinkConfig()), TierConfig("edge", 2, uplink=LinkConfig()))
            ),
            "tiers[edge].uplink",
        ),
        (
            lambda: NetworkConfig(
                tiers=(
                    TierConfig("device", 80, uplink=LinkConfig()),
                    TierConfig("edge", 50, uplink=LinkConfig(), min_separation_m=4000.0),
                    TierConfig("cloud", 1),
                ),
                area_side_m=5000.0,
            ),
            "min_separation_m",
        ),
        (lambda: NetworkConfig(tiers=_tiers(), d2d=LinkConfig("wired", rate_bps=1e6)), "d2d.kind"),
    ],
)
def test_bad_field_is_named(make, field):
    with pytest.raises(ConfigError) as err:
        make()
    assert field in str(err.value)


def test_error_states_allowed_range():
    with pytest.raises(ConfigError, match=r"tx_power_w must be in \(0, 1e\+06\], got -0.1"):
        LinkConfig(tx_power_w=-0.1)
    with pytest.raises(ConfigError, match=r"must be in \[1, 4\]"):
        NetworkConfig(tiers=_tiers(devices=4, edges=5))


def test_overrides_validate_and_name_unknown_fields():
    sc = make_scenario("tiny", network__d2d_radius_m=80.0, network__tiers__0__count=12)
    assert sc.network.d2d_radius_m == 80.0 and sc.network.n_devices == 12
    with pytest.raises(ConfigError, match="no field 'd2d_radius'"):
        make_scenario("tiny", network__d2d_radius=80.0)
    with pytest.raises(ConfigError, match="d2d_radius_m"):
        make_scenario("tiny", network__d2d_radius_m=-1.0)
    with pytest.raises(ConfigError, match="preset must be one of"):
        make_scenario("huge")
    with pytest.raises(ConfigError, match=r"payload_bytes\['heads'\]"):
        make_scenario("tiny", payload_bytes__heads=0.0)


def test_scenario_layers_must_agree():
    with pytest.raises(ConfigError, match="data.image_size=64 must equal model.image_size=32"):
        make_scenario("tiny", data__image_size=64)
    sc = make_scenario("small", model__adapter_bottleneck=8)
    assert sc.model.adapter_bottleneck == 8 and sc.model.backbone == "default"

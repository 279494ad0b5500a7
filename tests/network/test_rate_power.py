"""A wireless link's rate power and energy power are two fields: overriding one moves only what it names."""

import math

import numpy as np
import pytest

from hffm_env import ConfigError, make_scenario
from hffm_env.network import FogNetwork, LinkConfig
from hffm_env.network.channel import link_rate_bps, noise_power_w, shannon_rate_bps
from hffm_env.network.config import ChannelConfig
from hffm_env.network.schedules import charge_schedule, table1_schedules

CH = ChannelConfig(reference_gain_db=-30.0, reference_distance_m=1.0, pathloss_exponent=3.0, shadowing_std_db=0.0)
GAIN = np.array([1e-9, 1e-10, 1e-11])


def _edge_only(**overrides):
    """Uplink rates and the (latency s, energy J) of one edge-only round on seed 0 of the paper preset."""
    sc = make_scenario("paper", **overrides)
    net = FogNetwork(sc.network, np.random.default_rng(0))
    latency_s, energy_j = charge_schedule(net, table1_schedules()["edge_only"], 1, sc.payload_bytes).mean()
    devices = net.topology.tier_slice(0)
    return net.uplink_rate_bps[devices].copy(), latency_s, energy_j


def test_paper_preset_states_both_powers():
    net = make_scenario("paper").network
    up, d2d = net.tiers[0].uplink, net.d2d
    assert (up.tx_power_w, up.rate_power_w, up.antenna_gain_db) == (0.6, 1.0, 0.0)
    assert (d2d.tx_power_w, d2d.rate_power_w, d2d.antenna_gain_db) == (0.6, 0.2, 0.0)


def test_tx_power_override_moves_energy_not_rate():
    rate, latency_s, energy_j = _edge_only()
    rate_low, latency_low, energy_low = _edge_only(network__tiers__0__uplink__tx_power_w=0.3)
    np.testing.assert_array_equal(rate_low, rate)
    assert latency_low == latency_s
    assert energy_low == pytest.approx(energy_j / 2)  # edge-only charges the device uploads only


def test_rate_power_override_moves_rate_not_energy_power():
    rate, latency_s, energy_j = _edge_only()
    rate_low, latency_low, energy_low = _edge_only(network__tiers__0__uplink__rate_power_w=0.3)
    assert np.all(rate_low < rate)
    assert latency_low > latency_s and energy_low > energy_j
    # both charged at 0.6 W over each device's airtime of 6 MB
    bits = 8 * sum(make_scenario("paper").payload_bytes.values())
    assert energy_j == pytest.approx(0.6 * np.sum(bits / rate))
    assert energy_low == pytest.approx(0.6 * np.sum(bits / rate_low))


def test_rate_power_gives_the_rate_of_that_power():
    link = LinkConfig(bandwidth_hz=1e6, tx_power_w=0.6, rate_power_w=1.0)
    expected = shannon_rate_bps(1e6, 1.0, GAIN, noise_power_w(1e6, CH))
    np.testing.assert_allclose(link_rate_bps(link, CH, GAIN), expected, rtol=1e-12)
    # the same rate as a 0.6 W link with the 1.0/0.6 power ratio as antenna gain
    offset = LinkConfig(bandwidth_hz=1e6, tx_power_w=0.6, antenna_gain_db=10 * math.log10(1.0 / 0.6))
    np.testing.assert_allclose(link_rate_bps(link, CH, GAIN), link_rate_bps(offset, CH, GAIN), rtol=1e-12)


def test_default_rate_power_is_tx_power():
    link = LinkConfig(bandwidth_hz=1e6, tx_power_w=0.5)
    assert link.rate_power_w is None
    np.testing.assert_array_equal(
        link_rate_bps(link, CH, GAIN),
        link_rate_bps(LinkConfig(bandwidth_hz=1e6, tx_power_w=0.5, rate_power_w=0.5), CH, GAIN),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinkConfig("wired", tx_power_w=0.8, rate_bps=4e6, rate_power_w=1.0),
        lambda: make_scenario("paper", network__tiers__1__uplink__rate_power_w=1.0),
        lambda: LinkConfig(rate_power_w=0.0),
        lambda: LinkConfig(rate_power_w=-1.0),
        lambda: LinkConfig(rate_power_w=float("nan")),
        lambda: LinkConfig(rate_power_w="1.0"),
    ],
)
def test_bad_rate_power_is_named(make):
    with pytest.raises(ConfigError, match="rate_power_w"):
        make()

"""Channel gains and Shannon rates."""

import numpy as np

from hffm_env.network import ChannelConfig, LinkConfig
from hffm_env.network.channel import link_rate_bps, noise_power_w, path_gain, transfer_cost

CH = ChannelConfig(shadowing_std_db=0.0, fading="none")


def test_rate_decreases_with_distance_and_grows_with_power():
    d = np.array([1.0, 10.0, 100.0, 1000.0, 5000.0])
    low = link_rate_bps(LinkConfig(tx_power_w=0.1), CH, path_gain(d, CH))
    high = link_rate_bps(LinkConfig(tx_power_w=1.0), CH, path_gain(d, CH))
    assert np.all(np.diff(low) < 0)
    assert np.all(high > low)


def test_rate_grows_with_bandwidth():
    g = path_gain(np.array([200.0]), CH)
    assert link_rate_bps(LinkConfig(bandwidth_hz=10e6), CH, g) > link_rate_bps(LinkConfig(bandwidth_hz=1e6), CH, g)


def test_zero_distance_is_finite_and_equals_min_distance():
    g0 = path_gain(np.array([0.0]), CH)
    g1 = path_gain(np.array([CH.min_distance_m]), CH)
    assert np.isfinite(g0).all() and g0 == g1


def test_reference_law_values():
    paper = ChannelConfig(
        reference_gain_db=-30.0, reference_distance_m=1.0, pathloss_exponent=3.0, shadowing_std_db=0.0
    )
    assert np.isclose(10 * np.log10(path_gain(np.array([10.0]), paper)[0]), -60.0)
    default = ChannelConfig()
    assert np.isclose(10 * np.log10(path_gain(np.array([1000.0]), default)[0]), -128.1)
    assert np.isclose(noise_power_w(1e6, default), 10 ** (-17.4) * 1e6 / 1e3)


def test_transfer_time_and_energy():
    link = LinkConfig("wired", tx_power_w=0.8, rate_bps=4e6, fixed_latency_s=0.1)
    s, j = transfer_cost(link, 48e6, np.array([4e6]))
    assert np.isclose(s[0], 12.1) and np.isclose(j[0], 0.8 * 12.1)
    s, j = transfer_cost(link, 0.0, np.array([4e6]))
    assert s[0] == 0.0 and j[0] == 0.0

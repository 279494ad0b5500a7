"""Wireless channel: path gain, fading, noise and Shannon rate, vectorised over links.

Every function takes and returns numpy arrays so that the rates of all links of a
round (thousands of them) come out of a handful of array operations.
"""

from __future__ import annotations

import numpy as np

from hffm_env.network.config import ChannelConfig, LinkConfig


def path_gain(distance_m: np.ndarray, channel: ChannelConfig, shadowing_db: np.ndarray | float = 0.0) -> np.ndarray:
    """Linear large-scale power gain at ``distance_m`` (shadowing in dB added before conversion).

    Distances below ``channel.min_distance_m`` are evaluated at ``min_distance_m``.
    """
    d = np.maximum(np.asarray(distance_m, dtype=np.float64), channel.min_distance_m)
    gain_db = (
        channel.reference_gain_db
        - 10.0 * channel.pathloss_exponent * np.log10(d / channel.reference_distance_m)
        + shadowing_db
    )
    return np.power(10.0, gain_db / 10.0)


def noise_power_w(bandwidth_hz: float, channel: ChannelConfig) -> float:
    """Thermal noise power in W over ``bandwidth_hz``: ``N0·B·noise_bandwidth_scale``."""
    n0_w_per_hz = 10.0 ** ((channel.noise_psd_dbm_per_hz - 30.0) / 10.0)
    return n0_w_per_hz * bandwidth_hz * channel.noise_bandwidth_scale


def draw_shadowing_db(rng: np.random.Generator, shape: int | tuple[int, ...], channel: ChannelConfig) -> np.ndarray:
    """Log-normal shadowing in dB, one value per link (kept while the link's geometry is)."""
    if channel.shadowing_std_db == 0.0:
        return np.zeros(shape)
    return rng.normal(0.0, channel.shadowing_std_db, size=shape)


def draw_fading(rng: np.random.Generator, shape: int | tuple[int, ...], channel: ChannelConfig) -> np.ndarray:
    """Small-scale power fading |h|², exponential (Rayleigh amplitude) with mean
    ``rayleigh_mean_power``; redrawn every round."""
    if channel.fading == "none":
        return np.ones(shape)
    return rng.exponential(channel.rayleigh_mean_power, size=shape)


def shannon_rate_bps(
    bandwidth_hz: float, tx_power_w: np.ndarray | float, gain: np.ndarray, noise_w: float
) -> np.ndarray:
    """``B·log2(1 + P·g/N)`` in bit/s."""
    snr = np.asarray(tx_power_w, dtype=np.float64) * gain / noise_w
    return bandwidth_hz * np.log1p(snr) / np.log(2.0)  # log1p: no underflow to 0 at tiny SNR


def link_gain(
    channel: ChannelConfig, distance_m: np.ndarray, shadowing_db: np.ndarray | float, fading: np.ndarray | float
) -> np.ndarray:
    """Linear power gain of links: path loss with shadowing, times this round's fading."""
    return path_gain(distance_m, channel, shadowing_db) * fading


def link_rate_bps(link: LinkConfig, channel: ChannelConfig, gain: np.ndarray) -> np.ndarray:
    """Rate of each link of one class from its gain: Shannon for wireless (at
    ``rate_power_w``, else ``tx_power_w``), the fixed rate for wired."""
    gain = np.asarray(gain, dtype=np.float64)
    if link.kind == "wired":
        return np.full(gain.shape, float(link.rate_bps))
    gain = gain * 10.0 ** (link.antenna_gain_db / 10.0)
    power_w = link.tx_power_w if link.rate_power_w is None else link.rate_power_w
    return shannon_rate_bps(link.bandwidth_hz, power_w, gain, noise_power_w(link.bandwidth_hz, channel))


def transfer_cost(
    link: LinkConfig, payload_bits: np.ndarray | float, rate_bps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds and joules of sending ``payload_bits`` over links of this class.

    Time is ``fixed_latency_s + bits/rate``; energy is ``tx_power_w`` times the whole
    transfer time, fixed latency included (the radio is held for the transfer, as in
    the reference accounting).
    """
    bits = np.asarray(payload_bits, dtype=np.float64)
    rate = np.asarray(rate_bps, dtype=np.float64)
    with np.errstate(divide="ignore"):
        airtime_s = np.where(bits > 0, bits / rate, 0.0)
    seconds = np.where(bits > 0, airtime_s + link.fixed_latency_s, 0.0)
    return seconds, link.tx_power_w * seconds

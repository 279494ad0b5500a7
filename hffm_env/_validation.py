"""Checks shared by every config dataclass, and the physical limits they share.

Each check raises :class:`ConfigError` whose message names the field, the value
received and the allowed range, so a bad scenario fails at construction and
never half-way through a run. Every numeric field has a range bounded on both
sides: its physics where that is narrow (a probability, a path-loss exponent),
else one of the generous limits below.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable


class ConfigError(ValueError):
    """A configuration field holds a value outside its allowed range."""


# Far beyond any deployment the package models, yet tight enough that the cost
# model's products (bits / rate, power · time, κ·cycles·f²) stay finite and every
# count stays allocatable.
MAX_DISTANCE_M = 1e8  # beyond geostationary orbit (3.6e7 m)
MAX_DURATION_S = 1e6  # about 11.6 days
MAX_POWER_W = 1e6  # a broadcast transmitter
MAX_BANDWIDTH_HZ = 1e12  # a terahertz link
MAX_CLOCK_HZ = 1e15  # cycles per second of a whole server
MAX_RATE_BPS = 1e15  # 1 Pbit/s
MAX_BYTES = 1e15  # 1 PB
MAX_ENERGY_J = 1e15
MAX_CYCLES = 1e15
MAX_FACTOR = 1e6  # dimensionless scales, multipliers and weights
MAX_COUNT = 10_000_000  # nodes, samples, steps, rounds, slots
MAX_SEED = 2**64 - 1  # the largest seed torch.Generator.manual_seed takes


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_real(
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check that ``value`` is a finite real number inside [low, high]."""
    lo = "-inf" if low is None else f"{low:g}"
    hi = "+inf" if high is None else f"{high:g}"
    interval = f"{'[' if low_inclusive else '('}{lo}, {hi}{']' if high_inclusive else ')'}"
    if not _is_real(value) or not math.isfinite(float(value)):
        raise ConfigError(f"{field} must be a finite number in {interval}, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ConfigError(f"{field} must be in {interval}, got {value!r}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        raise ConfigError(f"{field} must be in {interval}, got {value!r}")
    return v


def check_positive(field: str, value: Any, high: float | None = None) -> float:
    """Check that ``value`` is a finite real number in (0, high]."""
    return check_real(field, value, low=0.0, low_inclusive=False, high=high)


def check_non_negative(field: str, value: Any, high: float | None = None) -> float:
    """Check that ``value`` is a finite real number in [0, high]."""
    return check_real(field, value, low=0.0, high=high)


def check_int(field: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool) inside [low, high]."""
    lo = "-inf" if low is None else str(low)
    hi = "+inf" if high is None else str(high)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ConfigError(f"{field} must be an integer in [{lo}, {hi}], got {value!r}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ConfigError(f"{field} must be an integer in [{lo}, {hi}], got {value!r}")
    return v


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> Any:
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"{field} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def check_range_pair(
    field: str, value: Any, *, low: float = 0.0, low_inclusive: bool = False, high: float | None = None
) -> tuple[float, float]:
    """Check a (min, max) pair of finite numbers with min <= max, both between ``low`` and ``high``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{field} must be a (min, max) pair of numbers, got {value!r}")
    a = check_real(f"{field}[0]", value[0], low=low, low_inclusive=low_inclusive, high=high)
    b = check_real(f"{field}[1]", value[1], low=low, low_inclusive=low_inclusive, high=high)
    if a > b:
        raise ConfigError(f"{field} must satisfy min <= max, got {value!r}")
    return (a, b)

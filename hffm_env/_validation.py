"""Checks shared by every config dataclass.

Each check raises :class:`ConfigError` whose message names the field, the value
received and the allowed range, so a bad scenario fails at construction and
never half-way through a run.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable


class ConfigError(ValueError):
    """A configuration field holds a value outside its allowed range."""


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


def check_positive(field: str, value: Any) -> float:
    return check_real(field, value, low=0.0, low_inclusive=False)


def check_non_negative(field: str, value: Any) -> float:
    return check_real(field, value, low=0.0)


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


def check_range_pair(field: str, value: Any, *, low: float = 0.0, low_inclusive: bool = False) -> tuple[float, float]:
    """Check a (min, max) pair of finite numbers with min <= max, both above ``low``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{field} must be a (min, max) pair of numbers, got {value!r}")
    a = check_real(f"{field}[0]", value[0], low=low, low_inclusive=low_inclusive)
    b = check_real(f"{field}[1]", value[1], low=low, low_inclusive=low_inclusive)
    if a > b:
        raise ConfigError(f"{field} must satisfy min <= max, got {value!r}")
    return (a, b)

"""Every numeric config field has a physical range, bounded on both sides, and a
value outside it fails at ``make_scenario`` with the field and the range named.

The walk covers every numeric leaf of every config layer (the ``tiny`` scenario's,
tuple elements and the ``payload_bytes`` values included) with values no physical
quantity takes; the table checks each config class at its boundary: the bound is
accepted, a value just past it is refused.
"""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from hffm_env import ConfigError, make_scenario

FLOAT_PROBES = (1e300, -1e300)
INT_PROBES = (10**30, -(10**30))
# a range written as an interval, e.g. "(0, 1e+06]"; "inf" in it would mean no bound
INTERVAL = re.compile(r"[\[(](-?[0-9.e+-]+), (-?[0-9.e+-]+)[\])]")


def _numeric_kind(hint) -> type | None:
    """float or int for a field annotated with that type (optional or not), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if len(args) == 1 and args[0] in (float, int) else None


def numeric_leaves(obj, prefix: str = ""):
    """(override path, float or int) of every numeric value below a config object."""
    if isinstance(obj, dict):
        for key, v in obj.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                yield f"{prefix}{key}", type(v)
        return
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v, path, hint = getattr(obj, f.name), prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(v) or isinstance(v, dict):
            yield from numeric_leaves(v, path + "__")
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
            for i, item in enumerate(v):
                yield from numeric_leaves(item, f"{path}__{i}__")
        elif isinstance(v, tuple):
            for i, item in enumerate(v):
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    yield f"{path}__{i}", type(item)
        elif _numeric_kind(hint) is not None:
            yield path, _numeric_kind(hint)


LEAVES = sorted(numeric_leaves(make_scenario("tiny")))


def _field_name(path: str) -> str:
    parts = path.split("__")
    return parts[-2] if parts[-1].isdigit() and not parts[-2].isdigit() else parts[-1]


def test_the_walk_reaches_every_layer():
    layers = {p.split("__")[0] for p, _ in LEAVES}
    assert layers == {"network", "data", "model", "federation", "env", "payload_bytes", "seed"}
    assert len(LEAVES) > 120


@pytest.mark.parametrize("path,kind", LEAVES, ids=[p for p, _ in LEAVES])
def test_every_numeric_field_refuses_values_beyond_its_range_naming_field_and_range(path, kind):
    field = _field_name(path)
    for bad in FLOAT_PROBES if kind is float else INT_PROBES:
        with pytest.raises(ConfigError) as err:
            make_scenario("tiny", **{path: bad})
        message = str(err.value)
        assert field in message, message
        interval = INTERVAL.search(message)
        pinned = re.search(r"must be (None|-?[0-9.]+)\b", message)  # a field the scenario pins to one value
        assert interval or pinned, f"{path}={bad!r}: the message names no range: {message}"


# (override, largest or smallest value allowed, a value just past it, the range the message names)
BOUNDARIES = [
    ("network__tiers__0__uplink__tx_power_w", 1e6, 1.000001e6, "(0, 1e+06]"),  # LinkConfig
    ("network__tiers__1__uplink__rate_bps", 1e15, 1.000001e15, "(0, 1e+15]"),
    ("network__d2d__bandwidth_hz", 1e12, 1.000001e12, "(0, 1e+12]"),
    ("network__channel__shadowing_std_db", 100.0, 100.001, "[0, 100]"),  # ChannelConfig
    ("network__channel__noise_bandwidth_scale", 1e6, 1.000001e6, "(0, 1e+06]"),
    ("network__compute__kappa", 1e-20, 1.000001e-20, "[0, 1e-20]"),  # ComputeConfig
    ("network__compute__cpu_freq_hz_range__1", 1e15, 1.000001e15, "(0, 1e+15]"),
    ("network__mobility__speed_mps_range__1", 1e4, 10000.01, "[0, 10000]"),  # MobilityConfig
    ("network__mobility__round_duration_s", 1e6, 1.000001e6, "(0, 1e+06]"),
    ("network__faults__packet_bytes", 1e15, 1.000001e15, "(0, 1e+15]"),  # LinkFaultConfig
    ("network__tiers__0__count", 10_000_000, 10_000_001, "[1, 10000000]"),  # TierConfig
    ("network__tiers__1__cpu_freq_hz", 1e15, 1.000001e15, "(0, 1e+15]"),
    ("network__area_side_m", 1e8, 1.000001e8, "(0, 1e+08]"),  # NetworkConfig
    ("network__d2d_radius_m", 1e8, 1.000001e8, "[0, 1e+08]"),
    ("data__dirichlet_alpha", 1e6, 1.000001e6, "(0, 1e+06]"),  # DataConfig
    ("data__pool_size", 10_000_000, 10_000_001, "[16, 10000000]"),
    ("model__weight_decay", 200.0, 1.000001e6, "[0, 1e+06]"),  # ModelConfig (lr 5e-3: lr·wd <= 1)
    ("model__init_seed", 2**64 - 1, 2**64, f"[0, {2**64 - 1}]"),
    ("federation__payload_scale", 1e6, 1.000001e6, "(0, 1e+06]"),  # FederationConfig
    ("federation__local_steps", 10_000_000, 10_000_001, "[0, 10000000]"),
    ("federation__events__join", 1.0, 1.000001, "[0, 1]"),  # EventConfig
    ("federation__privacy__clip_norm", 1e6, 1.000001e6, "(0, 1e+06]"),  # PrivacyConfig
    ("federation__adversaries__strength", 1000.0, 1000.001, "[0, 1000]"),  # AdversaryConfig
    ("federation__faults__round_deadline_s", 1e6, 1.000001e6, "(0, 1e+06]"),  # FaultConfig
    ("federation__faults__straggler_slowdown", 1e6, 1.000001e6, "[1, 1e+06]"),
    ("federation__inference__requests_per_device", 1e4, 10000.01, "[0, 10000]"),  # InferenceConfig
    ("federation__inference__device_memory_bytes_range__1", 1e15, 1.000001e15, "[0, 1e+15]"),
    ("env__energy_budget_j", 1e15, 1.000001e15, "(0, 1e+15]"),  # EnvConfig
    ("env__latency_scale_s", 1e6, 1.000001e6, "(0, 1e+06]"),
    ("env__max_requests", 10_000_000, 10_000_001, "[1, 10000000]"),
    ("payload_bytes__adapters", 1e15, 1.000001e15, "(0, 1e+15]"),  # Scenario
    ("seed", 2**64 - 1, 2**64, f"[0, {2**64 - 1}]"),
]


def test_the_boundary_table_covers_every_config_class():
    sc = make_scenario("tiny")
    classes = set()
    for path, *_ in BOUNDARIES:
        obj = sc
        for part in path.split("__")[:-1]:
            obj = (
                obj[int(part)] if isinstance(obj, tuple) else obj[part] if isinstance(obj, dict) else getattr(obj, part)
            )
        classes.add(type(obj).__name__)
    assert classes >= {
        "LinkConfig",
        "ChannelConfig",
        "ComputeConfig",
        "MobilityConfig",
        "LinkFaultConfig",
        "TierConfig",
        "NetworkConfig",
        "DataConfig",
        "ModelConfig",
        "FederationConfig",
        "EventConfig",
        "PrivacyConfig",
        "AdversaryConfig",
        "FaultConfig",
        "InferenceConfig",
        "EnvConfig",
        "Scenario",
    }


@pytest.mark.parametrize("path,bound,past,interval", BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_each_config_class_accepts_its_bound_and_refuses_a_value_past_it(path, bound, past, interval):
    make_scenario("tiny", **{path: bound})
    with pytest.raises(ConfigError) as err:
        make_scenario("tiny", **{path: past})
    assert _field_name(path) in str(err.value) and interval in str(err.value), str(err.value)


def test_an_absurd_payload_scale_is_refused():
    with pytest.raises(ConfigError, match=r"federation\.payload_scale must be in \(0, 1e\+06\], got 1e\+300"):
        make_scenario("tiny", federation__payload_scale=1e300)

"""Property-based tests (hypothesis) over configs and actions.

* Configs: every leaf field of every layer (network, data, model, federation with its
  events/privacy/adversaries/faults/inference, env, the scenario itself) rejects a
  value of the wrong kind (NaN, ±inf, strings, bools where numbers are expected,
  None where it is not allowed, malformed tuples) with an error naming the field;
  numeric and choice fields accept their documented range and reject the rest.
  These properties only build configs (``make_scenario``), so they run many examples.
* Envs: a valid scenario (plausible ranges of many fields at once) builds every env
  id, which resets and steps a few rounds with random valid actions without NaN/inf
  in observations, rewards, info's terms, or the federation's module banks.
* Actions: an action outside the space raises ``InvalidAction`` naming it and changes
  nothing; a masked-out choice raises with ``env__invalid_action="raise"`` and, by
  default, is replaced by the fixed policy's choice, penalised and listed in
  ``info["invalid_actions"]``.

Deterministic (``derandomize=True``, no example database) and quick: building an env
costs a fraction of a second, so env properties draw few examples.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import hffm_env
from agents import sample_valid_action
from hffm_env import ConfigError, make_scenario
from hffm_env._validation import (
    MAX_BANDWIDTH_HZ,
    MAX_BYTES,
    MAX_CLOCK_HZ,
    MAX_COUNT,
    MAX_CYCLES,
    MAX_DISTANCE_M,
    MAX_DURATION_S,
    MAX_ENERGY_J,
    MAX_FACTOR,
    MAX_POWER_W,
    MAX_RATE_BPS,
    MAX_SEED,
)
from hffm_env.data.tokenizer import BUILTIN_WORDS, N_SPECIAL
from hffm_env.envs.codec import InvalidAction
from hffm_env.envs.config import DEFAULT_SCHEDULES
from hffm_env.federation.config import ATTACKS, GOSSIP_WEIGHTS, MAX_REQUESTS_PER_DEVICE, OUTAGE_FALLBACKS, RULES
from hffm_env.model.config import MAX_LAYERS, MAX_WIDTH
from hffm_env.network.config import CLUSTER_HEAD_RULES, MAX_KAPPA, MAX_SPEED_MPS, MOBILITY_MODELS, LinkConfig

torch.set_num_threads(1)

IDS = list(hffm_env.ENV_IDS)
ERRORS = (ConfigError, ValueError, TypeError)
NAN, INF = float("nan"), float("inf")


def _settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def _get(obj, path: str):
    for part in path.split("__"):
        obj = obj[int(part)] if isinstance(obj, tuple) else getattr(obj, part)
    return obj


# ============================================================== every leaf, wrong kinds
def _leaves(obj, prefix=""):
    """(override path, type hint, value) of every field below ``obj``; dataclass fields
    (and tuples of them) are also yielded as leaves themselves, then descended into."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v, path = getattr(obj, f.name), prefix + f.name
        yield path, hints[f.name], v
        if dataclasses.is_dataclass(v):
            yield from _leaves(v, path + "__")
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
            for i, item in enumerate(v):
                yield from _leaves(item, f"{path}__{i}__")


def _optional(hint):
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _wrong_kinds(hint) -> list | None:
    """Values of the wrong kind for a field annotated ``hint`` (None: a type this test does not know)."""
    base, optional = _optional(hint)
    none = [] if optional else [None]
    if base is float:
        return [NAN, INF, -INF, "1.0", True, [1.0], 1j] + none
    if base is int:
        return [NAN, INF, 1.5, 2.0, "2", True, [1]] + none
    if base is bool:
        return [1, 0, 1.0, "True", np.bool_(True)] + none
    if base is str:
        return [3, b"x", ("a",), 1.5] + none
    if dataclasses.is_dataclass(base):
        return ["x", 3, {}] + none
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is tuple and args == (float, float):
        return [None, 5.0, "ab", (1.0,), (1.0, 2.0, 3.0), (NAN, 1.0), (1.0, INF), (2.0, 1.0), (True, 2.0)]
    if origin is tuple and args == (float, float, float):
        return [None, 1.0, (1.0, 1.0), (1.0, 1.0, NAN), (1.0, 1.0, 1.5), (1.0, True, 1.0), "abc"]
    if origin is tuple and args == (int, int):
        return [None, 1, (1,), (2, 1), (0, 1), (1, 3), (1.0, 2), (True, 2)]
    if origin is tuple and args == (str, ...):
        return [None, "scene_qa", (), ("nope", "sensor"), ("scene_qa", "scene_qa"), ("scene_qa", 3)]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
        return [None, (), "x"]
    if origin is dict:
        return [None, {}, {"adapters": -1.0}, {"adapters": NAN}, {3: 1.0}, "x"]
    return None


def test_every_field_of_every_layer_rejects_values_of_the_wrong_kind():
    leaves = list(_leaves(make_scenario("tiny")))
    assert {p.split("__")[0] for p, _, _ in leaves} >= {"network", "data", "model", "federation", "env", "seed"}
    unknown = [(p, h) for p, h, _ in leaves if _wrong_kinds(h) is None]
    assert not unknown, f"fields of a type this test cannot probe (extend _wrong_kinds): {unknown}"
    accepted, unnamed = [], []
    for path, hint, _ in leaves:
        field = path.split("__")[-1]
        for bad in _wrong_kinds(hint):
            try:
                make_scenario("tiny", **{path: bad})
            except ERRORS as e:
                if field not in str(e):
                    unnamed.append((path, bad, str(e)))
            else:
                accepted.append((path, bad))
    assert not accepted, f"accepted values of the wrong kind: {accepted}"
    assert not unnamed, f"errors that do not name the field: {unnamed}"


# ============================================================== ranges, valid and not
@dataclasses.dataclass(frozen=True)
class Field:
    valid: st.SearchStrategy
    invalid: st.SearchStrategy
    names: tuple[str, ...] = ()  # what the error message must name (default: the leaf)


_NOT_REAL = st.sampled_from([NAN, INF, -INF, True, False, "1", [1.0]])
_NOT_INT = st.sampled_from([1.5, 2.0, NAN, INF, True, False, "2", [1]])
_finite = functools.partial(st.floats, allow_nan=False, allow_infinity=False)


def real(lo=None, hi=None, *, lo_open=False, hi_open=False, optional=False) -> Field:
    valid = _finite(lo, hi, exclude_min=lo_open and lo is not None, exclude_max=hi_open and hi is not None)
    bad = [_NOT_REAL if optional else _NOT_REAL | st.none()]
    if lo is not None:
        bad.append(_finite(max_value=lo, exclude_max=not lo_open))
    if hi is not None:
        bad.append(_finite(min_value=hi, exclude_min=not hi_open))
    return Field(st.none() | valid if optional else valid, st.one_of(bad))


def integer(lo=None, hi=None, *, optional=False) -> Field:
    valid = st.integers(lo, 2**40 if hi is None else hi)
    valid = valid | valid.filter(lambda v: v <= np.iinfo(np.int64).max).map(np.int64)  # numpy integers are integers
    bad = [_NOT_INT if optional else _NOT_INT | st.none()]
    if lo is not None:
        bad.append(st.integers(max_value=lo - 1))
    if hi is not None:
        bad.append(st.integers(min_value=hi + 1))
    return Field(st.none() | valid if optional else valid, st.one_of(bad))


def choice(options) -> Field:
    return Field(
        st.sampled_from(options),
        st.text(max_size=12).filter(lambda s: s not in options)
        | st.sampled_from([None, 3, str(options[0]).upper() + "_"]),
    )


def boolean() -> Field:
    return Field(st.booleans(), st.sampled_from([0, 1, 1.0, "True", None]))


def pair(lo=0.0, hi=1e12, lo_open=False) -> Field:
    x = _finite(lo, hi, exclude_min=lo_open)
    return Field(
        st.tuples(x, x).map(lambda t: (min(t), max(t))),
        st.tuples(x, x).filter(lambda t: t[0] != t[1]).map(lambda t: (max(t), min(t)))
        | st.tuples(_finite(max_value=lo, exclude_max=not lo_open), x)
        | st.tuples(x, _finite(min_value=hi, exclude_min=True))
        | st.sampled_from([None, 1.0, (1.0,), (1.0, 2.0, 3.0), (NAN, 1.0), (1.0, INF), "ab"]),
    )


def only(value, others: st.SearchStrategy) -> Field:
    return Field(st.just(value), others.filter(lambda v: v != value))


_HASH_MAX = 256 - N_SPECIAL - len(BUILTIN_WORDS)  # the tiny vocabulary's room for hashed words
_TASK_SETS = [
    ("scene_qa", "sensor"),
    ("style_qa", "digits_qa"),
    ("sensor", "scene_qa", "style_qa"),
    ("digits_qa", "sensor", "style_qa", "scene_qa"),
]

NETWORK = {
    "network__area_side_m": Field(  # 2 edges 500 m apart
        _finite(300.0, MAX_DISTANCE_M), _finite(max_value=200.0) | _finite(MAX_DISTANCE_M, exclude_min=True)
    ),
    "network__cluster_center_offset_m": real(0.0, MAX_DISTANCE_M),
    "network__cluster_radius_m": real(0.0, MAX_DISTANCE_M, lo_open=True),
    "network__d2d_radius_m": real(0.0, MAX_DISTANCE_M),
    "network__d2d_patch_weight": choice(("distance", "rate")),
    "network__cluster_head": choice(CLUSTER_HEAD_RULES),
    "network__charge_downlink": boolean(),
    "network__tiers__0__count": integer(2, MAX_COUNT),
    "network__tiers__1__count": integer(1, 8),
    "network__tiers__2__count": integer(1, 2),
    "network__tiers__1__min_separation_m": Field(_finite(0.0, 3000.0), _finite(max_value=0.0, exclude_max=True)),
    "network__tiers__1__cpu_freq_hz": real(0.0, MAX_CLOCK_HZ, lo_open=True),
    "network__tiers__2__compute_power_w": real(0.0, MAX_POWER_W),
    "network__tiers__0__uplink__bandwidth_hz": real(0.0, MAX_BANDWIDTH_HZ, lo_open=True),
    "network__tiers__0__uplink__tx_power_w": real(0.0, MAX_POWER_W, lo_open=True),
    "network__tiers__0__uplink__antenna_gain_db": real(-100.0, 100.0),
    "network__tiers__0__uplink__fixed_latency_s": real(0.0, MAX_DURATION_S),
    "network__tiers__0__uplink__rate_bps": Field(st.none(), _finite(-1e9, 1e9) | _NOT_REAL),
    "network__tiers__1__uplink__rate_bps": real(0.0, MAX_RATE_BPS, lo_open=True),
    "network__tiers__1__uplink__tx_power_w": real(0.0, MAX_POWER_W),
    "network__d2d__bandwidth_hz": real(0.0, MAX_BANDWIDTH_HZ, lo_open=True),
    "network__d2d__kind": Field(
        st.just("wireless"),
        st.just("wired") | st.text(max_size=5).filter(lambda s: s not in ("wired", "wireless")),
        names=("kind", "rate_bps"),
    ),
    "network__channel__reference_gain_db": real(-300.0, 0.0),
    "network__channel__reference_distance_m": real(0.0, MAX_DISTANCE_M, lo_open=True),
    "network__channel__pathloss_exponent": real(1.0, 10.0),
    "network__channel__shadowing_std_db": real(0.0, 100.0),
    "network__channel__fading": choice(("rayleigh", "none")),
    "network__channel__rayleigh_mean_power": real(0.0, MAX_FACTOR, lo_open=True),
    "network__channel__fading_per_round": boolean(),
    "network__channel__noise_psd_dbm_per_hz": real(-250.0, 0.0),
    "network__channel__noise_bandwidth_scale": real(0.0, MAX_FACTOR, lo_open=True),
    "network__channel__min_distance_m": real(0.0, MAX_DISTANCE_M, lo_open=True),
    "network__compute__cycles_per_sample": real(0.0, MAX_CYCLES),
    "network__compute__cpu_freq_hz_range": pair(0.0, MAX_CLOCK_HZ, lo_open=True),
    "network__compute__kappa": real(0.0, MAX_KAPPA),
    "network__mobility__model": choice(MOBILITY_MODELS),
    "network__mobility__speed_mps_range": pair(0.0, MAX_SPEED_MPS),
    "network__mobility__round_duration_s": real(0.0, MAX_DURATION_S, lo_open=True),
    "network__faults__d2d_failure": real(0.0, 1.0),
    "network__faults__packet_loss": real(0.0, 1.0, hi_open=True),
    "network__faults__packet_bytes": real(0.0, MAX_BYTES, lo_open=True),
}
DATA = {
    "data__tasks": Field(
        st.sampled_from(_TASK_SETS),
        st.sampled_from([(), ("nope", "sensor"), ("sensor", "sensor"), ["scene_qa", "sensor"], "scene_qa", None]),
    ),
    "data__pool_size": integer(16, MAX_COUNT),
    "data__test_fraction": real(0.0, 0.5, lo_open=True),
    "data__dirichlet_alpha": real(0.0, MAX_FACTOR, lo_open=True),
    "data__modality_availability": Field(
        st.tuples(*[_finite(0.0, 1.0)] * 3),
        st.tuples(_finite(0.0, 1.0), _finite(1.0, 1e9, exclude_min=True), _finite(0.0, 1.0))
        | st.sampled_from([(1.0, 1.0), (1.0, 1.0, NAN), None, 1.0]),
    ),
    "data__tasks_per_device": Field(
        st.sampled_from([(1, 1), (1, 2), (2, 2)]),
        st.sampled_from([(2, 1), (0, 1), (1, 3), (1.0, 2), (True, 2), None, 1]),
    ),
    "data__min_shard": integer(1, 1600),  # at most tiny's pool_size
    "data__hash_buckets": integer(1, _HASH_MAX),
    "data__image_size": only(32, st.integers(-64, 1024)),
    "data__vocab_size": only(256, st.integers(-64, 4096)),
    "data__max_question_tokens": only(12, st.integers(-4, 600)),
    "data__sensor_length": only(64, st.integers(-4, 600)),
}
MODEL = {
    "model__backbone": Field(st.sampled_from(["default", "random"]), st.sampled_from(["", None, 3])),
    "model__hidden_size": only(128, st.integers(-8, 1024)),  # the shipped backbone's architecture
    "model__num_layers": integer(1, 4),  # the shipped backbone's first layers
    "model__patch_size": only(8, st.integers(-2, 40)),
    "model__adapter_bottleneck": integer(1, MAX_WIDTH),
    "model__n_prompts": integer(0, MAX_WIDTH),
    "model__n_experts": integer(2, MAX_LAYERS),  # experts_top_k=2 must fit
    "model__expert_bottleneck": integer(1, MAX_WIDTH),
    "model__experts_top_k": integer(1, 4),
    "model__init_seed": integer(0, MAX_SEED),
    "model__learning_rate": real(0.0, 1.0, lo_open=True),
    # tiny's learning rate is 5e-3: AdamW's decay factor 1 - lr·wd must stay >= 0
    "model__weight_decay": Field(_finite(0.0, 199.0), _finite(min_value=201.0) | real(0.0).invalid),
}
FEDERATION = {
    "federation__local_steps": integer(0, MAX_COUNT),
    "federation__batch_size": integer(1, MAX_COUNT),
    "federation__participation": real(0.0, 1.0, lo_open=True),
    "federation__specialist_steps": integer(0, MAX_COUNT),
    "federation__experts_per_device": integer(1, 4, optional=True),
    "federation__payload_scale": real(0.0, MAX_FACTOR, lo_open=True),
    "federation__rule": choice(RULES),
    "federation__trim_fraction": real(0.0, 0.5, hi_open=True),
    "federation__krum_f": integer(0, MAX_COUNT),
    "federation__bucket_size": integer(1, MAX_COUNT),
    "federation__gossip_rounds": integer(1, MAX_COUNT),
    "federation__gossip_weights": choice(GOSSIP_WEIGHTS),
    "federation__specialists_contribute": boolean(),
    "federation__eval_max_samples": integer(1, MAX_COUNT, optional=True),
    "federation__keep_ledger_rounds": integer(1, MAX_COUNT, optional=True),
    **{
        f"federation__events__{n}": real(0.0, 1.0)
        for n in ("task_arrival", "modality_off", "modality_on", "leave", "join")
    },
    "federation__privacy__clip_norm": real(0.0, MAX_FACTOR, lo_open=True, optional=True),
    # tiny has no clip norm, so any noise is invalid: it scales with the clip norm
    "federation__privacy__noise_multiplier": Field(st.just(0.0), real(0.0, MAX_FACTOR).invalid | _finite(1e-6, 1e6)),
    "federation__adversaries__fraction": real(0.0, 1.0),
    "federation__adversaries__attack": choice(ATTACKS),
    "federation__adversaries__strength": real(0.0, 1000.0),
    "federation__inference__requests_per_device": real(0.0, MAX_REQUESTS_PER_DEVICE),
    "federation__inference__cycles_per_inference": real(0.0, MAX_CYCLES, lo_open=True),
    "federation__inference__answer_bytes": real(0.0, MAX_BYTES),
    "federation__inference__model_bytes": real(0.0, MAX_BYTES, lo_open=True, optional=True),
    "federation__inference__device_memory_bytes_range": pair(0.0, MAX_BYTES),
    **{
        f"federation__faults__{n}": real(0.0, 1.0)
        for n in ("dropout_before_upload", "dropout_after_upload", "straggler_fraction", "edge_outage")
    },
    "federation__faults__straggler_slowdown": real(1.0, MAX_FACTOR),
    "federation__faults__round_deadline_s": real(0.0, MAX_DURATION_S, lo_open=True, optional=True),
    "federation__faults__edge_repair": real(0.0, 1.0, lo_open=True),
    "federation__faults__outage_fallback": choice(OUTAGE_FALLBACKS),
}
ENV = {
    "env__max_rounds": integer(1, MAX_COUNT),
    "env__energy_budget_j": real(0.0, MAX_ENERGY_J, lo_open=True, optional=True),
    **{
        f"env__{w}": real(0.0, MAX_FACTOR) for w in ("w_acc", "w_inference", "w_latency", "w_energy", "invalid_penalty")
    },
    "env__latency_scale_s": real(0.0, MAX_DURATION_S, lo_open=True, optional=True),
    "env__energy_scale_j": real(0.0, MAX_ENERGY_J, lo_open=True, optional=True),
    "env__max_requests": integer(1, MAX_COUNT),
    "env__max_cold_starts": integer(1, MAX_COUNT),
    "env__default_schedule": choice(DEFAULT_SCHEDULES),
    "env__invalid_action": choice(("penalize", "raise")),
    "env__shared_reward": boolean(),
    "env__device_agents": boolean(),
    "seed": integer(0, MAX_SEED),
}
LAYERS = {"network": NETWORK, "data": DATA, "model": MODEL, "federation": FEDERATION, "env": ENV}


def test_range_tables_name_real_fields():
    sc = make_scenario("tiny")
    for table in LAYERS.values():
        for path in table:
            _get(sc, path)  # AttributeError/IndexError on a stale path


@pytest.mark.parametrize("layer", list(LAYERS))
@_settings(150)
@given(data=st.data())
def test_fields_accept_their_range_and_reject_the_rest_naming_the_field(layer, data):
    path = data.draw(st.sampled_from(sorted(LAYERS[layer])), label="path")
    spec = LAYERS[layer][path]
    if data.draw(st.booleans(), label="valid"):
        value = data.draw(spec.valid, label="value")
        stored = _get(make_scenario("tiny", **{path: value}), path)
        assert stored == (tuple(value) if isinstance(value, list) else value)
    else:
        value = data.draw(spec.invalid, label="value")
        with pytest.raises(ERRORS) as err:
            make_scenario("tiny", **{path: value})
        names = spec.names or (path.split("__")[-1],)
        assert any(n in str(err.value) for n in names), f"{path}={value!r}: {err.value}"


@_settings(30)
@given(data=st.data())
def test_invalid_overrides_given_to_gym_make_raise_naming_the_field(data):
    env_id = data.draw(st.sampled_from(IDS), label="env_id")
    table = data.draw(st.sampled_from(list(LAYERS.values())))
    path = data.draw(st.sampled_from(sorted(table)), label="path")
    value = data.draw(table[path].invalid, label="value")
    with pytest.raises(ERRORS) as err:
        gym.make(env_id, preset="tiny", **{path: value})
    assert any(n in str(err.value) for n in table[path].names or (path.split("__")[-1],))


def test_unknown_override_paths_list_the_fields_that_exist():
    for bad in ("network__nope", "federation__events__nope", "network__tiers__7__count", "env__max_rounds__x"):
        with pytest.raises(ConfigError, match="override"):
            make_scenario("tiny", **{bad: 1})


def test_cross_field_values_caught_at_reset_name_the_fields():
    """The few checks that need the network or the drawn data run when the federation is built."""
    cases = [
        ({"data__pool_size": 16}, ValueError, "pool_size"),
        ({"data__min_shard": 1000}, ValueError, "min_shard"),
        ({"data__modality_availability": (0.0, 0.0, 0.0)}, ConfigError, "modality_availability"),
        ({"model__backbone": "/nonexistent/backbone"}, FileNotFoundError, "backbone"),
    ]
    for overrides, error, name in cases:
        env = gym.make("hffm_env/Aggregation-v0", preset="tiny", **overrides)
        with pytest.raises(error, match=name):
            env.reset(seed=0)


# ============================================================== valid configs step finitely
def _plausible_pair(lo, hi):
    x = _finite(lo, hi)
    return st.tuples(x, x).map(lambda t: (min(t), max(t)))


PLAUSIBLE = {
    "network__d2d_radius_m": _finite(0.0, 300.0),
    "network__cluster_head": st.sampled_from(CLUSTER_HEAD_RULES),
    "network__d2d_patch_weight": st.sampled_from(("distance", "rate")),
    "network__charge_downlink": st.booleans(),
    "network__direct_uplink": st.sampled_from([None, LinkConfig("wired", tx_power_w=1.0, rate_bps=1e7)]),
    "network__channel__fading": st.sampled_from(("rayleigh", "none")),
    "network__channel__shadowing_std_db": _finite(0.0, 12.0),
    "network__channel__fading_per_round": st.booleans(),
    "network__compute__cycles_per_sample": _finite(0.0, 1e8),
    "network__mobility__model": st.sampled_from(MOBILITY_MODELS),
    "network__mobility__speed_mps_range": _plausible_pair(0.0, 30.0),
    "network__faults__d2d_failure": _finite(0.0, 1.0),
    "network__faults__packet_loss": _finite(0.0, 0.5),
    "data__tasks": st.sampled_from(_TASK_SETS[:3]),
    "data__dirichlet_alpha": _finite(0.05, 10.0),
    "data__test_fraction": _finite(0.05, 0.5),
    "data__modality_availability": st.tuples(*[_finite(0.3, 1.0)] * 3),
    "model__adapter_bottleneck": st.integers(1, 16),
    "model__n_prompts": st.integers(0, 4),
    "model__expert_bottleneck": st.integers(1, 16),
    "model__learning_rate": _finite(1e-5, 1.0),
    "model__weight_decay": _finite(0.0, 1.0),
    "federation__local_steps": st.integers(0, 2),
    "federation__batch_size": st.integers(1, 8),
    "federation__participation": _finite(0.05, 1.0),
    "federation__specialist_steps": st.integers(0, 2),
    "federation__payload_scale": _finite(0.01, 100.0),
    "federation__rule": st.sampled_from(RULES),
    "federation__trim_fraction": _finite(0.0, 0.45),
    "federation__krum_f": st.integers(0, 3),
    "federation__bucket_size": st.integers(1, 3),
    "federation__gossip_rounds": st.integers(1, 5),
    "federation__gossip_weights": st.sampled_from(GOSSIP_WEIGHTS),
    "federation__specialists_contribute": st.booleans(),
    "federation__eval_max_samples": st.integers(1, 8),
    "federation__keep_ledger_rounds": st.none() | st.integers(1, 4),
    **{
        f"federation__events__{n}": _finite(0.0, 1.0)
        for n in ("task_arrival", "modality_off", "modality_on", "leave", "join")
    },
    "federation__adversaries__fraction": _finite(0.0, 1.0),
    "federation__adversaries__attack": st.sampled_from(ATTACKS),
    "federation__adversaries__strength": _finite(0.0, 1000.0),
    "federation__inference__requests_per_device": _finite(0.0, 3.0),
    "federation__inference__cycles_per_inference": _finite(1e6, 1e10),
    "federation__inference__answer_bytes": _finite(0.0, 1e4),
    "federation__inference__model_bytes": st.none() | _finite(1e5, 1e8),
    "federation__inference__device_memory_bytes_range": _plausible_pair(0.0, 1e8),
    **{
        f"federation__faults__{n}": _finite(0.0, 0.5)
        for n in ("dropout_before_upload", "dropout_after_upload", "straggler_fraction", "edge_outage")
    },
    "federation__faults__straggler_slowdown": _finite(1.0, 10.0),
    "federation__faults__round_deadline_s": st.none() | _finite(1e-3, 100.0),
    "federation__faults__edge_repair": _finite(0.1, 1.0),
    "federation__faults__outage_fallback": st.sampled_from(OUTAGE_FALLBACKS),
    **{f"env__{w}": _finite(0.0, 10.0) for w in ("w_acc", "w_inference", "w_latency", "w_energy")},
    "env__invalid_penalty": _finite(0.0, 1.0),
    "env__latency_scale_s": st.none() | _finite(1e-3, 1e3),
    "env__energy_scale_j": st.none() | _finite(1e-3, 1e3),
    "env__energy_budget_j": st.none() | _finite(1e-3, 1e6),
    "env__max_requests": st.integers(1, 16),
    "env__max_cold_starts": st.integers(1, 16),
    "env__default_schedule": st.sampled_from(DEFAULT_SCHEDULES),
}


@st.composite
def plausible_overrides(draw) -> dict:
    """A random subset of ``PLAUSIBLE`` plus the fields that constrain each other."""
    out = draw(st.fixed_dictionaries({}, optional=PLAUSIBLE))
    edges = draw(st.integers(1, 3))
    out["network__tiers__1__count"] = edges
    out["network__tiers__0__count"] = draw(st.integers(max(edges, 2), 12))
    n_experts = draw(st.integers(1, 4))
    out["model__n_experts"] = n_experts
    out["model__experts_top_k"] = draw(st.integers(1, n_experts))
    out["federation__experts_per_device"] = draw(st.none() | st.integers(1, n_experts))
    if out.get("federation__faults__outage_fallback") == "cloud" and out.get("network__direct_uplink") is None:
        out["network__direct_uplink"] = LinkConfig("wired", tx_power_w=1.0, rate_bps=1e7)  # make_scenario needs one
    if draw(st.booleans()):
        out["federation__privacy__clip_norm"] = draw(_finite(1e-3, 10.0))
        out["federation__privacy__noise_multiplier"] = draw(_finite(0.0, 2.0))
    return out


def _mask_rows(env) -> list[np.ndarray]:
    """``action_masks()`` cut into one boolean row per action dimension."""
    mask, nvec = env.unwrapped.action_masks(), env.action_space.nvec
    return np.split(mask, np.cumsum(nvec)[:-1])


def _valid_action(env, rng: np.random.Generator) -> np.ndarray:
    return sample_valid_action(env.unwrapped.action_masks(), env.action_space.nvec, rng)


def _assert_finite(obs, reward, info, fed) -> None:
    for k, v in obs.items():
        assert np.isfinite(v).all(), f"observation {k!r} is not finite"
    assert math.isfinite(reward)
    for k, v in info["reward_terms"].items():
        assert math.isfinite(v), f"reward term {k!r} = {v}"
    for k in (
        "mean_accuracy",
        "mean_p_correct",
        "delta_score",
        "latency_s",
        "energy_j",
        "served_accuracy",
        "energy_spent_j",
    ):
        assert math.isfinite(info[k]), f"info[{k!r}] = {info[k]}"
    for table in ("per_module", "per_link"):
        for key, totals in info[table].items():
            assert all(math.isfinite(x) for x in totals.values()), f"info[{table!r}][{key!r}] = {totals}"
    for bank_name, bank in (("bank", fed.bank), ("synced", fed.synced), ("adam.m", fed.adam.m), ("adam.v", fed.adam.v)):
        for n, t in bank.items():
            assert torch.isfinite(t).all(), f"federation.{bank_name}[{n!r}] is not finite"


@_settings(24)
@given(
    env_id=st.sampled_from(IDS),
    overrides=plausible_overrides(),
    seed=st.integers(0, 2**16),
    action_seed=st.integers(0, 2**16),
)
def test_valid_configs_reset_and_step_without_nan_or_inf(env_id, overrides, seed, action_seed):
    env = gym.make(env_id, preset="tiny", **{**overrides, "env__max_rounds": 2})
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    for step in range(3):  # the third step follows a reset
        obs, reward, terminated, truncated, info = env.step(_valid_action(env, rng))
        assert env.observation_space.contains(obs)
        assert info["invalid_actions"] == [] and "invalid" not in info["reward_terms"]
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        _assert_finite(obs, reward, info, env.unwrapped.federation)
        if terminated or truncated:
            obs, _ = env.reset()


# ============================================================== actions
@functools.lru_cache(maxsize=None)
def _ready(env_id: str, mode: str):
    """One env per (id, invalid-action mode), reset at seed 0. Tests that only provoke
    errors share it; they check that an error leaves it untouched."""
    env = gym.make(env_id, preset="tiny", env__invalid_action=mode)
    env.reset(seed=0)
    return env


def _state(env) -> tuple:
    core = env.unwrapped.core
    return core.round, core.fed.round_index, core.energy_spent, len(core.fed.ledger.summaries)


@st.composite
def out_of_space(draw, nvec: np.ndarray):
    """An action outside ``MultiDiscrete(nvec)`` and the text its error must hold."""
    n = len(nvec)
    kind = draw(st.sampled_from(["value", "shape", "dtype"]))
    ok = np.array([draw(st.integers(0, k - 1)) for k in nvec], dtype=np.int64)
    if kind == "value":
        i = draw(st.integers(0, n - 1))
        a = ok.astype(draw(st.sampled_from([np.int64, np.int32])))
        a[i] = draw(st.integers(-(2**31), -1) | st.integers(int(nvec[i]), 2**31 - 1))
        return a, f"action[{i}]"
    if kind == "shape":
        m = draw(st.integers(0, 2 * n).filter(lambda m: m != n))
        a = draw(st.sampled_from([np.zeros(m, dtype=np.int64), ok[None, :], np.int64(0)]))
        return a, "action must be an integer array of shape"
    return draw(
        st.sampled_from([ok.astype(np.float64), ok.astype(str), None, "abc", ok.astype(object)])
    ), "action must be an integer array"


@_settings(60)
@given(env_id=st.sampled_from(IDS), data=st.data())
def test_actions_outside_the_space_raise_naming_the_action_and_change_nothing(env_id, data):
    env = _ready(env_id, "penalize")
    before = _state(env)
    action, text = data.draw(out_of_space(env.action_space.nvec))
    with pytest.raises(InvalidAction) as err:
        env.step(action)
    assert text in str(err.value)
    assert _state(env) == before


def _with_masked_choices(draw, rows: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """A random action with a masked-out choice in a non-empty subset of the dimensions that have one."""
    maskable = [i for i, row in enumerate(rows) if not row.all()]
    assume(maskable)
    bad = sorted(draw(st.sets(st.sampled_from(maskable), min_size=1, max_size=len(maskable))))
    action = [draw(st.sampled_from(np.flatnonzero(~row if i in bad else row).tolist())) for i, row in enumerate(rows)]
    return np.array(action, dtype=np.int64), bad


def _where(env, flat: int) -> tuple[str, int]:
    """(decision, index inside its block) of a flat action dimension."""
    core = env.unwrapped.core
    for d in core.decisions:
        n = len(core.codec.block_nvec(d))
        if flat < n:
            return d, flat
        flat -= n
    raise IndexError(flat)


MASKED_IDS = ["hffm_env/Relaying-v0", "hffm_env/Specialization-v0", "hffm_env/Offloading-v0", "hffm_env/HFFM-v0"]


def test_ids_with_masks_have_masked_choices_after_reset():
    for env_id in MASKED_IDS:
        assert not all(row.all() for row in _mask_rows(_ready(env_id, "raise"))), env_id


@_settings(40)
@given(env_id=st.sampled_from(MASKED_IDS), data=st.data())
def test_masked_choices_raise_in_raise_mode_and_change_nothing(env_id, data):
    env = _ready(env_id, "raise")
    before = _state(env)
    action, bad = _with_masked_choices(data.draw, _mask_rows(env))
    assert env.action_space.contains(action)
    decision, index = _where(env, bad[0])
    with pytest.raises(InvalidAction, match=rf"{decision} action\[{index}\]={action[bad[0]]} is masked out"):
        env.step(action)
    assert _state(env) == before


@_settings(12)
@given(env_id=st.sampled_from(MASKED_IDS), seed=st.sampled_from([0, 1]), data=st.data())
def test_masked_choices_are_replaced_penalised_and_listed_by_default(env_id, seed, data):
    env, twin = (gym.make(env_id, preset="tiny", env__max_rounds=3) for _ in range(2))
    env.reset(seed=seed)
    rows = _mask_rows(env)
    action, bad = _with_masked_choices(data.draw, rows)
    obs, reward, _, _, info = env.step(action)
    listed = info["invalid_actions"]
    assert [(x["decision"], x["index"], x["choice"]) for x in listed] == [
        (*_where(env, i), int(action[i])) for i in bad
    ]
    replaced = action.copy()
    for i, x in zip(bad, listed):
        assert rows[i][x["replaced_by"]], f"dimension {i} replaced by a masked choice {x}"
        replaced[i] = x["replaced_by"]
    penalty = env.unwrapped.core.config.invalid_penalty
    assert info["reward_terms"]["invalid"] == pytest.approx(-penalty * len(bad))
    # the round is the one the replacements give, with the penalty on top
    twin.reset(seed=seed)
    obs2, reward2, _, _, info2 = twin.step(replaced)
    assert info2["invalid_actions"] == []
    assert all(np.array_equal(obs[k], obs2[k]) for k in obs)
    assert reward == pytest.approx(reward2 - penalty * len(bad), abs=1e-12)

"""Configuration of the federated round: local training, events, privacy, attacks, inference.

All frozen dataclasses, validated on construction; a scenario carries one
:class:`FederationConfig` (``make_scenario("tiny", federation__local_steps=4)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hffm_env._validation import (
    MAX_BYTES,
    MAX_COUNT,
    MAX_CYCLES,
    MAX_DURATION_S,
    MAX_FACTOR,
    ConfigError,
    check_choice,
    check_int,
    check_non_negative,
    check_positive,
    check_range_pair,
    check_real,
)

RULES = ("mean", "trimmed_mean", "median", "krum", "multi_krum")
ATTACKS = ("sign_flip", "scaling", "noise", "label_flip")
GOSSIP_WEIGHTS = ("metropolis", "laplacian")
OUTAGE_FALLBACKS = ("d2d", "cloud", "skip")
MAX_REQUESTS_PER_DEVICE = 1e4  # a device asking this much per round is a server


def _check_rate(field_name: str, value) -> None:
    check_real(field_name, value, low=0.0, high=1.0)


@dataclass(frozen=True)
class EventConfig:
    """Per-device, per-round probabilities of the events of paper Sec. V-B.

    ``task_arrival``: the device gets a task of the suite it did not hold (one its
    modalities allow), with a fresh shard drawn from the task's pool; ``modality_off``
    / ``modality_on``: a sensed modality is switched off (its tasks pause) or a
    switched-off one comes back; ``leave`` / ``join``: an active device leaves, an
    inactive one joins (as a new device: its modules start from scratch). Every
    module a node needs and has never trained starts *cold* and is reported as a
    cold-start event that a relay can serve.
    """

    task_arrival: float = 0.0
    modality_off: float = 0.0
    modality_on: float = 0.0
    leave: float = 0.0
    join: float = 0.0

    def __post_init__(self) -> None:
        for name in ("task_arrival", "modality_off", "modality_on", "leave", "join"):
            _check_rate(f"events.{name}", getattr(self, name))


@dataclass(frozen=True)
class PrivacyConfig:
    """Module-level DP-FedAvg on uploads: each participant's update (its module minus
    the copy it last received) is clipped to L2 norm ``clip_norm``; Gaussian noise of
    std ``noise_multiplier · clip_norm · max(w)/Σw`` (``w``: the aggregation weights;
    ``z·C/m`` for equal weights) is added to the first-level aggregate. ``clip_norm``
    None switches it off."""

    clip_norm: float | None = None
    noise_multiplier: float = 0.0

    def __post_init__(self) -> None:
        if self.clip_norm is not None:
            check_positive("privacy.clip_norm", self.clip_norm, MAX_FACTOR)
        check_non_negative("privacy.noise_multiplier", self.noise_multiplier, MAX_FACTOR)
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise ConfigError("privacy.noise_multiplier > 0 needs privacy.clip_norm (the noise scales with it)")


@dataclass(frozen=True)
class AdversaryConfig:
    """Adversarial devices drawn at reset: a ``fraction`` of the devices run ``attack``.

    ``sign_flip`` sends ``−strength ×`` its update, ``scaling`` ``strength ×`` its
    update, ``noise`` its update plus Gaussian noise of std ``strength``;
    ``label_flip`` trains on flipped labels (answer ``a`` → ``A−1−a``). Attacks act on
    everything the device sends: uploads for aggregation and the modules it relays.
    ``strength`` is at most 1000 (beyond it float32 modules overflow).
    """

    fraction: float = 0.0
    attack: str = "sign_flip"
    strength: float = 1.0

    def __post_init__(self) -> None:
        _check_rate("adversaries.fraction", self.fraction)
        check_choice("adversaries.attack", self.attack, ATTACKS)
        check_real("adversaries.strength", self.strength, low=0.0, high=1000.0)


@dataclass(frozen=True)
class FaultConfig:
    """Node faults during a round, drawn when it begins (link faults live in
    ``network.faults``). The agent decides before they strike; ``info["faults"]``
    reports each one afterwards.

    ``dropout_before_upload``: a participant trains (and pays for it) and then drops
    out before uploading: it misses the round's aggregations and keeps its own copy.
    ``dropout_after_upload``: its upload counts, but it drops before the result
    comes back: it keeps its own copy and no download is charged to it.
    ``straggler_fraction`` of the devices run ``straggler_slowdown`` times slower this
    round (a shared CPU); with ``round_deadline_s`` a participant whose training takes
    longer misses the round's aggregations (the round waits up to the deadline).
    ``edge_outage``: an edge server that is up goes down for the round with this
    probability; a down one comes back with probability ``edge_repair`` per round.
    While down, its cluster's edge- and cloud-level aggregations take
    ``outage_fallback``: ``"d2d"`` (consensus at the cluster head), ``"cloud"`` (the
    devices reach the cloud over ``network.direct_uplink``) or ``"skip"``; relays and
    inference requests that need the server fail.
    """

    dropout_before_upload: float = 0.0
    dropout_after_upload: float = 0.0
    straggler_fraction: float = 0.0
    straggler_slowdown: float = 4.0
    round_deadline_s: float | None = None
    edge_outage: float = 0.0
    edge_repair: float = 1.0
    outage_fallback: str = "d2d"

    def __post_init__(self) -> None:
        for name in ("dropout_before_upload", "dropout_after_upload", "straggler_fraction", "edge_outage"):
            _check_rate(f"faults.{name}", getattr(self, name))
        check_real("faults.straggler_slowdown", self.straggler_slowdown, low=1.0, high=MAX_FACTOR)
        if self.round_deadline_s is not None:
            check_positive("faults.round_deadline_s", self.round_deadline_s, MAX_DURATION_S)
        check_real("faults.edge_repair", self.edge_repair, low=0.0, high=1.0, low_inclusive=False)
        check_choice("faults.outage_fallback", self.outage_fallback, OUTAGE_FALLBACKS)

    @property
    def any(self) -> bool:
        return bool(
            self.dropout_before_upload
            or self.dropout_after_upload
            or self.straggler_fraction
            or self.round_deadline_s is not None
            or self.edge_outage
        )


@dataclass(frozen=True)
class InferenceConfig:
    """Collaborative inference (paper Sec. V-D).

    Each active device draws Poisson(``requests_per_device``) requests per round. A
    share ``foreign_fraction`` of them is for a task the device does not hold (one its
    modules were never trained for: a user asks something new), with an input from
    that task's held-out samples; the rest are on one of its own tasks with an input
    from its held-out shard. Where a request runs decides which copy answers it: a
    device answering a task it does not hold answers with untrained modules, while a
    peer, edge server or cloud that holds a trained copy answers well. Running a request
    takes ``cycles_per_inference`` CPU cycles at the node that serves it; the input
    (its modalities' raw bytes) and ``answer_bytes`` travel between requester and
    server. A device can host the model only if its memory (drawn per device from
    ``device_memory_bytes_range``) holds ``model_bytes`` (None: the real backbone and
    modules, as float32).
    """

    requests_per_device: float = 0.0
    foreign_fraction: float = 0.5
    cycles_per_inference: float = 2.0e8
    answer_bytes: float = 16.0
    model_bytes: float | None = None
    device_memory_bytes_range: tuple[float, float] = (1.0e6, 8.0e6)

    def __post_init__(self) -> None:
        check_non_negative("inference.requests_per_device", self.requests_per_device, MAX_REQUESTS_PER_DEVICE)
        check_real("inference.foreign_fraction", self.foreign_fraction, low=0.0, high=1.0)
        check_positive("inference.cycles_per_inference", self.cycles_per_inference, MAX_CYCLES)
        check_non_negative("inference.answer_bytes", self.answer_bytes, MAX_BYTES)
        if self.model_bytes is not None:
            check_positive("inference.model_bytes", self.model_bytes, MAX_BYTES)
        check_range_pair(
            "inference.device_memory_bytes_range", self.device_memory_bytes_range, low_inclusive=True, high=MAX_BYTES
        )


@dataclass(frozen=True)
class FederationConfig:
    """One federated round.

    Local training: every participating device runs ``local_steps`` AdamW steps of
    batch ``batch_size`` on its own shards, or, when ``local_epochs`` is set,
    ``local_epochs`` passes over them (``ceil(E·n/batch_size)`` steps per task shard of
    ``n`` samples, as the reference trains one epoch per round in batches of 8; a
    device with more data trains and pays for more steps) (a ``participation`` fraction of the active
    devices, drawn each round; specialists always take part, and train the modules
    they own ``specialist_steps`` more steps after uploading, while the aggregations
    run, paying the compute). ``experts_per_device`` (None: all) is how many of
    the MoE experts a device trains, drawn once per device. ``payload_scale``
    multiplies every module's real byte size on the wire (1 charges the real bank;
    the ``paper`` preset scales to the reference's 6 MB of adapters and heads).
    ``rule`` is the default aggregation rule (``trim_fraction`` of each end for the
    trimmed mean, ``krum_f`` Byzantine nodes assumed by Krum). ``bucket_size`` s > 1
    makes a robust rule combine bucket means instead of single contributions: each
    aggregation randomly splits its ``m`` contributions into ``ceil(m/s)`` buckets of
    at most s and hands the rule their sample-weighted means (bucketing, Karimireddy,
    He & Jaggi, ICLR 2022). On non-IID shards this shrinks the spread between honest
    inputs that Krum mistakes for an attack, while ``f`` attackers still corrupt at
    most ``f`` buckets (``krum_f`` is then read as a number of buckets). 1, the
    default, is no bucketing; the mean is never bucketed (it would not change), and
    gossip consensus applies no rule. Gossip uses ``gossip_weights`` for
    ``gossip_rounds`` rounds unless an operation says otherwise.
    ``specialists_contribute``: specialists' updates enter aggregations
    (their own copies are never overwritten, and they are charged no download).
    A cold start (a module a device needs and never trained, after a task arrival, a
    modality switched on or a join) lasts until the module is relayed to the device,
    or until the device has trained it from scratch on its own data for
    ``cold_start_rounds`` rounds; until then the device is outside that module's
    aggregations (its data does not reach the federation and it receives nothing). ``eval_max_samples`` caps the held-out
    samples per device and task evaluated each round (the first ones of the shard;
    None: all).
    """

    local_steps: int = 2
    local_epochs: float | None = None
    batch_size: int = 8
    participation: float = 1.0
    specialist_steps: int = 1
    cold_start_rounds: int = 5
    experts_per_device: int | None = None
    payload_scale: float = 1.0
    rule: str = "mean"
    trim_fraction: float = 0.25
    krum_f: int = 1
    bucket_size: int = 1
    gossip_rounds: int = 5
    gossip_weights: str = "metropolis"
    specialists_contribute: bool = True
    eval_max_samples: int | None = None
    keep_ledger_rounds: int | None = 64
    events: EventConfig = field(default_factory=EventConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    adversaries: AdversaryConfig = field(default_factory=AdversaryConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        check_int("federation.local_steps", self.local_steps, low=0, high=MAX_COUNT)
        if self.local_epochs is not None:
            check_real("federation.local_epochs", self.local_epochs, low=0.0, high=100.0, low_inclusive=False)
        check_int("federation.batch_size", self.batch_size, low=1, high=MAX_COUNT)
        check_real("federation.participation", self.participation, low=0.0, high=1.0, low_inclusive=False)
        check_int("federation.specialist_steps", self.specialist_steps, low=0, high=MAX_COUNT)
        check_int("federation.cold_start_rounds", self.cold_start_rounds, low=1, high=MAX_COUNT)
        if self.experts_per_device is not None:
            check_int("federation.experts_per_device", self.experts_per_device, low=1, high=MAX_COUNT)
        check_positive("federation.payload_scale", self.payload_scale, MAX_FACTOR)
        check_choice("federation.rule", self.rule, RULES)
        check_real("federation.trim_fraction", self.trim_fraction, low=0.0, high=0.5, high_inclusive=False)
        check_int("federation.krum_f", self.krum_f, low=0, high=MAX_COUNT)
        check_int("federation.bucket_size", self.bucket_size, low=1, high=MAX_COUNT)
        check_int("federation.gossip_rounds", self.gossip_rounds, low=1, high=MAX_COUNT)
        check_choice("federation.gossip_weights", self.gossip_weights, GOSSIP_WEIGHTS)
        if not isinstance(self.specialists_contribute, bool):
            raise ConfigError(
                f"federation.specialists_contribute must be True or False, got {self.specialists_contribute!r}"
            )
        if self.eval_max_samples is not None:
            check_int("federation.eval_max_samples", self.eval_max_samples, low=1, high=MAX_COUNT)
        if self.keep_ledger_rounds is not None:
            check_int("federation.keep_ledger_rounds", self.keep_ledger_rounds, low=1, high=MAX_COUNT)
        for name, cls in (
            ("events", EventConfig),
            ("privacy", PrivacyConfig),
            ("adversaries", AdversaryConfig),
            ("inference", InferenceConfig),
            ("faults", FaultConfig),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"federation.{name} must be a {cls.__name__}, got {getattr(self, name)!r}")

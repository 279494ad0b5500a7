"""Aggregation schedules as communication patterns, and the seven schedules of Table I.

A schedule says, for each round, which level of the hierarchy aggregates: tier 1
(edge servers, or the cluster heads over D2D when ``d2d``) every ``periods[0]``
rounds, tier 2 every ``periods[1]`` rounds, and so on; a level that aggregates
implies every level below it does too. ``star`` sends every device's modules
straight to the top tier each round.

``charge_round`` prices one round of a schedule on a :class:`FogNetwork`: it is the
communication part of a federated round, and the federation layer calls it with
the payload of the modules it actually moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hffm_env._validation import ConfigError, check_int
from hffm_env.network.charging import Payload
from hffm_env.network.fog import FogNetwork
from hffm_env.network.ledger import Ledger


@dataclass(frozen=True)
class AggregationSchedule:
    """Which tiers aggregate in which round.

    ``periods[k-1]`` is the period (in rounds) of aggregation at tier ``k``; None means
    never. Rounds count from 1, so with ``periods=(1, 2)`` the cloud aggregates in
    rounds 2, 4, …. ``d2d=True`` replaces tier-1 aggregation by D2D gather to the
    cluster heads and broadcast back; ``star=True`` ignores ``periods`` and aggregates
    every round at the top tier only.
    """

    name: str
    periods: tuple[int | None, ...] = (1,)
    d2d: bool = False
    star: bool = False

    def __post_init__(self) -> None:
        if not self.star:
            if not self.periods or self.periods[0] is None:
                raise ConfigError(
                    f"periods must start with a period for tier 1 (an integer >= 1), got {self.periods!r}"
                )
            for i, p in enumerate(self.periods):
                if p is not None:
                    check_int(f"periods[{i}]", p, low=1)
            known = [p for p in self.periods if p is not None]
            if any(b % a for a, b in zip(known[:-1], known[1:])):
                raise ConfigError(f"periods must each divide the next (nested aggregation), got {self.periods!r}")

    def level(self, round_number: int) -> int:
        """Highest tier that aggregates in round ``round_number`` (1-based); 0 if none."""
        level = 0
        for k, p in enumerate(self.periods, start=1):
            if p is not None and round_number % p == 0:
                level = k
        return level


def table1_keys(global_periods: tuple[int, ...] = (2, 8)) -> tuple[str, ...]:
    """The keys of the paper's Table I schedules, with E_agg in ``global_periods``."""
    return (
        ("star", "edge_only", "edge_only_d2d")
        + tuple(f"hfm_{e}" for e in global_periods)
        + tuple(f"hfm_d2d_{e}" for e in global_periods)
    )


# the seven schedules of Table I, by key: the one list every layer names them by
TABLE1_KEYS = table1_keys()


def schedule_from_key(key: str) -> AggregationSchedule:
    """``star``, ``edge_only``, ``edge_only_d2d``, ``hfm_<E>`` or ``hfm_d2d_<E>`` (Table
    I), or ``edge_every_<k>`` / ``d2d_every_<k>``: edge aggregation, or D2D consensus at
    the cluster heads, every ``k``-th round only and no global aggregation (periodic
    averaging: devices train alone in between)."""
    if key == "star":
        return AggregationSchedule("FFM star topology", star=True)
    if key == "edge_only":
        return AggregationSchedule("FFM edge aggregation only", periods=(1, None))
    if key == "edge_only_d2d":
        return AggregationSchedule("FFM edge aggregation only + D2D", periods=(1, None), d2d=True)
    m = re.fullmatch(r"hfm(_d2d)?_(\d+)", key)
    if m and int(m.group(2)) >= 1:
        e, d2d = int(m.group(2)), bool(m.group(1))
        return AggregationSchedule(f"HF-FM{'+D2D' if d2d else ''} (E_agg={e})", periods=(1, e), d2d=d2d)
    m = re.fullmatch(r"(edge|d2d)_every_(\d+)", key)
    if m and int(m.group(2)) >= 1:
        k, d2d = int(m.group(2)), m.group(1) == "d2d"
        return AggregationSchedule(
            f"{'D2D consensus' if d2d else 'edge aggregation'} every {k} rounds", periods=(k, None), d2d=d2d
        )
    raise ValueError(
        f"schedule must be star, edge_only, edge_only_d2d, hfm_<E>, hfm_d2d_<E>, edge_every_<k> or "
        f"d2d_every_<k>, got {key!r}"
    )


def table1_schedules(global_periods: tuple[int, ...] = (2, 8)) -> dict[str, AggregationSchedule]:
    """The seven fixed schedules of the paper's Table I (E_agg in ``global_periods``)."""
    return {k: schedule_from_key(k) for k in table1_keys(global_periods)}


def _carriers(net: FogNetwork, senders: np.ndarray, level: int) -> list[np.ndarray]:
    """For tiers 1..``level``: the nodes with a sender below them, as one id array per tier."""
    topo = net.topology
    out = []
    below = np.unique(senders)
    for k in range(1, level + 1):
        below = np.unique(topo.parent[below])
        out.append(below)
    return out


def _charge_star(net: FogNetwork, ledger: Ledger, payload: Payload, devices: np.ndarray, receivers: np.ndarray) -> None:
    topo = net.topology
    if net.config.direct_uplink is not None:
        net.charge_direct_upload(ledger, "upload:star", payload, devices)
        if net.config.charge_downlink:
            net.charge_direct_download(ledger, "download:star", payload, receivers)
        return
    # No direct link: every model climbs the hierarchy un-aggregated.
    under = np.zeros(topo.n_nodes)
    under[devices] = 1.0
    net.charge_upload(ledger, "upload:tier1", payload, devices)
    carriers = _carriers(net, devices, net.config.n_tiers - 1)
    for k in range(1, net.config.n_tiers - 1):
        ids = topo.tier_ids(k)
        below = topo.tier_ids(k - 1)
        under[ids] = np.bincount(topo.parent[below] - ids[0], weights=under[below], minlength=len(ids))
        net.charge_upload(ledger, f"upload:tier{k + 1}", payload, carriers[k - 1], copies=under[carriers[k - 1]])
    if net.config.charge_downlink:
        for k in range(net.config.n_tiers - 2, 0, -1):
            net.charge_download(ledger, f"download:tier{k + 1}", payload, carriers[k - 1])
        net.charge_download(ledger, "download:tier1", payload, receivers)


def charge_aggregation(
    net: FogNetwork,
    ledger: Ledger,
    payload: Payload,
    level: int,
    *,
    d2d: bool = False,
    star: bool = False,
    devices=None,
) -> None:
    """Charge one aggregation of ``payload`` by the participating ``devices`` (all by
    default) up to tier ``level`` and back down.

    ``level=1`` aggregates at the tier-1 node of each cluster (the edge server), or,
    with ``d2d``, at the cluster head by D2D gather and broadcast; ``level=k`` carries
    the tier-1 aggregates up to tier ``k`` (with ``d2d`` the heads, not the devices,
    talk to the edge server). ``star`` sends every participant's modules straight to
    the top tier (over ``direct_uplink``, else up the hierarchy un-aggregated).

    Clusters proceed independently up to the tier-2 aggregation (one stage grouped by
    cluster: the latency is the slowest cluster's chain, not the sum of network-wide
    maxima); every aggregation above tier 2, and the way back down from it, is a
    network-wide stage of its own. Only the nodes with a participant below them
    send or receive.
    """
    charge_aggregation_parts(net, ledger, [(payload, devices)], level, d2d=d2d, star=star)


def charge_aggregation_parts(
    net: FogNetwork, ledger: Ledger, parts, level: int, *, d2d: bool = False, star: bool = False
) -> None:
    """:func:`charge_aggregation` of several module groups at once, each
    ``(payload, devices)`` with its own participants (e.g. a task head and the devices
    holding that task), or ``(payload, devices, receivers)`` when only some of the
    senders get the result back (the others dropped out after uploading). Devices send
    and receive each group they take part in; a server sends what all the groups
    below it hold as one transfer."""
    topo = net.topology

    def ids(d):
        return np.arange(topo.n_devices) if d is None else np.unique(np.asarray(d, dtype=np.int64))

    parts = [(p[0], ids(p[1]), ids(p[2] if len(p) > 2 else p[1])) for p in parts]
    parts = [p for p in parts if p[1].size]
    if not parts:
        return
    if star:
        for payload, devices, receivers in parts:
            _charge_star(net, ledger, payload, devices, receivers)
        return
    n_levels = net.config.n_tiers - 1
    check_int("level", level, low=1, high=n_levels)
    down = net.config.charge_downlink
    stage = "aggregate"
    senders_of = []
    for payload, devices, receivers in parts:
        if d2d:
            # D2D consensus replaces tier-1 aggregation; the heads carry it further up.
            heads = topo.heads[np.unique(topo.cluster[devices])]
            senders_of.append(heads[heads >= 0])
            net.charge_d2d_gather(ledger, stage, payload, devices=devices, step="d2d:gather")
            if level == 1 and receivers.size:
                net.charge_d2d_broadcast(ledger, stage, payload, devices=receivers, step="d2d:broadcast")
        else:
            senders_of.append(devices)
    if d2d and level == 1:
        return
    for (payload, _, _), senders in zip(parts, senders_of):
        net.charge_upload(ledger, stage, payload, senders, group=topo.cluster[senders], step="upload:tier1")
    # above tier 1 a server forwards one aggregate of everything its subtree holds
    merged: dict[str, float] = {}
    for payload, _, _ in parts:
        merged.update(payload)
    carriers = _carriers(net, np.concatenate([d for _, d, _ in parts]), level)
    edges = carriers[0]  # tier-1 nodes with a participant
    edge_group = edges - topo.tier_offsets[1]  # cluster index of each tier-1 node
    if level >= 2:
        net.charge_upload(ledger, stage, merged, edges, group=edge_group, step="upload:tier2")
    for k in range(3, level + 1):
        net.charge_upload(ledger, f"upload:tier{k}", merged, carriers[k - 2])
    if not down:
        return
    for k in range(level, 2, -1):
        net.charge_download(ledger, f"download:tier{k}", merged, carriers[k - 2])
    if level >= 2:
        stage = "distribute"
        net.charge_download(ledger, stage, merged, edges, group=edge_group, step="download:tier2")
    for (payload, _, receivers), senders in zip(parts, senders_of):
        if not d2d:
            senders = receivers
        net.charge_download(ledger, stage, payload, senders, group=topo.cluster[senders], step="download:tier1")
        if d2d and receivers.size:
            net.charge_d2d_broadcast(ledger, stage, payload, devices=receivers, step="d2d:broadcast")


def charge_round(
    net: FogNetwork, ledger: Ledger, schedule: AggregationSchedule, round_number: int, payload: Payload
) -> int:
    """Charge the communication of one round of ``schedule`` (every device taking
    part) into ``ledger``'s open round; see :func:`charge_aggregation`. Returns the
    highest tier that aggregated (the top tier's index for star, 0 for none)."""
    if schedule.star:
        charge_aggregation(net, ledger, payload, net.config.n_tiers - 1, star=True)
        return net.config.n_tiers - 1
    n_levels = net.config.n_tiers - 1
    if len(schedule.periods) > n_levels:
        raise ConfigError(
            f"schedule {schedule.name!r} has {len(schedule.periods)} periods but the network has "
            f"only {n_levels} tiers above the devices"
        )
    level = schedule.level(round_number)
    if level:
        charge_aggregation(net, ledger, payload, level, d2d=schedule.d2d)
    return level


def charge_schedule(
    net: FogNetwork, schedule: AggregationSchedule, rounds: int, payload: Payload, ledger: Ledger | None = None
) -> Ledger:
    """Charge ``rounds`` rounds of a schedule's communication on ``net`` (fading redrawn
    each round), no training: the cost side of :func:`hffm_env.federation.schedules.run_schedule`."""
    check_int("rounds", rounds, low=1)
    ledger = ledger if ledger is not None else Ledger()
    for r in range(1, rounds + 1):
        net.new_round()
        ledger.begin_round(net.round_index)
        charge_round(net, ledger, schedule, r, payload)
        ledger.end_round()
    return ledger

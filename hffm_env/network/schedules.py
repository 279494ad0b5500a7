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

from dataclasses import dataclass

import numpy as np

from hffm_env._validation import ConfigError, check_int
from hffm_env.network.fog import FogNetwork, Payload
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
                raise ConfigError(f"periods must start with a period for tier 1 (an integer >= 1), got {self.periods!r}")
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


def table1_schedules(global_periods: tuple[int, ...] = (2, 8)) -> dict[str, AggregationSchedule]:
    """The seven fixed schedules of the paper's Table I (E_agg in ``global_periods``)."""
    out = {
        "star": AggregationSchedule("FFM star topology", star=True),
        "edge_only": AggregationSchedule("FFM edge aggregation only", periods=(1, None)),
        "edge_only_d2d": AggregationSchedule("FFM edge aggregation only + D2D", periods=(1, None), d2d=True),
    }
    for e in global_periods:
        out[f"hfm_{e}"] = AggregationSchedule(f"HF-FM (E_agg={e})", periods=(1, e))
    for e in global_periods:
        out[f"hfm_d2d_{e}"] = AggregationSchedule(f"HF-FM+D2D (E_agg={e})", periods=(1, e), d2d=True)
    return out


def _charge_star(net: FogNetwork, ledger: Ledger, payload: Payload) -> None:
    topo = net.topology
    devices = np.arange(topo.n_devices)
    if net.config.direct_uplink is not None:
        net.charge_direct_upload(ledger, "upload:star", payload, devices)
        if net.config.charge_downlink:
            net.charge_direct_download(ledger, "download:star", payload, devices)
        return
    # No direct link: every model climbs the hierarchy un-aggregated.
    under = np.ones(topo.n_nodes)
    net.charge_upload(ledger, "upload:tier1", payload, devices)
    for k in range(1, net.config.n_tiers - 1):
        ids = topo.tier_ids(k)
        under[ids] = np.bincount(topo.parent[topo.tier_ids(k - 1)] - ids[0], weights=under[topo.tier_ids(k - 1)],
                                 minlength=len(ids))
        active = topo.active_ids(k)
        net.charge_upload(ledger, f"upload:tier{k + 1}", payload, active, copies=under[active])
    if net.config.charge_downlink:
        for k in range(net.config.n_tiers - 2, -1, -1):
            net.charge_download(ledger, f"download:tier{k + 1}", payload, topo.active_ids(k))


def charge_round(net: FogNetwork, ledger: Ledger, schedule: AggregationSchedule, round_number: int,
                 payload: Payload) -> int:
    """Charge the communication of one round of ``schedule`` into ``ledger``'s open round.

    Clusters proceed independently up to the tier-2 aggregation (one stage, grouped
    by cluster: the round's latency is the slowest cluster's chain, not the sum of
    network-wide maxima); every aggregation above tier 2, and the way back down from
    it, is a network-wide stage of its own. Returns the highest tier that aggregated
    (the top tier's index for star).
    """
    if schedule.star:
        _charge_star(net, ledger, payload)
        return net.config.n_tiers - 1
    topo = net.topology
    n_levels = net.config.n_tiers - 1
    if len(schedule.periods) > n_levels:
        raise ConfigError(f"schedule {schedule.name!r} has {len(schedule.periods)} periods but the network has "
                          f"only {n_levels} tiers above the devices")
    level = schedule.level(round_number)
    if level == 0:
        return 0
    down = net.config.charge_downlink
    edges = topo.active_ids(1)                          # tier-1 nodes whose cluster is not empty
    edge_group = edges - topo.tier_offsets[1]           # cluster index of each tier-1 node
    if schedule.d2d:
        # D2D consensus replaces tier-1 aggregation; the heads carry it further up.
        senders = topo.heads[topo.heads >= 0]
        stage = "aggregate"
        net.charge_d2d_gather(ledger, stage, payload, step="d2d:gather")
        if level == 1:
            net.charge_d2d_broadcast(ledger, stage, payload, step="d2d:broadcast")
            return level
    else:
        senders = np.arange(topo.n_devices)
        stage = "aggregate"
    sender_group = topo.cluster[senders]
    net.charge_upload(ledger, stage, payload, senders, group=sender_group, step="upload:tier1")
    if level >= 2:
        net.charge_upload(ledger, stage, payload, edges, group=edge_group, step="upload:tier2")
    for k in range(3, level + 1):
        net.charge_upload(ledger, f"upload:tier{k}", payload, topo.active_ids(k - 1))
    if not down:
        return level
    for k in range(level, 2, -1):
        net.charge_download(ledger, f"download:tier{k}", payload, topo.active_ids(k - 1))
    if level >= 2:
        stage = "distribute"
        net.charge_download(ledger, stage, payload, edges, group=edge_group, step="download:tier2")
    net.charge_download(ledger, stage, payload, senders, group=sender_group, step="download:tier1")
    if schedule.d2d:
        net.charge_d2d_broadcast(ledger, stage, payload, step="d2d:broadcast")
    return level


def run_schedule(net: FogNetwork, schedule: AggregationSchedule, rounds: int, payload: Payload,
                 ledger: Ledger | None = None) -> Ledger:
    """Run ``rounds`` rounds of a schedule's communication (fading redrawn each round)."""
    check_int("rounds", rounds, low=1)
    ledger = ledger if ledger is not None else Ledger()
    for r in range(1, rounds + 1):
        net.new_round()
        ledger.begin_round(net.round_index)
        charge_round(net, ledger, schedule, r, payload)
        ledger.end_round()
    return ledger

"""The cost ledger: every latency/energy charge of a run, and how charges combine.

A charge is one row ``(round, stage, step, group, lane, module, link, src, dst, bytes,
seconds, joules)``. Rows are stored column-wise in numpy arrays, so charging the
uploads of ten thousand devices is one call and one append.

How charges combine into a round's latency (its critical path):

* the **stages** of a round run one after another (a network-wide barrier), so the
  round's latency is the sum of its stages' latencies;
* inside a stage, **groups** (e.g. clusters) proceed independently: the stage's
  latency is the max over its groups;
* inside a group, **steps** (e.g. gather, then broadcast) run one after another;
* inside a step, **lanes** run in parallel and the rows of one lane in series: a
  lane is a sequence of transfers that cannot overlap, by default one sender (one
  radio sends one thing at a time).

So ``stage latency = max_group sum_step max_lane sum_rows seconds``. With the
defaults (one group, one step) this is the synchronous rule "parallel transfers:
max; one sender's transfers: sum". Energy always adds up. A multi-hop transfer is
one row whose ``seconds`` is its whole path time, in a lane of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

_LABELS = ("stage", "step", "module", "link")
_COLUMNS = _LABELS + ("group", "src", "dst", "lane", "bytes", "seconds", "joules")
_FLOATS = ("bytes", "seconds", "joules")


@dataclass(frozen=True)
class CostTotals:
    """Summed bytes, seconds (sender airtime, not latency) and joules of a group of charges."""

    bytes: float = 0.0
    seconds: float = 0.0
    joules: float = 0.0


@dataclass(frozen=True)
class RoundCost:
    """What one round cost: its latency (critical path), energy, and the breakdowns."""

    round: int
    latency_s: float
    energy_j: float
    stage_latency_s: dict[str, float] = field(default_factory=dict)
    stage_energy_j: dict[str, float] = field(default_factory=dict)
    per_module: dict[str, CostTotals] = field(default_factory=dict)
    per_link: dict[str, CostTotals] = field(default_factory=dict)


def _rows(a: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    """A flat copy of ``a`` broadcast to ``shape`` (``size`` elements)."""
    if a.shape == shape:
        return a.flatten()
    if a.ndim == 0:
        return np.full(size, a, dtype=a.dtype)
    return np.broadcast_to(a, shape).flatten()


class _Codes:
    """Interned labels -> small ints, so string columns store as integer arrays."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.labels: list[str] = []

    def code(self, label: str) -> int:
        if label not in self.index:
            self.index[label] = len(self.labels)
            self.labels.append(label)
        return self.index[label]


class Ledger:
    """Records charges round by round and summarises each round when it closes.

    ``keep_rounds`` bounds how many rounds of raw rows are kept (summaries are always
    kept); ``None`` keeps all, which is what a cost study wants and a long RL run
    does not.
    """

    def __init__(self, keep_rounds: int | None = None):
        if keep_rounds is not None and (not isinstance(keep_rounds, int) or keep_rounds < 1):
            raise ValueError(f"keep_rounds must be None or an integer >= 1, got {keep_rounds!r}")
        self.keep_rounds = keep_rounds
        self._labels = {c: _Codes() for c in _LABELS}
        self._open: list[tuple] = []  # (label codes, rows, then the array columns in _COLUMNS order)
        self._round: int | None = None
        self._rows: dict[int, dict[str, np.ndarray]] = {}
        self.summaries: dict[int, RoundCost] = {}

    # ------------------------------------------------------------------ writing
    @property
    def round(self) -> int | None:
        return self._round

    def begin_round(self, round_index: int) -> None:
        if self._round is not None:
            self.end_round()
        if round_index in self.summaries:
            raise ValueError(f"round {round_index} was already recorded in this ledger")
        self._round = int(round_index)

    def charge(
        self,
        *,
        stage: str,
        module: str,
        link: str,
        src,
        dst,
        nbytes,
        seconds,
        joules,
        lane=None,
        group=0,
        step: str = "",
    ) -> None:
        """Record one row per element of the (broadcast) arrays ``src, dst, nbytes, seconds, joules``.

        ``lane`` (default: ``src``) keys rows that run one after another; ``group``
        (default 0) keys the independent parts of the stage; ``step`` orders the
        phases inside a group (in first-charged order).
        """
        if self._round is None:
            raise RuntimeError("Ledger.charge called outside a round: call begin_round(r) first")
        ints = [np.asarray(a, dtype=np.int64) for a in (group, src, dst, src if lane is None else lane)]
        floats = [np.asarray(a, dtype=np.float64) for a in (nbytes, seconds, joules)]
        shape = np.broadcast_shapes(*(a.shape for a in ints + floats))
        size = math.prod(shape)
        if size == 0:
            return
        # with at least one row, every element of each array appears in the broadcast
        for name, arr in zip(("nbytes", "seconds", "joules"), floats):
            # min >= 0 is False for NaN and -inf, max < inf for +inf
            if not (arr.min() >= 0 and arr.max() < np.inf):
                raise ValueError(f"Ledger.charge: {name} must be finite and >= 0 (stage={stage!r}, module={module!r})")
        codes = tuple(self._labels[c].code(v) for c, v in zip(_LABELS, (stage, step, module, link)))
        # flat copies (never views of the caller's arrays), in _COLUMNS order after the labels
        self._open.append((codes, size, *(_rows(a, shape, size) for a in ints + floats)))

    def end_round(self) -> RoundCost:
        """Close the open round and return its summary."""
        if self._round is None:
            raise RuntimeError("Ledger.end_round called with no open round")
        r = self._round
        if self._open:
            codes, sizes, *arrays = zip(*self._open)
            labels = np.repeat(np.array(codes, dtype=np.int32), sizes, axis=0).T.copy()  # [label, row]
            rows = dict(zip(_LABELS, labels))
            rows.update({c: np.concatenate(a) for c, a in zip(_COLUMNS[len(_LABELS) :], arrays)})
        else:
            rows = {c: np.zeros(0, dtype=np.float64 if c in _FLOATS else np.int64) for c in _COLUMNS}
        self._open = []
        self._round = None
        summary = self._summarise(r, rows)
        self.summaries[r] = summary
        self._rows[r] = rows
        if self.keep_rounds is not None:
            for old in sorted(self._rows)[: -self.keep_rounds]:
                del self._rows[old]
        return summary

    # ------------------------------------------------------------------ reading
    def _summarise(self, r: int, rows: dict[str, np.ndarray]) -> RoundCost:
        stage_lat: dict[str, float] = {}
        stage_en: dict[str, float] = {}
        if rows["seconds"].size:
            # Stages in first-charged order; see the module docstring for the rule.
            stages, first = np.unique(rows["stage"], return_index=True)
            for s in stages[np.argsort(first)]:
                sel = rows["stage"] == s
                g, st, ln, sec = rows["group"][sel], rows["step"][sel], rows["lane"][sel], rows["seconds"][sel]
                g = np.unique(g, return_inverse=True)[1].ravel()
                ln = np.unique(ln, return_inverse=True)[1].ravel()
                n_steps, n_lanes = int(st.max()) + 1, int(ln.max()) + 1
                group_step = g * n_steps + st  # dense keys, no 2-D unique
                lane_keys, lane_key = np.unique(group_step * n_lanes + ln, return_inverse=True)
                lane_busy = np.bincount(lane_key, weights=sec)  # rows of a lane in series
                gs_keys, step_key = np.unique(lane_keys // n_lanes, return_inverse=True)
                step_time = np.zeros(len(gs_keys))
                np.maximum.at(step_time, step_key, lane_busy)  # lanes of a step in parallel
                group_time = np.bincount(gs_keys // n_steps, weights=step_time)  # steps in series
                label = self._labels["stage"].labels[s]
                stage_lat[label] = float(group_time.max())
                stage_en[label] = float(rows["joules"][sel].sum())
        return RoundCost(
            round=r,
            latency_s=float(sum(stage_lat.values())),
            energy_j=float(rows["joules"].sum()),
            stage_latency_s=stage_lat,
            stage_energy_j=stage_en,
            per_module=self._group(rows, "module"),
            per_link=self._group(rows, "link"),
        )

    def _group(self, rows: dict[str, np.ndarray], column: str) -> dict[str, CostTotals]:
        labels = self._labels[column].labels
        codes = rows[column]
        out = {}
        for code in np.unique(codes):
            sel = codes == code
            out[labels[code]] = CostTotals(
                float(rows["bytes"][sel].sum()), float(rows["seconds"][sel].sum()), float(rows["joules"][sel].sum())
            )
        return out

    def records(self, round_index: int) -> dict[str, np.ndarray]:
        """The raw rows of a closed round, with label columns decoded to strings."""
        if round_index not in self._rows:
            kept = sorted(self._rows)
            raise KeyError(
                f"round {round_index} has no kept rows (kept rounds: {kept[:3]}…{kept[-3:]})"
                if kept
                else f"round {round_index} has no kept rows (none kept)"
            )
        rows = self._rows[round_index]
        out = {c: rows[c].copy() for c in _COLUMNS if c not in _LABELS}
        for c in _LABELS:
            out[c] = (
                np.asarray(self._labels[c].labels, dtype=object)[rows[c]] if rows[c].size else np.zeros(0, dtype=object)
            )
        out["round"] = np.full(rows["src"].size, round_index)
        return out

    def mean(self, rounds: list[int] | None = None) -> tuple[float, float]:
        """Mean latency (s) and energy (J) per round over ``rounds`` (all closed rounds by default)."""
        keys = sorted(self.summaries) if rounds is None else rounds
        if not keys:
            raise ValueError("Ledger.mean: no closed rounds")
        lat = np.mean([self.summaries[k].latency_s for k in keys])
        en = np.mean([self.summaries[k].energy_j for k in keys])
        return float(lat), float(en)

    def module_totals(self) -> dict[str, CostTotals]:
        """Bytes, airtime and energy per module over all closed rounds."""
        acc: dict[str, list[float]] = {}
        for s in self.summaries.values():
            for m, t in s.per_module.items():
                a = acc.setdefault(m, [0.0, 0.0, 0.0])
                a[0] += t.bytes
                a[1] += t.seconds
                a[2] += t.joules
        return {m: CostTotals(*a) for m, a in acc.items()}

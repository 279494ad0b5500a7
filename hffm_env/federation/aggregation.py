"""Aggregation as tensor algebra over a bank's holder axis.

A weighted average inside groups of holders is a *mixing matrix* ``M`` (rows: the
holders that receive the result, columns: the contributors) applied to every
parameter of the bank at once: ``bank[name] ← M · bank[name]``, with identity rows
for the holders not involved. Robust rules (coordinate-wise trimmed mean and
median, Krum) are not linear and run per group on the stacked contributions,
optionally on the means of random buckets of them (bucketing).
Gossip weights (Metropolis–Hastings, Laplacian) are doubly stochastic matrices over
a D2D graph; their powers mix towards the group average.

Groups never mix. A dense mixing matrix multiplies every group's zero weights
with every other group's values, which is exact only while those values are
finite (``0·NaN`` is NaN); so a matrix is applied dense only when every
contribution is finite, and otherwise sparse, holding only the entries that link a
holder to its own group (in gossip, to the holders its graph reaches). A
non-finite contribution then spoils its own group only; the federation refuses
such contributions before they get here (:func:`finite_rows`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hffm_env.federation.config import RULES
from hffm_env.model.banks import EXPERT_PARAMS, Bank

DENSE_MIXING_MAX = 1 << 20  # entries up to which a FedAvg mixing matrix of finite values is applied dense


def _mixing_entries(groups: np.ndarray, weights: np.ndarray, target_groups: np.ndarray):
    """Rows, columns and values of the nonzero entries of :func:`mixing_matrix`."""
    groups = np.asarray(groups, dtype=np.int64)
    target_groups = np.asarray(target_groups, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    total = np.bincount(
        groups, weights=weights, minlength=int(max(groups.max(initial=-1), target_groups.max(initial=-1))) + 1
    )
    if np.any(total[np.unique(target_groups)] <= 0):
        raise ValueError("every target's group needs a positive total weight")
    order = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[order], target_groups, side="left")
    counts = np.searchsorted(groups[order], target_groups, side="right") - starts
    rows = np.repeat(np.arange(target_groups.size), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = order[np.repeat(starts, counts) + within]
    return rows, cols, weights[cols] / total[groups[cols]]


def mixing_matrix(
    groups: np.ndarray, weights: np.ndarray, target_groups: np.ndarray, dense: bool = False
) -> torch.Tensor:
    """Sparse (or ``dense``) block ``[n_targets, n_sources]`` of the holder-axis mixing
    matrix: row ``i`` is the ``weights``-weighted mean of the sources in group
    ``target_groups[i]``. The sparse form stores no entry outside that group.

    The full ``[n_holders, n_holders]`` matrix of an aggregation is this block on the
    targets' rows and the sources' columns, and the identity on every other row.
    """
    rows, cols, vals = _mixing_entries(groups, weights, target_groups)
    shape = (np.size(target_groups), np.size(groups))
    if dense:
        out = np.zeros(shape)
        out[rows, cols] = vals  # every (row, column) pair occurs once
        return torch.from_numpy(out)
    idx = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), shape, check_invariants=False).coalesce()


def aggregate_into(
    bank: Bank,
    sent: dict[str, torch.Tensor],
    groups: np.ndarray,
    weights: np.ndarray,
    targets: np.ndarray,
    target_groups: np.ndarray,
    rule: str,
    *,
    expert_mask: np.ndarray | None = None,
    noise_std: float | np.ndarray = 0.0,
    generator: torch.Generator | None = None,
    **rule_args,
) -> dict[str, torch.Tensor]:
    """Write into rows ``targets`` of ``bank`` the combination, by ``rule``, of the
    contributions ``sent[name] [n_sources, ...]`` of their group.

    The mean is the mixing matrix applied to the contributions; the robust rules run
    per group (``rule_args``: see :func:`robust_combine`). ``expert_mask [n_sources,
    E]`` restricts a mean of expert parameters to the sources that train each expert,
    the bucket means of a bucketed robust rule included. ``noise_std`` (one value, or one per
    group) adds one Gaussian draw per group, shared by the group's targets. Returns
    ``name → [n_groups, ...]``.
    """
    names = list(sent)
    groups = np.asarray(groups, dtype=np.int64)
    target_groups = np.asarray(target_groups, dtype=np.int64)
    n_groups = int(max(groups.max(), target_groups.max())) + 1
    rows = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    tg = torch.as_tensor(target_groups)
    per_group_w = np.bincount(groups, weights=weights, minlength=n_groups)
    if rule == "mean":
        # each group's value is the mixing matrix's row for a (virtual) target of that group
        present = np.nonzero(per_group_w > 0)[0]
        # dense is faster for small banks, but exact only on finite values: with a
        # non-finite contribution, sparse rows that hold their own group's sources only
        dense = len(present) * groups.size <= DENSE_MIXING_MAX and finite_rows(sent).all()
        M = mixing_matrix(groups, weights, present, dense=dense)
        by_dtype: dict[torch.dtype, torch.Tensor] = {}
        # with an expert mask the expert parameters are combined over their trainers below
        masked = EXPERT_PARAMS if expert_mask is not None else ()
        combined = {}
        for n in names:
            if n in masked:
                continue
            v = sent[n]
            if v.dtype not in by_dtype:
                by_dtype[v.dtype] = M.to(v.dtype)
            Mv = by_dtype[v.dtype]
            mixed = Mv @ v.reshape(v.shape[0], -1) if dense else torch.sparse.mm(Mv, v.reshape(v.shape[0], -1))
            mixed = mixed.reshape(len(present), *v.shape[1:])
            if len(present) == n_groups:
                combined[n] = mixed
            else:
                combined[n] = torch.zeros(n_groups, *v.shape[1:], dtype=v.dtype)
                combined[n][torch.as_tensor(present)] = mixed
        if expert_mask is not None and any(n in EXPERT_PARAMS for n in names):
            experts = combine_groups(
                {n: sent[n] for n in names if n in EXPERT_PARAMS}, groups, weights, "mean", expert_mask=expert_mask
            )
            combined.update(experts)
    else:
        combined = combine_groups(sent, groups, weights, rule, expert_mask=expert_mask, **rule_args)
    std = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (n_groups,))
    if np.any(std > 0):
        s = torch.tensor(std)
        for n in names:
            c = combined[n]
            z = torch.randn(c.shape, generator=generator, dtype=c.dtype)
            combined[n] = c + s.to(c.dtype).view(-1, *([1] * (c.dim() - 1))) * z
    for n in names:
        bank[n][rows] = combined[n].index_select(0, tg)
    return combined


def robust_combine(
    values: dict[str, torch.Tensor],
    rule: str,
    weights: torch.Tensor,
    *,
    trim_fraction: float = 0.2,
    krum_f: int = 1,
    bucket_size: int = 1,
    bucket_generator: torch.Generator | None = None,
    expert_mask: np.ndarray | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Combine ``m`` contributions (``values[name] [m, ...]``) into one by ``rule``.

    ``mean`` is weighted; ``trimmed_mean`` drops ``floor(trim_fraction·m)`` values at
    each end of every coordinate; ``median`` is the coordinate-wise median (mean of
    the two middle values for even ``m``); ``krum`` keeps the one contribution whose
    summed squared distance to its ``m − f − 2`` nearest others is smallest (all
    parameters together as one vector); ``multi_krum`` averages, by ``weights``, the
    ``m − f`` contributions with the smallest such scores (Blanchard et al., 2017).
    The other robust rules ignore the weights, as the usual implementations do.

    ``bucket_size`` s > 1 (robust rules only) first replaces the contributions by
    the ``m' = ceil(m/s)`` :func:`bucket_means` of a random permutation drawn from
    ``bucket_generator`` (required then), weighted by their members' total weight;
    the rule runs on those, with ``m'`` in place of ``m`` (``krum_f`` counts
    buckets). ``expert_mask [m, E]`` (which contributions train each MoE expert):
    a bucket's expert is the mean of its members that train it, as in FedAvg; without
    buckets, trimmed mean and median run each expert over the contributions that train
    it (over all when none does). Krum and Multi-Krum score whole contributions and
    ignore it.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    if bucket_size > 1 and rule != "mean":
        values, weights = bucket_means(values, weights, bucket_size, bucket_generator, expert_mask)
    m = next(iter(values.values())).shape[0]
    if rule == "mean":
        w = weights / weights.sum()
        return {n: torch.tensordot(w.to(v.dtype), v, dims=1) for n, v in values.items()}
    if rule in ("krum", "multi_krum"):
        if m == 1:
            return {n: v[0] for n, v in values.items()}
        flat = torch.cat([v.reshape(m, -1) for v in values.values()], dim=1)
        d = torch.cdist(flat, flat).pow(2)
        k = max(m - krum_f - 2, 1)
        score = torch.sort(d, dim=1).values[:, 1 : k + 1].sum(dim=1)
        if rule == "krum":
            best = int(torch.argmin(score))
            return {n: v[best] for n, v in values.items()}
        keep = torch.argsort(score)[: max(m - krum_f, 1)]
        w = weights[keep] / weights[keep].sum()
        return {n: torch.tensordot(w.to(v.dtype), v[keep], dims=1) for n, v in values.items()}
    out = {}
    trains = None if expert_mask is None or bucket_size > 1 else torch.as_tensor(np.asarray(expert_mask, dtype=bool))
    if trains is not None and bool(trains.all()):
        trains = None  # every contribution trains every expert: the plain rule, to the bit
    for n, v in values.items():
        if trains is not None and n in EXPERT_PARAMS:
            # each expert over the contributions that train it (all of them when none does)
            out[n] = torch.stack(
                [
                    _coordinate_rule(v[:, e][trains[:, e]] if trains[:, e].any() else v[:, e], rule, trim_fraction)
                    for e in range(v.shape[1])
                ]
            )
        else:
            out[n] = _coordinate_rule(v, rule, trim_fraction)
    return out


def _coordinate_rule(v: torch.Tensor, rule: str, trim_fraction: float) -> torch.Tensor:
    """Trimmed mean or median over the first axis of ``v``, coordinate by coordinate."""
    m = v.shape[0]
    s = torch.sort(v, dim=0).values
    if rule == "trimmed_mean":
        cut = int(math.floor(trim_fraction * m))
        return s[cut : m - cut].mean(dim=0)
    lo, hi = (m - 1) // 2, m // 2
    return 0.5 * (s[lo] + s[hi])


def bucket_means(
    values: dict[str, torch.Tensor],
    weights: torch.Tensor,
    bucket_size: int,
    generator: torch.Generator | None,
    expert_mask: np.ndarray | torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Bucketing (Karimireddy, He & Jaggi, ICLR 2022): permute the ``m`` contributions
    with ``generator``, cut the permutation into ``ceil(m/bucket_size)`` consecutive
    buckets (the last may be smaller) and return each bucket's ``weights``-weighted
    mean ``[m', ...]`` with its members' total weight ``[m']``.

    With ``expert_mask [m, E]`` a bucket's expert parameters average only the
    members that train each expert (all members when none does), as the mean does.
    The permutation comes only from ``generator``, never from the global stream.
    """
    if generator is None:
        raise ValueError("bucketing needs a generator for its permutation (bucket_generator)")
    m = weights.shape[0]
    n_buckets = -(-m // bucket_size)
    bucket = torch.empty(m, dtype=torch.int64)
    bucket[torch.randperm(m, generator=generator)] = torch.arange(m) // bucket_size
    w = weights.to(torch.float64)
    member_w = torch.zeros(n_buckets, m, dtype=torch.float64)
    member_w[bucket, torch.arange(m)] = w  # [m', m]: a mixing matrix, unnormalised
    bucket_w = member_w.sum(1)
    mix = member_w / bucket_w[:, None]
    out = {n: torch.tensordot(mix.to(v.dtype), v, dims=1) for n, v in values.items()}
    experts = [n for n in values if n in EXPERT_PARAMS]
    if expert_mask is not None and experts:
        ew = member_w[:, :, None] * torch.as_tensor(np.asarray(expert_mask), dtype=torch.float64)[None]  # [m', m, E]
        total = ew.sum(1, keepdim=True)
        ew = torch.where(total > 0, ew / total.clamp(min=1e-300), mix[:, :, None].expand_as(ew))
        for n in experts:
            v = values[n]
            flat = v.reshape(m, v.shape[1], -1)
            out[n] = torch.einsum("bme,mex->bex", ew.to(v.dtype), flat).reshape(n_buckets, *v.shape[1:])
    return out, bucket_w.to(weights.dtype)


def combine_groups(
    sent: dict[str, torch.Tensor],
    groups: np.ndarray,
    weights: np.ndarray,
    rule: str,
    expert_mask: np.ndarray | None = None,
    **rule_args,
) -> dict[str, torch.Tensor]:
    """Per group ``g``: the combination by ``rule`` of the contributions ``sent[name][groups == g]``.

    Returns ``name → [n_groups, ...]`` (a group without sources is all zeros). With
    ``expert_mask [n_sources, E]`` a mean of expert parameters averages only the
    sources that train each expert (an expert none of them trains gets their plain
    weighted mean); so does a bucket mean of a bucketed robust rule.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    names = list(sent)
    out = {n: torch.zeros(n_groups, *sent[n].shape[1:], dtype=sent[n].dtype) for n in names}
    w_all = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    for g in np.unique(groups):
        sel = torch.as_tensor(np.nonzero(groups == g)[0])
        vals = {n: sent[n][sel] for n in names}
        w = w_all[sel]
        if expert_mask is not None and rule == "mean":
            combined = {}
            mask = torch.as_tensor(np.asarray(expert_mask)[sel.numpy()], dtype=torch.float64)  # [m, E]
            ew = mask * w[:, None]
            has = ew.sum(0) > 0
            ew = torch.where(has[None], ew / ew.sum(0).clamp(min=1e-300), (w / w.sum())[:, None].expand_as(ew))
            for n, v in vals.items():
                if n in EXPERT_PARAMS:
                    combined[n] = (ew.to(v.dtype).view(*ew.shape, *([1] * (v.dim() - 2))) * v).sum(0)
                else:
                    combined[n] = torch.tensordot((w / w.sum()).to(v.dtype), v, dims=1)
        else:
            mask = None if expert_mask is None else np.asarray(expert_mask)[sel.numpy()]
            combined = robust_combine(vals, rule, w, expert_mask=mask, **rule_args)
        for n in names:
            out[n][int(g)] = combined[n]
    return out


def finite_rows(values: dict[str, torch.Tensor]) -> np.ndarray:
    """Whether each contribution (row) of ``values [m, ...]`` is finite in every
    parameter: bool ``[m]``."""
    m = next(iter(values.values())).shape[0]
    ok = torch.ones(m, dtype=torch.bool)
    for v in values.values():
        ok &= torch.isfinite(v.reshape(m, -1)).all(1)
    return ok.numpy()


# ---------------------------------------------------------------------- gossip
def gossip_matrix(n: int, edges: np.ndarray, kind: str = "metropolis") -> np.ndarray:
    """Doubly stochastic gossip weights ``W [n, n]`` over an undirected graph of ``n`` nodes.

    ``metropolis``: ``w_ij = 1/(1 + max(d_i, d_j))`` on edges, ``w_ii = 1 − Σ_j w_ij``;
    ``laplacian``: ``W = I − L/(2·max degree)`` (``I`` when there are no edges).
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    deg = np.bincount(edges.ravel(), minlength=n).astype(np.float64)
    W = np.zeros((n, n))
    if kind == "metropolis":
        w = 1.0 / (1.0 + np.maximum(deg[edges[:, 0]], deg[edges[:, 1]]))
        W[edges[:, 0], edges[:, 1]] = w
        W[edges[:, 1], edges[:, 0]] = w
        W[np.arange(n), np.arange(n)] = 1.0 - W.sum(axis=1)
    elif kind == "laplacian":
        if len(edges) == 0:
            return np.eye(n)
        L = np.diag(deg)
        L[edges[:, 0], edges[:, 1]] -= 1.0
        L[edges[:, 1], edges[:, 0]] -= 1.0
        W = np.eye(n) - L / (2.0 * deg.max())
    else:
        raise ValueError(f"gossip weights must be 'metropolis' or 'laplacian', got {kind!r}")
    return W


def gossip_average(
    W: np.ndarray, rounds: int, weights: np.ndarray, values: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``rounds`` of weighted gossip over ``W [m, m]`` on ``values[name] [m, ...]``:
    ``W^r`` mixes ``w·x`` and ``w``; their ratio tends to the ``weights``-weighted
    average of each connected group of the ``m`` nodes. Computed in float64, returned
    in each value's dtype.

    With a non-finite value among them ``W^r`` is applied sparse: a node then mixes
    only the values that ``rounds`` hops bring it, never a zero weight times a value
    from beyond (``0·NaN`` is NaN)."""
    Wr = torch.as_tensor(np.linalg.matrix_power(W, rounds))
    if not finite_rows(values).all():
        Wr = Wr.to_sparse()
    wt = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    den = Wr @ wt
    out = {}
    for n, x in values.items():
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        out[n] = ((Wr @ (wt[:, None] * flat)) / den[:, None]).reshape(x.shape).to(x.dtype)
    return out


def consensus_rate(W: np.ndarray) -> float:
    """Spectral radius of ``W − 11ᵀ/n``: the distance to the average shrinks by this
    factor per gossip round (on a connected graph it is < 1)."""
    n = W.shape[0]
    return float(np.max(np.abs(np.linalg.eigvals(W - np.full((n, n), 1.0 / n))))) if n else 0.0


# ---------------------------------------------------------------------- updates sent
def clip_updates(updates: dict[str, torch.Tensor], clip_norm: float) -> dict[str, torch.Tensor]:
    """Scale each row's update (all names together) to L2 norm at most ``clip_norm``."""
    m = next(iter(updates.values())).shape[0]
    norm = torch.sqrt(sum(u.reshape(m, -1).pow(2).sum(1) for u in updates.values()))
    factor = torch.clamp(clip_norm / norm.clamp(min=1e-12), max=1.0)
    return {n: u * factor.view(m, *([1] * (u.dim() - 1))).to(u.dtype) for n, u in updates.items()}


def attack_updates(
    updates: dict[str, torch.Tensor], attack: str, strength: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """What an adversary sends instead of its honest ``updates`` (label flipping acts
    on training, not here)."""
    if attack == "sign_flip":
        return {n: -strength * u for n, u in updates.items()}
    if attack == "scaling":
        return {n: strength * u for n, u in updates.items()}
    if attack == "noise":
        return {n: u + strength * torch.randn(u.shape, generator=generator, dtype=u.dtype) for n, u in updates.items()}
    return updates

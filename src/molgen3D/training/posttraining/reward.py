"""The post-training reward of one group of rollouts (one molecule), as pure functions of its RMSD matrix.

`D` is L x G: the molecule's reference conformers (rows) x the group's rollouts (columns), NaN
where no RMSD exists. The terms (FACTS 12, the original's v3 reward):
- invalid rollout (failed sample, PoseBusters failure when gated, no finite RMSD): the `floor`, nothing else;
- quality: exp(-d_i / sigma), d_i = RMSD of rollout i to its nearest reference;
- coverage: soft hit kernel K_ij = sigmoid((delta - D_ij) / rho); reference j's soft coverage is
  1 - prod_i (1 - K_ij); rollout i earns K_ij prod_(l != i) (1 - K_lj) ("marginal", what losing
  rollout i costs reference j), optionally times the depth weight 1 + w clip(1 - D_ij / delta, 0, 1),
  averaged over references. Those credits sum to the mean soft coverage only when at most one
  rollout hits each reference; `shapley` splits each reference's soft coverage among its rollouts
  by their Shapley values, which sum to it exactly;
- precision: sigmoid((delta - d_i) / rho);
- matching: reference j's match is max_i exp(-D_ij / sigma), the quality of its nearest rollout (what
  MAT-R measures, on the quality scale); rollout i earns what the mean match over references would
  lose without it, i.e. its lead over the second-nearest rollout of each reference it is nearest to.
  Unlike the coverage kernel it is never flat: a rollout that brings any reference closer earns.
Weights and the other terms (stereo, PoseBusters, MMFF) are combined in `combine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CREDITS = ("marginal", "shapley")


def soft_hits(rmsd: np.ndarray, delta: float, rho: float) -> np.ndarray:
    """K_ij = sigmoid((delta - D_ij) / rho); NaN RMSD (no match) is no hit."""
    d = np.asarray(rmsd, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        k = 1.0 / (1.0 + np.exp(-(delta - d) / rho))
    return np.where(np.isfinite(d), k, 0.0)


def soft_coverage(rmsd: np.ndarray, delta: float, rho: float) -> np.ndarray:
    """Per reference j: 1 - prod_i (1 - K_ij)."""
    return 1.0 - np.prod(1.0 - soft_hits(rmsd, delta, rho), axis=1)


def _others_product(k: np.ndarray) -> np.ndarray:
    """prod_(l != i) (1 - K_lj) for every (j, i), without dividing by a factor that may be 0."""
    miss = 1.0 - k
    out = np.empty_like(k)
    for i in range(k.shape[1]):
        out[:, i] = np.prod(np.delete(miss, i, axis=1), axis=1)
    return out


def _shapley_factor(k: np.ndarray) -> np.ndarray:
    """E over random orders of prod over the rollouts before i of (1 - K_lj) = int_0^1 prod_(l != i) (1 - t K_lj) dt.

    The integrand is a polynomial of degree G - 1 in t, so Gauss-Legendre with G // 2 + 1 nodes is exact.
    """
    nodes, weights = np.polynomial.legendre.leggauss(k.shape[1] // 2 + 1)
    t, w = (nodes + 1.0) / 2.0, weights / 2.0
    out = np.zeros_like(k)
    for tq, wq in zip(t, w):
        out += wq * _others_product(tq * k)
    return out


def coverage_credit(
    rmsd: np.ndarray, delta: float, rho: float, *, credit: str = "marginal", depth_weight: float = 0.0
) -> np.ndarray:
    """Per rollout i: mean over references j of its coverage credit (see the module docstring)."""
    if credit not in CREDITS:
        raise ValueError(f"coverage credit {credit!r}: use one of {CREDITS}")
    d = np.asarray(rmsd, dtype=float)
    if d.shape[0] == 0 or d.shape[1] == 0:
        return np.zeros(d.shape[1])
    k = soft_hits(d, delta, rho)
    share = k * (_others_product(k) if credit == "marginal" else _shapley_factor(k))
    if depth_weight:
        with np.errstate(invalid="ignore"):
            depth = 1.0 + depth_weight * np.clip(1.0 - d / delta, 0.0, 1.0)
        share = share * np.where(np.isfinite(d), depth, 1.0)
    return share.mean(axis=0)


def matching_credit(rmsd: np.ndarray, sigma: float) -> np.ndarray:
    """Per rollout i: mean over references j of max_l q_lj - max_(l != i) q_lj, q = exp(-D / sigma) (NaN: 0)."""
    d = np.asarray(rmsd, dtype=float)
    n = d.shape[1]
    if d.shape[0] == 0 or n == 0:
        return np.zeros(n)
    q = np.where(np.isfinite(d), np.exp(-np.where(np.isfinite(d), d, 0.0) / sigma), 0.0)
    if n == 1:
        return q.mean(axis=0)
    order = np.argsort(-q, axis=1, kind="stable")
    rows = np.arange(q.shape[0])
    lead = q[rows, order[:, 0]] - q[rows, order[:, 1]]
    credit = np.zeros_like(q)
    credit[rows, order[:, 0]] = lead
    return credit.mean(axis=0)


@dataclass(frozen=True)
class GroupTerms:
    """Per-rollout reward terms of one group (unweighted); `valid` False rows carry only the floor."""

    valid: np.ndarray
    floor: np.ndarray
    quality: np.ndarray
    coverage: np.ndarray
    precision: np.ndarray
    matching: np.ndarray


def group_terms(
    rmsd: np.ndarray,
    valid: np.ndarray,
    *,
    floor: float,
    sigma: float,
    delta: float,
    rho: float,
    credit: str = "marginal",
    depth_weight: float = 0.0,
) -> GroupTerms:
    """The geometric terms of every rollout of one molecule.

    A rollout is scored when `valid` says so and it has a finite RMSD to some reference; the
    others get `floor` and zero elsewhere, and are left out of the coverage of the rest (a
    failed sample covers nothing, so it changes no one's marginal credit).
    """
    d = np.asarray(rmsd, dtype=float)
    valid = np.asarray(valid, dtype=bool) & (np.isfinite(d).any(axis=0) if d.shape[0] else False)
    n = d.shape[1]
    nearest = np.full(n, np.inf)
    if valid.any():
        nearest[valid] = np.nanmin(d[:, valid], axis=0)
    quality = np.where(valid, np.exp(-nearest / sigma), 0.0)
    with np.errstate(over="ignore"):
        precision = np.where(valid, 1.0 / (1.0 + np.exp(-(delta - np.where(valid, nearest, 0.0)) / rho)), 0.0)
    coverage, matching = np.zeros(n), np.zeros(n)
    if valid.any():
        coverage[valid] = coverage_credit(d[:, valid], delta, rho, credit=credit, depth_weight=depth_weight)
        matching[valid] = matching_credit(d[:, valid], sigma)
    return GroupTerms(
        valid=valid,
        floor=np.where(valid, 0.0, floor),
        quality=quality,
        coverage=coverage,
        precision=precision,
        matching=matching,
    )

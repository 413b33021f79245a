"""Geometry-aware decoding's rules: where an atom may be written given the atoms before it.

RDKit's distance-geometry bounds matrix (the bounds ETKDG embeds within and PoseBusters checks against)
gives every heavy-atom pair of a molecule a least and a greatest distance: bonds and angles (pairs one and
two bonds apart) tightly, pairs three bonds apart by their torsion range, farther pairs a van der Waals
floor; triangle smoothing carries a ring's closure into the upper bounds of the atoms written before it, so
the atoms leading up to a ring-closing atom already stay within reach of its partner. Widened by a slack,
the bounds are the rule: atom L's distance to each earlier atom j within [lo_jL, hi_jL].

Atom L is written as three numbers v (x, y, z of its frame: `position = base + axes.T @ v`, axes orthonormal
in every format), so with q_j = axes @ (p_j - base) the distance to j is |v - q_j|. Given the numbers written
so far, each number gets an allowed set: the first two only what the greatest distances leave (the later
numbers could still land anywhere), the last one exactly: inside every j's shell [lo_j, hi_j], a union of
at most two intervals per j.
"""

from __future__ import annotations

import math

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDistGeom
from rdkit.rdBase import BlockLogs

NEAR_SLACK = 0.05
"""Relative widening of the bounds of pairs one or two bonds apart (bond lengths, angles): 99.9% of the demo's
test reference pairs lie inside, PoseBusters flags a bond only beyond 20%."""
FAR_SLACK = 0.10
"""Relative widening for pairs three or more bonds apart (clash floors, ring reach): with both, 95% of the demo's
test reference conformers have every pair inside (90% with 0.05 for all pairs)."""

Intervals = list[tuple[float, float]]
"""Sorted disjoint closed intervals; [] is the empty set."""
EVERYTHING: Intervals = [(-math.inf, math.inf)]


def distance_bounds(smiles: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(least, greatest) allowed distance of every heavy-atom pair of `smiles` (atoms in SMILES order), widened
    by `NEAR_SLACK`/`FAR_SLACK`, and the pairs' bond counts; None when RDKit cannot parse or bound the molecule."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() < 2:
            return None
        try:
            bounds = rdDistGeom.GetMoleculeBoundsMatrix(mol, set15bounds=True, scaleVDW=True, doTriangleSmoothing=True)
        except (RuntimeError, ValueError):
            return None
    upper, lower = np.triu(bounds, 1), np.tril(bounds, -1)
    hops = Chem.GetDistanceMatrix(mol)
    slack = np.where(hops <= 2, NEAR_SLACK, FAR_SLACK)
    return (lower + lower.T) * (1 - slack), (upper + upper.T) * (1 + slack), hops


RELAXED = ("all pairs", "no clash floors", "bonds only")
"""What each level of `relaxed` keeps: a step where no value keeps one level's bounds tries the next."""


def relaxed(lo: np.ndarray, hi: np.ndarray, hops: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of one level: 0 all; 1 without the floors of pairs three or more bonds apart; 2 bonds only."""
    if level == 0:
        return lo, hi
    if level == 1:
        return np.where(hops <= 2, lo, 0.0), hi
    return np.where(hops == 1, lo, 0.0), np.where(hops == 1, hi, np.inf)


def number_intervals(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, known: list[float]) -> Intervals:
    """The allowed set of atom L's next number (index len(known)) given the earlier atoms at `q` [m, 3] in L's
    frame and their distance bounds `lo`, `hi` [m]."""
    if not len(q):
        return EVERYTHING
    k = len(known)
    spent = sum((v - q[:, i]) ** 2 for i, v in enumerate(known)) if k else np.zeros(len(q))
    room = hi**2 - spent
    if (room < 0).any():
        return []
    reach = np.sqrt(room)
    a, b = float(np.max(q[:, k] - reach)), float(np.min(q[:, k] + reach))
    if a > b:
        return []
    if k < 2:
        return [(a, b)]
    floor = np.sqrt(np.clip(lo**2 - spent, 0.0, None))
    holes = sorted((float(c - r), float(c + r)) for c, r in zip(q[:, k], floor) if r > 0)
    out, start = [], a
    for h0, h1 in holes:
        if h0 > start:
            out.append((start, min(h0, b)))
        start = max(start, h1)
        if start >= b:
            break
    if start < b:
        out.append((start, b))
    return [(x, y) for x, y in out if x < y]


def third_possible(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, first, seconds: np.ndarray) -> np.ndarray:
    """Per second number in `seconds` [N] (after `first`, one value or one per second): whether some third
    number keeps every bound, i.e. whether `number_intervals(q, lo, hi, [first, second])` is not empty."""
    first = np.asarray(first, dtype=float).reshape(-1, 1)
    spent = (first - q[:, 0]) ** 2 + (np.asarray(seconds, dtype=float)[:, None] - q[:, 1]) ** 2
    room = hi**2 - spent
    reach = np.sqrt(np.clip(room, 0.0, None))
    a, b = np.max(q[:, 2] - reach, axis=1), np.min(q[:, 2] + reach, axis=1)
    floor = np.sqrt(np.clip(lo**2 - spent, 0.0, None))
    h0, h1 = q[:, 2] - floor, q[:, 2] + floor
    points = np.concatenate([a[:, None], b[:, None], h0, h1], axis=1)
    inside = ((points[:, :, None] > h0[:, None, :]) & (points[:, :, None] < h1[:, None, :])).any(axis=2)
    free = ~inside & (points >= a[:, None]) & (points <= b[:, None])
    return (room >= 0).all(axis=1) & (a <= b) & free.any(axis=1)


def second_possible(q: np.ndarray, hi: np.ndarray, firsts: np.ndarray, grid: int = 24) -> np.ndarray:
    """Per first number in `firsts` [N]: whether some second number (on a grid of its allowed interval) leaves a
    third within every greatest distance (the floors are left to the second number's own look-ahead, which
    is exact: this one runs for every candidate first number and stays cheap)."""
    firsts = np.asarray(firsts, dtype=float)
    room1 = hi**2 - (firsts[:, None] - q[:, 0]) ** 2  # [N, m]
    reach1 = np.sqrt(np.clip(room1, 0.0, None))
    a, b = np.max(q[:, 1] - reach1, axis=1), np.min(q[:, 1] + reach1, axis=1)
    ok = (room1 >= 0).all(axis=1) & (a <= b)
    span = np.where(np.isfinite(b - a), b - a, 0.0)
    seconds = np.where(np.isfinite(a), a, q[:, 1].mean())[:, None] + span[:, None] * np.linspace(0, 1, grid)
    room = room1[:, None, :] - (seconds[:, :, None] - q[:, 1]) ** 2  # [N, G, m]
    reach = np.sqrt(np.clip(room, 0.0, None))
    lo3, hi3 = np.max(q[:, 2] - reach, axis=2), np.min(q[:, 2] + reach, axis=2)
    return ok & ((room >= 0).all(axis=2) & (lo3 <= hi3)).any(axis=1)


def intersect(first: Intervals, second: Intervals) -> Intervals:
    """The intersection of two allowed sets."""
    out = []
    for a0, a1 in first:
        for b0, b1 in second:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo < hi:
                out.append((lo, hi))
    return sorted(out)

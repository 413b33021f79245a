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

PLANE_TOLERANCE = 0.1
"""A: an aromatic ring atom is written within this of the plane of three atoms of its ring written before it
(PoseBusters flags an aromatic ring whose atoms lie over 0.25 A from their best plane)."""

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


RELAXED = ("all pairs", "no clash floors", "bonds only", "within the atom's greatest bound")
"""What each level of `relaxed` keeps: a step where no value keeps one level's bounds tries the next."""


def relaxed(
    lo: np.ndarray, hi: np.ndarray, hops: np.ndarray, level: int, reach: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of one level: 0 all; 1 without the floors of pairs three or more bonds apart; 2 bonds only;
    3 no floors, every pair within `reach` (the atom's greatest bound to an earlier atom: where no bond length
    can be kept, it still lands near the others, never hundreds of angstroms away)."""
    if level == 0:
        return lo, hi
    if level == 1:
        return np.where(hops <= 2, lo, 0.0), hi
    if level == 2:
        return np.where(hops == 1, lo, 0.0), np.where(hops == 1, hi, np.inf)
    return np.zeros_like(lo), np.full_like(hi, reach)


def ring_planes(smiles: str) -> dict[int, tuple[int, int, int]]:
    """Per aromatic ring atom written after three atoms of its ring: the first three of them, whose plane the
    atom must stay near (atoms in SMILES order; each atom gets the first such ring)."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    planes: dict[int, tuple[int, int, int]] = {}
    if mol is None:
        return planes
    for ring in mol.GetRingInfo().AtomRings():
        if not all(mol.GetAtomWithIdx(a).GetIsAromatic() for a in ring):
            continue
        order = sorted(ring)
        for atom in order[3:]:
            planes.setdefault(atom, (order[0], order[1], order[2]))
    return planes


def plane_interval(normal: np.ndarray, offset: float, known: list[float]) -> Intervals:
    """Atom L's third number keeping |offset + normal . v| <= PLANE_TOLERANCE (v: its numbers, `normal` in its
    frame); the first two are left free (the third can still bring the atom back to the plane)."""
    if len(known) < 2:
        return EVERYTHING
    s = offset + float(normal[0] * known[0] + normal[1] * known[1])
    w = float(normal[2])
    if abs(w) < 1e-6:
        return EVERYTHING if abs(s) <= PLANE_TOLERANCE else []
    a, b = (-PLANE_TOLERANCE - s) / w, (PLANE_TOLERANCE - s) / w
    return [(min(a, b), max(a, b))]


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


def third_possible(
    q: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    first,
    seconds: np.ndarray,
    plane: tuple | None = None,
    floors: np.ndarray | None = None,
) -> np.ndarray:
    """Per second number in `seconds` [N] (after `first`, one value or one per second): whether some third
    number keeps every bound, i.e. whether `number_intervals(q, lo, hi, [first, second])` is not empty, and,
    with `plane` = (normal, offset) as for `plane_interval`, meets that too. `floors`: the only atoms whose
    least distance is checked (default all)."""
    first = np.asarray(first, dtype=float).reshape(-1, 1)
    seconds = np.asarray(seconds, dtype=float)
    spent = (first - q[:, 0]) ** 2 + (seconds[:, None] - q[:, 1]) ** 2
    room = hi**2 - spent
    reach = np.sqrt(np.clip(room, 0.0, None))
    a, b = np.max(q[:, 2] - reach, axis=1), np.min(q[:, 2] + reach, axis=1)
    if plane is not None:
        normal, offset = plane
        s = offset + normal[0] * first[:, 0] + normal[1] * seconds
        if abs(normal[2]) < 1e-6:
            b = np.where(np.abs(s) <= PLANE_TOLERANCE, b, -np.inf)
        else:
            ends = np.stack([(-PLANE_TOLERANCE - s) / normal[2], (PLANE_TOLERANCE - s) / normal[2]])
            a, b = np.maximum(a, ends.min(axis=0)), np.minimum(b, ends.max(axis=0))
    if floors is not None:
        lo, spent, q = lo[floors], spent[:, floors], q[floors]
    floor = np.sqrt(np.clip(lo**2 - spent, 0.0, None))
    h0, h1 = q[:, 2] - floor, q[:, 2] + floor
    points = np.concatenate([a[:, None], b[:, None], h0, h1], axis=1)
    inside = ((points[:, :, None] > h0[:, None, :]) & (points[:, :, None] < h1[:, None, :])).any(axis=2)
    free = ~inside & (points >= a[:, None]) & (points <= b[:, None])
    return (room >= 0).all(axis=1) & (a <= b) & free.any(axis=1)


def second_possible(
    q: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    firsts: np.ndarray,
    plane: tuple | None = None,
    floors: np.ndarray | None = None,
    grid: int = 24,
) -> np.ndarray:
    """Per first number in `firsts` [N]: whether some second number (on a grid of its allowed interval) leaves a
    third as `third_possible` asks (pass `floors` = the atoms one or two bonds away to keep it cheap: it runs
    for every candidate first number, and the second number's own look-ahead checks every floor)."""
    firsts = np.asarray(firsts, dtype=float)
    room1 = hi**2 - (firsts[:, None] - q[:, 0]) ** 2  # [N, m]
    reach1 = np.sqrt(np.clip(room1, 0.0, None))
    a, b = np.max(q[:, 1] - reach1, axis=1), np.min(q[:, 1] + reach1, axis=1)
    ok = (room1 >= 0).all(axis=1) & (a <= b)
    span = np.where(np.isfinite(b - a) & ok, b - a, 0.0)
    start = np.where(np.isfinite(a), a, q[:, 1].mean())
    seconds = start[:, None] + span[:, None] * np.linspace(0, 1, grid)  # [N, G]
    room = third_possible(q, lo, hi, np.repeat(firsts, grid), seconds.ravel(), plane, floors)
    return ok & room.reshape(len(firsts), grid).any(axis=1)


def intersect(first: Intervals, second: Intervals) -> Intervals:
    """The intersection of two allowed sets."""
    out = []
    for a0, a1 in first:
        for b0, b1 in second:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo < hi:
                out.append((lo, hi))
    return sorted(out)

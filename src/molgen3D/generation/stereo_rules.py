"""The prompt's stereo by construction: the number that decides a centre's handedness or a double bond's
cis/trans may only take values that give the prompt's.

Each stereo element the prompt's SMILES specifies becomes a `StereoRule`: a quantity of four atoms'
positions whose sign is the stereo, the signed volume of a tetrahedral centre's first three bonded
neighbours (RDKit's rule: `@` positive, `@@` negative; with an implicit H the three heavy neighbours) or,
for a double bond a=b with neighbours x of a and y of b, the projection of x-a on y-b across the bond
(positive = cis). Both are affine in the position of any one of their atoms (the double bond's only in x
or y), and a position is affine in each number written for it in every format (absolute, relative, and
local: `base + axes.T @ (x, y, z)`, the axes built from atoms written before). So once the rule's last
written atom L has its first two numbers, its third must lie in an interval, here a half-line per rule.

`coordinate_guard.CoordinateGuard` enforces the intervals while the numbers are written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.rdBase import BlockLogs


MARGIN = {"centre": 0.3, "double_bond": 0.2}
"""Least |quantity| written (A^3 for a centre's volume, ~2.3 when ideal; A^2 for a double bond's projection,
~1.7): RDKit perceives no stereo from a volume under 0.1, and a near-flat centre is no centre."""


@dataclass(frozen=True)
class StereoRule:
    """`sign * value(positions) > MARGIN[kind]` realises one specified centre or double bond."""

    kind: str
    """'centre' (atoms: centre, n1, n2, n3) or 'double_bond' (atoms: x, a, b, y)."""
    atoms: tuple[int, int, int, int]
    sign: int

    @property
    def last(self) -> int:
        """The atom written last (atoms are numbered in writing order)."""
        return max(self.atoms)

    def value(self, pos: dict[int, np.ndarray]) -> float:
        p = [pos[a] for a in self.atoms]
        if self.kind == "centre":
            return float(np.linalg.det(np.stack([p[1] - p[0], p[2] - p[0], p[3] - p[0]])))
        x, a, b, y = p
        axis = (b - a) / max(float(np.linalg.norm(b - a)), 1e-9)
        side = (x - a) - axis * float(np.dot(axis, x - a))
        return float(np.dot(side, y - b))


def stereo_rules(smiles: str) -> tuple[list[StereoRule], int]:
    """The rules of every centre and double bond `smiles` specifies, and how many specified ones got none
    (a double bond whose a or b is written after every usable neighbour; a molecule ETKDG cannot embed)."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return [], 0
    rules, skipped = [], 0
    for atom in mol.GetAtoms():
        tag = atom.GetChiralTag()
        if tag not in (Chem.ChiralType.CHI_TETRAHEDRAL_CCW, Chem.ChiralType.CHI_TETRAHEDRAL_CW):
            continue
        nbrs = [b.GetOtherAtomIdx(atom.GetIdx()) for b in atom.GetBonds()]
        if len(nbrs) < 3:
            skipped += 1
            continue
        sign = 1 if tag == Chem.ChiralType.CHI_TETRAHEDRAL_CCW else -1
        rules.append(StereoRule("centre", (atom.GetIdx(), *nbrs[:3]), sign))
    bonds = [b for b in mol.GetBonds() if b.GetStereo() != Chem.BondStereo.STEREONONE]
    if bonds:
        pos = _embedded(mol)
        for bond in bonds:
            rule = _double_bond_rule(mol, bond, pos)
            skipped += rule is None
            if rule is not None:
                rules.append(rule)
    return rules, skipped


def _embedded(mol: Chem.Mol) -> np.ndarray | None:
    """Heavy-atom positions of one ETKDG conformer (it keeps the SMILES' double-bond stereo), None on failure."""
    withh = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = 7
    if AllChem.EmbedMolecule(withh, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(withh, params) != 0:
            return None
    return withh.GetConformer().GetPositions()[: mol.GetNumAtoms()]


def _double_bond_rule(mol: Chem.Mol, bond: Chem.Bond, pos: np.ndarray | None) -> StereoRule | None:
    """The neighbours written earliest that leave x or y written last; the sign read off an embedding."""
    if pos is None:
        return None
    a, b = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
    xs = [n.GetIdx() for n in mol.GetAtomWithIdx(a).GetNeighbors() if n.GetIdx() != b]
    ys = [n.GetIdx() for n in mol.GetAtomWithIdx(b).GetNeighbors() if n.GetIdx() != a]
    pairs = sorted(((x, y) for x in xs for y in ys), key=lambda xy: max(xy))
    for x, y in pairs:
        if max(x, y) > b:
            probe = StereoRule("double_bond", (x, a, b, y), 1)
            value = probe.value({i: pos[i] for i in probe.atoms})
            if abs(value) < MARGIN["double_bond"]:
                return None
            return StereoRule("double_bond", (x, a, b, y), 1 if value > 0 else -1)
    return None


REACH = 2.0
"""A: the numbers not written yet are assumed within this of the parent (|offset| of a bonded atom < 2 A)
when a rule is enforced on an earlier number of L."""


def stereo_interval(rules: list[StereoRule], frame, known: list[float], largest: float) -> tuple[float, float]:
    """(lo, hi): the open interval of L's next number (index len(known)) given the ones before.

    A rule binds this number when it moves the rule's quantity most among the numbers left (always the
    last one); the numbers after it are then taken at their worst within `REACH` of the parent. Every rule
    also keeps the number where the later ones (up to `largest`) can still give its sign."""
    placed, base, axes, centre = frame
    k = len(known)
    lo, hi = -np.inf, np.inf
    v0 = np.array([*known, *centre[k:]])
    for rule in rules:
        pos = {a: placed[a] for a in rule.atoms if a != rule.last}

        def f(v, rule=rule, pos=pos):
            pos[rule.last] = base + axes.T @ v
            return rule.sign * rule.value(pos)

        f0 = f(v0)
        slopes = [f(v0 + np.eye(3)[j]) - f0 for j in range(3)]
        slope, later = slopes[k], slopes[k + 1 :]
        # some values of the later numbers (within the grammar's range) must still give the sign ...
        exists = MARGIN[rule.kind] - f0 + slope * centre[k]
        exists -= sum(abs(s) * largest - s * c for s, c in zip(later, centre[k + 1 :]))
        needs = [(exists, False)]
        # ... and the number that moves the quantity most gives it for any later ones within REACH (where the
        # grammar's range allows: an earlier number far off can leave that to the later ones)
        if k == 2 or abs(slope) >= max(map(abs, later)):
            needs.append((MARGIN[rule.kind] - f0 + slope * centre[k] + sum(map(abs, later)) * REACH, k < 2))
        for need, optional in needs:
            if abs(slope) < 1e-9:
                if need >= 0 and not optional:
                    return np.inf, -np.inf
            elif optional and abs(need / slope) >= largest and (need / slope > 0) == (slope > 0):
                continue
            elif slope > 0:
                lo = max(lo, need / slope)
            else:
                hi = min(hi, need / slope)
    return lo, hi

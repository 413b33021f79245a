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

`StereoGuard` marks the table rows from which a token can write into L's third number (its own states,
the `,` before it and the end of the number before that). A decode step keeps its tensor path; only the
positions standing on a marked row (a handful of steps per sample) go through `restrict`, which rebuilds
the row's positions from its text, as `coordinate_format` decodes them, and keeps the candidate tokens
whose text can still end in the interval. When no candidate can, all are kept and the step is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.coordinate_format import COORDINATE_BLOCK, from_local, from_relative, local_axes, smiles_parents
from molgen3D.generation.decode_tables import GrammarTables, _Pool

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


def _pieces(prefix: str, decimals: int, max_int: int, extend: bool = True) -> list[tuple[float, float]]:
    """Closed intervals holding every number the grammar can still write after `prefix` (no sign: either);
    `extend` False: the integer part written so far is complete."""
    neg = prefix.startswith("-")
    rest = prefix[1:] if neg else prefix
    step = 10.0**-decimals
    if "." in rest:
        ip, fp = rest.split(".")
        mags = [(float(f"{ip}.{fp.ljust(decimals, '0')}"), float(f"{ip}.{fp.ljust(decimals, '9')}"))]
    elif rest == "":
        mags = [(0.0, 10.0**max_int - step)]
    elif rest == "0":
        mags = [(0.0, 1.0 - step)]
    else:
        d, more = int(rest), (max_int - len(rest) if extend else 0)
        mags = [(d * 10.0**k, (d + 1) * 10.0**k - step) for k in range(more + 1)]
    mirrored = [(-hi, -lo) for lo, hi in mags]
    return mirrored if neg else mags + mirrored if prefix == "" else mags


class StereoGuard:
    """Per table row of `tables`: which decider (rules sharing a last atom) its tokens may write for (-1: none)."""

    def __init__(self, tables: GrammarTables, positions: str | None):
        self.tables = tables
        self.positions = positions or "absolute"
        self.decider = _Pool(np.int64, tables.device, fill=-1)
        self.deciders: list[tuple[int, int, list[StereoRule]]] = []
        """(grammar index, last atom L, rules whose last atom is L)."""
        self._parents: dict[int, list[int]] = {}
        self._done = 0
        self._memo: dict[tuple, tuple] = {}
        self._digits: dict[int, bool] = {}
        self.rules = 0
        self.skipped = 0
        """Specified centres and double bonds left unguarded (see `stereo_rules`)."""
        self.fallback_steps = 0
        """Guarded steps where no candidate could give the prompt's stereo (all kept)."""

    def update(self) -> None:
        """Mark the rows of grammars added to the tables since the last call."""
        tables = self.tables
        self.decider.reserve(tables.shared_off.size - self.decider.size)
        accepting = np.flatnonzero(tables.dfa.accepting)
        n_sub = len(tables.dfa.accepting)
        for g in range(self._done, len(tables.grammars)):
            grammar, base = tables.grammars[g], tables.bases[g]
            rules, skipped = stereo_rules(grammar.smiles)
            self.rules += len(rules)
            self.skipped += skipped
            by_last: dict[int, list[StereoRule]] = {}
            for rule in rules:
                by_last.setdefault(rule.last, []).append(rule)
            for last, group in by_last.items():
                k = len(self.deciders)
                self.deciders.append((g, last, group))
                for item in range(1 + 6 * last, 6 + 6 * last, 2):  # L's numbers, with the literal and number before
                    lit = len(grammar.literals[(item - 1) // 2])
                    rows = [
                        grammar.item_base[item] + np.arange(n_sub),
                        grammar.item_base[item - 1] + np.arange(lit),
                        grammar.item_base[item - 2] + accepting,
                    ]
                    self.decider.host[base + np.concatenate(rows)] = k
        self._done = len(tables.grammars)
        self.decider.sync()

    def restrict(self, positions: list[int], state, buf, ntok, ids, entries, valid) -> None:
        """Clear `valid[p, j]` for candidates of position p that cannot give its decider's stereo (in place)."""
        strings = self.tables.table.strings
        rows = state[positions]
        dec = self.decider.dev[rows].tolist()
        counts = ntok[positions].tolist()
        written = buf[positions, : max(counts)].tolist()
        texts = ["".join(strings[t] for t in row[:n]) for row, n in zip(written, counts)]
        nexts = self.tables.next_rows(rows[:, None], entries[positions]).tolist()
        cand, ok = ids[positions].tolist(), valid[positions].tolist()
        keep = []
        for k, text, row_ids, row_next, row_ok in zip(dec, texts, cand, nexts, ok):
            allowed = self._allowed(self.deciders[k], text, row_ids, row_next, row_ok)
            if not any(allowed):
                self.fallback_steps += 1
                allowed = row_ok
            keep.append(allowed)
        valid[positions] = torch.as_tensor(keep, dtype=torch.bool, device=valid.device)

    def _allowed(self, decider, text: str, row_ids: list[int], row_next: list[int], row_ok: list[bool]) -> list[bool]:
        """Per candidate: whether the numbers it writes for L can still give every rule's sign."""
        g, last, rules = decider
        strings = self.tables.table.strings
        inside = text.count("<") > last
        cut = text.rindex("<") if inside else -1
        seen: dict = {}
        out = []
        for t, nxt, ok in zip(row_ids, row_next, row_ok):
            tok = strings[t]
            if not ok or (not inside and "<" not in tok):
                out.append(ok)
                continue
            if inside:
                head, block = text[:cut], text[cut + 1 :] + tok
            else:
                head, block = text + tok[: tok.index("<")], tok[tok.index("<") + 1 :]
            out.append(self._reaches(g, last, rules, head, block, nxt, seen))
        return out

    def _reaches(self, g, last, rules, head: str, block: str, row: int, seen: dict) -> bool:
        """Whether L's block, written up to `block` and then standing on table `row`, can still end with
        numbers in the rules' intervals (an integer part goes on only where `row` allows a digit: the
        tokenizer's own splits may end it, e.g. an integer part written as one token)."""
        dfa = self.tables.dfa
        closed = ">" in block
        nums = block.split(">")[0].split(",")
        for k in range(len(nums)):
            lo, hi = self._bounds(g, last, rules, head, tuple(nums[:k]), seen)
            if k < len(nums) - 1 or closed:
                if not lo < float(nums[k]) < hi:
                    return False
                continue
            extend = "." in nums[k] or self._digit_follows(row)
            if not any(a < hi and b > lo for a, b in _pieces(nums[k], dfa.precision, dfa.max_int_digits, extend)):
                return False
        return True

    def _digit_follows(self, row: int) -> bool:
        """Whether a token starting with a digit is allowed from `row` (memoised per row)."""
        hit = self._digits.get(row)
        if hit is None:
            t = self.tables
            t.ensure(torch.tensor([row], device=t.device))
            so, sc, oo, oc = (int(p.host[row]) for p in (t.shared_off, t.shared_cnt, t.own_off, t.own_cnt))
            ids = t.ids.host[np.r_[so : so + sc, oo : oo + oc]].tolist()
            hit = self._digits[row] = any(t.table.strings[i][:1].isdigit() for i in ids)
        return hit

    def _bounds(self, g, last, rules, head: str, known: tuple[str, ...], seen: dict) -> tuple[float, float]:
        key = (head, known)
        if key not in seen:
            dfa = self.tables.dfa
            largest = 10.0**dfa.max_int_digits - 10.0**-dfa.precision
            seen[key] = _interval(rules, self._frame(g, last, head), [float(v) for v in known], largest)
        return seen[key]

    def _frame(self, g: int, last: int, head: str):
        """(positions of the atoms before L, L's base, L's axes) rebuilt from the row's text before L's block."""
        hit = self._memo.get((g, head))
        if hit is not None:
            return hit
        if len(self._memo) > 4096:
            self._memo.clear()
        parents = self._parents.get(g)
        if parents is None:
            parents = self._parents[g] = smiles_parents(self.tables.grammars[g].smiles)
        blocks = COORDINATE_BLOCK.findall(head)[:last]
        if self.positions == "local":
            placed = from_local(blocks, parents[:last])
        elif self.positions == "relative":
            placed = [np.array([float(v) for v in p]) for p in from_relative(blocks, parents[:last])]
        else:
            placed = [np.array([float(v) for v in b]) for b in blocks]
        p = parents[last]
        base = placed[p] if p >= 0 and self.positions != "absolute" else np.zeros(3)
        axes = local_axes(placed, parents, last) if self.positions == "local" else None
        centre = placed[p] if p >= 0 and self.positions == "absolute" else np.zeros(3)
        hit = self._memo[(g, head)] = (placed, base, np.eye(3) if axes is None else axes, centre)
        return hit


REACH = 2.0
"""A: the numbers not written yet are assumed within this of the parent (|offset| of a bonded atom < 2 A)
when a rule is enforced on an earlier number of L."""


def _interval(rules: list[StereoRule], frame, known: list[float], largest: float) -> tuple[float, float]:
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

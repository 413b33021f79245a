"""Rules on the numbers while they are written: the prompt's stereo (`stereo_rules`) and the molecule's
distance bounds (`geometry_rules`; each can be left out), as allowed sets for each number of an atom given the
ones before.

`CoordinateGuard` marks the table rows from which a token can write into a guarded atom L's numbers (their
own states, the literal before each and the end of the number before that). A decode step keeps its tensor
path; only the positions standing on a marked row go through `restrict`, which rebuilds the row's positions
from its text, as `coordinate_format` decodes them, and keeps the candidate tokens whose text can still end
in the allowed set. The prompt's stereo comes first: when no candidate keeps every distance bound too, the
bounds are relaxed a level at a time (`geometry_rules.RELAXED`: clash floors dropped, then all but bond lengths,
then only the atom's greatest bound), then the candidates giving the stereo with each number within the
molecule's greatest distance bound of the earlier atoms' range, then the stereo alone (a geometry
fallback); when none gives the stereo either, all are kept (a stereo fallback). All are counted.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from molgen3D.chem.coordinate_format import COORDINATE_BLOCK, from_local, from_relative, local_axes, smiles_parents
from molgen3D.generation.decode_tables import GrammarTables, _Pool
from molgen3D.generation.geometry_rules import (
    EVERYTHING,
    RELAXED,
    Intervals,
    distance_bounds,
    intersect,
    number_intervals,
    plane_interval,
    relaxed,
    ring_planes,
    second_possible,
    third_possible,
)
from molgen3D.generation.stereo_rules import StereoRule, stereo_interval, stereo_rules


@functools.lru_cache(maxsize=65536)
def _pieces(prefix: str, decimals: int, max_int: int, extend: bool = True) -> tuple[tuple[float, float], ...]:
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
    return tuple(mirrored if neg else mags + mirrored if prefix == "" else mags)


def _greatest_finite(values: np.ndarray) -> float:
    """The largest finite entry (inf when there is none)."""
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else np.inf


_STEREO_ONLY = "stereo only"
"""The last level of `restrict`'s fallback: the stereo's candidates, however far (None: the stereo's within
the molecule's extent of the earlier atoms)."""


class _Decider:
    """What atom `last` of grammar `g` must satisfy: its stereo rules and its distance bounds to earlier atoms."""

    __slots__ = ("g", "last", "rules", "levels", "plane", "near", "extent")

    def __init__(
        self,
        g: int,
        last: int,
        rules: list[StereoRule],
        bounds: tuple[np.ndarray, ...] | None,
        plane: tuple[int, int, int] | None = None,
    ):
        self.g, self.last, self.rules, self.plane, self.near = g, last, rules, plane, None
        """`plane`: three earlier atoms of L's aromatic ring whose plane L keeps to (levels 0 and 1)."""
        self.levels = []
        """Per relaxation level (`geometry_rules.RELAXED`), the (least, greatest) distances to atoms 0..last-1."""
        self.extent = np.inf
        """The molecule's greatest distance bound: where no level can be kept, L's numbers (with the stereo's,
        when it has rules) still stay within it of the earlier atoms' range."""
        if bounds is not None:
            self.extent = _greatest_finite(bounds[1])
            lo, hi, hops = (b[last, :last] for b in bounds)
            self.levels = [relaxed(lo, hi, hops, level, _greatest_finite(hi)) for level in range(len(RELAXED))]
            self.near = np.flatnonzero(hops <= 2)
            """Earlier atoms one or two bonds away (the floors the first number's look-ahead checks)."""


class _Group:
    """Candidates leaving the same number open after the same earlier numbers: their value spans as arrays."""

    __slots__ = ("index", "owner", "spans", "exact", "values")

    def __init__(self, members: list[tuple[int, tuple[tuple[float, float], ...]]]):
        self.index = np.array([i for i, _ in members], dtype=np.int64)
        self.owner = np.repeat(np.arange(len(members)), [len(p) for _, p in members])
        self.spans = np.array([span for _, p in members for span in p], dtype=float).reshape(-1, 2)
        exact = [(k, p[0][0]) for k, (_, p) in enumerate(members) if len(p) == 1 and p[0][0] == p[0][1]]
        self.exact = np.array([k for k, _ in exact], dtype=np.int64)
        """Members whose number is complete (position in `index`), and its value."""
        self.values = np.array([v for _, v in exact], dtype=float)


class _Plan:
    """A table row's candidates for one text of the open number: those closing L's block (checked one by
    one) and the rest grouped by the numbers they complete first."""

    __slots__ = ("closing", "groups")

    def __init__(self, closing: list, groups: dict):
        self.closing, self.groups = closing, groups


class CoordinateGuard:
    """Per table row of `tables`: which decider its tokens may write for (-1: none)."""

    def __init__(self, tables: GrammarTables, positions: str | None, *, stereo: bool = True, geometry: bool = False):
        self.tables = tables
        self.positions = positions or "absolute"
        self.stereo, self.geometry = stereo, geometry
        self.decider = _Pool(np.int64, tables.device, fill=-1)
        self.deciders: list[_Decider] = []
        self._parents: dict[int, list[int]] = {}
        self._done = 0
        self._memo: dict[tuple, tuple] = {}
        self._digits: dict[int, bool] = {}
        self._plans: dict[tuple, _Plan] = {}
        self.molecule_counts: dict[str, dict[str, int]] = {}
        """Per prompt SMILES: `stereo_rules`, `stereo_unguarded` (specified centres and double bonds left free,
        see `stereo_rules`), `geometry_atoms` (atoms written under bounds), `geometry_unbounded` (1: RDKit could
        not bound the molecule)."""
        self.fallback_steps = 0
        """Guarded steps where no candidate could give the prompt's stereo (all kept)."""
        self.geometry_relaxed_steps = 0
        """Guarded steps where no candidate kept every distance bound, but some kept a relaxed level's."""
        self.geometry_fallback_steps = 0
        """Guarded steps where no candidate kept even the bond lengths (the stereo's candidates kept)."""
        self.guarded_steps = 0
        """Decode steps that went through `restrict`."""

    def update(self) -> None:
        """Mark the rows of grammars added to the tables since the last call."""
        tables = self.tables
        self.decider.reserve(tables.shared_off.size - self.decider.size)
        accepting = np.flatnonzero(tables.dfa.accepting)
        n_sub = len(tables.dfa.accepting)
        for g in range(self._done, len(tables.grammars)):
            grammar, base = tables.grammars[g], tables.bases[g]
            by_last: dict[int, list[StereoRule]] = {}
            counts = self.molecule_counts.setdefault(grammar.smiles, {})
            if self.stereo:
                rules, skipped = stereo_rules(grammar.smiles)
                counts.update(stereo_rules=len(rules), stereo_unguarded=skipped)
                for rule in rules:
                    by_last.setdefault(rule.last, []).append(rule)
            bounds, planes = None, {}
            if self.geometry:
                atoms = len(grammar.literals) // 3
                bounds = distance_bounds(grammar.smiles)
                if bounds is None or bounds[0].shape[0] != atoms:
                    counts.update(geometry_atoms=0, geometry_unbounded=1)
                    bounds = None
                else:
                    counts.update(geometry_atoms=atoms - 1, geometry_unbounded=0)
                    planes = ring_planes(grammar.smiles)
                    for last in range(1, atoms):
                        by_last.setdefault(last, [])
            for last, group in sorted(by_last.items()):
                k = len(self.deciders)
                self.deciders.append(_Decider(g, last, group, bounds, planes.get(last)))
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
        """Clear `valid[p, j]` for candidates of position p that cannot satisfy its decider (in place)."""
        strings = self.tables.table.strings
        self.guarded_steps += len(positions)
        rows = state[positions]
        row_list = rows.tolist()
        dec = self.decider.dev[rows].tolist()
        counts = ntok[positions].tolist()
        written = buf[positions, : max(counts)].tolist()
        texts = ["".join(strings[t] for t in row[:n]) for row, n in zip(written, counts)]
        nexts = self.tables.next_rows(rows[:, None], entries[positions]).tolist()
        cand, ok = ids[positions].tolist(), valid[positions].tolist()
        keep = []
        for k, row, text, row_ids, row_next, row_ok in zip(dec, row_list, texts, cand, nexts, ok):
            decider = self.deciders[k]
            candidates = (row, row_ids, row_next, row_ok)
            allowed = [False]
            for level in range(len(decider.levels)):
                allowed = self._allowed(decider, text, candidates, level)
                if any(allowed):
                    self.geometry_relaxed_steps += level > 0
                    break
            if not any(allowed):
                self.geometry_fallback_steps += bool(decider.levels)
                allowed = self._allowed(decider, text, candidates, None) if decider.rules or decider.levels else row_ok
                if not any(allowed) and decider.rules and decider.levels:
                    allowed = self._allowed(decider, text, candidates, _STEREO_ONLY)
            if not any(allowed):
                self.fallback_steps += bool(decider.rules)
                allowed = row_ok
            keep.append(allowed)
        valid[positions] = torch.as_tensor(keep, dtype=torch.bool, device=valid.device)

    def _allowed(self, decider: _Decider, text: str, candidates, level: int | None) -> list[bool]:
        """Per candidate: whether the numbers it writes for L can still satisfy the decider."""
        row, row_ids, row_next, row_ok = candidates
        inside = text.count("<") > decider.last
        cut = text.rindex("<") if inside else -1
        written = text[cut + 1 :].split(",") if inside else [""]
        plan = self._plan(row, inside, written[-1], row_ids, row_next, row_ok)
        seen: dict = {}
        out = np.array(row_ok, dtype=bool)
        for i, head_tail, block in plan.closing:
            head = text[:cut] if inside else text + head_tail
            full = ",".join(written[:-1] + [block]) if inside else block
            out[i] = self._reaches(decider, level, head, full, row_next[i], seen)
        for (head_tail, more), g in plan.groups.items():
            head = text[:cut] if inside else text + head_tail
            before = (*written[:-1], *more) if inside else more
            k = len(before)
            if k > 2 or (k and not self._reaches(decider, level, head, ",".join(before) + ">", -1, seen)):
                out[g.index] = False
                continue
            allowed = np.array(self._allowed_set(decider, level, head, before, seen), dtype=float).reshape(-1, 2)
            hits = ((g.spans[:, :1] <= allowed[:, 1]) & (g.spans[:, 1:] >= allowed[:, 0])).any(axis=1)
            reached = np.bincount(g.owner, weights=hits, minlength=len(g.index)) > 0
            out[g.index] = reached
            if not isinstance(level, int) or k >= 2 or not g.exact.size:
                continue
            live = reached[g.exact]
            if not live.any():
                continue
            out[g.index[g.exact[live]]] = self._room(decider, level, head, before, g.values[live])
        return out.tolist()

    def _plan(self, row: int, inside: bool, tail: str, row_ids, row_next, row_ok) -> _Plan:
        """How the candidates of table row `row` split, given the text of the number being written (`tail`):
        made once per (row, tail) and reused by every sample standing there (number rows are shared)."""
        key = (row, inside, tail)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if len(self._plans) > 65536:
            self._plans.clear()
        strings, dfa = self.tables.table.strings, self.tables.dfa
        closing, grouped = [], {}
        for i, (t, nxt, ok) in enumerate(zip(row_ids, row_next, row_ok)):
            tok = strings[t]
            if not ok or (not inside and "<" not in tok):
                continue
            head_tail, block = ("", tail + tok) if inside else (tok[: tok.index("<")], tok[tok.index("<") + 1 :])
            if ">" in block:
                closing.append((i, head_tail, block))
                continue
            nums = block.split(",")
            text = nums[-1]
            spans = _pieces(text, dfa.precision, dfa.max_int_digits, "." in text or self._digit_follows(nxt))
            grouped.setdefault((head_tail, tuple(nums[:-1])), []).append((i, spans))
        plan = self._plans[key] = _Plan(closing, {k: _Group(v) for k, v in grouped.items()})
        return plan

    def _reaches(self, decider: _Decider, level: int | None, head: str, block: str, row: int, seen: dict) -> bool:
        """Whether L's block, written up to `block` and then standing on table `row`, can still end with
        numbers in the allowed sets (an integer part goes on only where `row` allows a digit: the
        tokenizer's own splits may end it, e.g. an integer part written as one token). Under distance bounds
        a complete first or second number must also leave some value for the numbers after it."""
        dfa = self.tables.dfa
        closed = ">" in block
        nums = block.split(">")[0].split(",")
        for k in range(len(nums)):
            allowed = self._allowed_set(decider, level, head, tuple(nums[:k]), seen)
            if k < len(nums) - 1 or closed:
                value = float(nums[k])
                exact = True
                if not any(lo <= value <= hi for lo, hi in allowed):
                    return False
            else:
                extend = "." in nums[k] or self._digit_follows(row)
                pieces = _pieces(nums[k], dfa.precision, dfa.max_int_digits, extend)
                if not any(a <= hi and b >= lo for a, b in pieces for lo, hi in allowed):
                    return False
                exact = len(pieces) == 1 and pieces[0][0] == pieces[0][1]
            bounded = isinstance(level, int) and exact and k < 2
            if bounded and not self._leaves_room(decider, level, head, nums, k, seen):
                return False
        return True

    def _leaves_room(self, decider: _Decider, level: int, head: str, nums: list[str], k: int, seen: dict) -> bool:
        """Whether the complete number k (0 or 1) leaves values for the numbers after it."""
        key = ("room", head, tuple(nums[: k + 1]), level)
        if key not in seen:
            seen[key] = bool(self._room(decider, level, head, tuple(nums[:k]), np.array([float(nums[k])]))[0])
        return seen[key]

    def _room(self, decider: _Decider, level: int, head: str, before: tuple[str, ...], values: np.ndarray):
        """Per complete value of number k = len(before) (0 or 1): whether it leaves values for the numbers after
        it under this level's bounds and the ring plane."""
        q, (lo, hi) = self._near(decider, head), decider.levels[level]
        plane = self._plane(decider, level, head)
        if not before:
            return second_possible(q, lo, hi, values, plane, decider.near)
        return third_possible(q, lo, hi, float(before[0]), values, plane)

    def _plane(self, decider: _Decider, level: int | None, head: str) -> tuple[np.ndarray, float] | None:
        """(normal in L's frame, offset) of the ring plane L keeps to at this level (levels 0 and 1), else None."""
        if not isinstance(level, int) or level > 1 or decider.plane is None:
            return None
        placed, base, axes, _ = self._frame(decider.g, decider.last, head)
        a, b, c = (placed[i] for i in decider.plane)
        normal = np.cross(b - a, c - a)
        length = float(np.linalg.norm(normal))
        if length < 1e-6:
            return None
        normal = normal / length
        return axes @ normal, float(normal @ (base - a))

    def _near(self, decider: _Decider, head: str) -> np.ndarray:
        """The atoms before L in L's frame [L, 3] (their numbers' coordinates)."""
        placed, base, axes, _ = self._frame(decider.g, decider.last, head)
        return (np.stack(placed[: decider.last]) - base) @ axes.T

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

    def _allowed_set(self, decider: _Decider, level: int | None, head: str, known: tuple[str, ...], seen) -> Intervals:
        key = (head, known, level)
        if key not in seen:
            dfa = self.tables.dfa
            largest = 10.0**dfa.max_int_digits - 10.0**-dfa.precision
            frame = self._frame(decider.g, decider.last, head)
            values = [float(v) for v in known]
            allowed = EVERYTHING
            if decider.rules:
                lo, hi = stereo_interval(decider.rules, frame, values, largest)
                allowed = [(lo, hi)] if lo < hi else []
            if isinstance(level, int) and allowed:
                allowed = intersect(
                    allowed, number_intervals(self._near(decider, head), *decider.levels[level], values)
                )
            elif level is None and decider.levels and np.isfinite(decider.extent) and allowed:
                near = self._near(decider, head)[:, len(values)]
                allowed = intersect(allowed, [(float(near.min()) - decider.extent, float(near.max()) + decider.extent)])
            plane = self._plane(decider, level, head) if len(values) == 2 else None
            if plane is not None and allowed:
                allowed = intersect(allowed, plane_interval(*plane, values))
            seen[key] = allowed
        return seen[key]

    def _frame(self, g: int, last: int, head: str):
        """(positions of the atoms before L, L's base, L's axes, the default of L's numbers) rebuilt from the
        row's text before L's block."""
        hit = self._memo.get((g, head))
        if hit is not None:
            return hit
        if len(self._memo) > 4096:
            self._memo.clear()
        parents = self._parents.get(g)
        if parents is None:
            parents = self._parents[g] = smiles_parents(self.tables.grammars[g].smiles)
        cut = head.rfind("<")
        before = self._memo.get((g, head[:cut])) if last > 0 and cut >= 0 else None
        if before is not None and len(before[0]) == last - 1:
            # the atom before L placed from its block in the frame the previous step rebuilt (as decoding does)
            values = np.array([float(v) for v in COORDINATE_BLOCK.match(head, cut).groups()])
            placed = [*before[0], before[1] + before[2].T @ values]
        elif self.positions == "local":
            placed = from_local(COORDINATE_BLOCK.findall(head)[:last], parents[:last])
        elif self.positions == "relative":
            blocks = COORDINATE_BLOCK.findall(head)[:last]
            placed = [np.array([float(v) for v in p]) for p in from_relative(blocks, parents[:last])]
        else:
            placed = [np.array([float(v) for v in b]) for b in COORDINATE_BLOCK.findall(head)[:last]]
        p = parents[last]
        base = placed[p] if p >= 0 and self.positions != "absolute" else np.zeros(3)
        axes = local_axes(placed, parents, last) if self.positions == "local" else None
        centre = placed[p] if p >= 0 and self.positions == "absolute" else np.zeros(3)
        hit = self._memo[(g, head)] = (placed, base, np.eye(3) if axes is None else axes, centre)
        return hit

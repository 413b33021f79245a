"""Constrained decoding as tables on the model's device: allowed ids and next state per grammar state.

Every molecule's grammar (`constrained.MoleculeGrammar`) gets a block of table rows, one per
state `(item, sub)` plus its end, filled lazily the first time a sample reaches a state. A
row's candidates are two segments of one flat pool of `(token id, state delta)` entries:
- the *shared* segment: the moves that stay inside a number. They depend only on the DFA
  state, the text just before (canonical verdicts) and the head of the literal after the
  number, so one segment serves every coordinate of every molecule with the same key;
- the *own* segment: moves through literals, and out of a number into the next literal.
A move's next state is `state + delta`, which makes segments position independent.

The canonical filter's verdicts (`canonical.CanonicalFilter`) are folded in when a row is
filled: a token the tokenizer would never write there is simply not in the row (a state
where every token is rejected keeps them all and is marked `fallback`). A decode step is
then gather, mask, draw and `state + delta` for the whole batch (see `token_sampler`).
"""

from __future__ import annotations

import numpy as np
import torch

from molgen3D.generation.canonical import CanonicalFilter
from molgen3D.generation.constrained import MoleculeGrammar, NumberDfa, TokenTable

_GROW = 2


class _Pool:
    """A growable 1-D host array mirrored to a device tensor (capacity doubles; only new parts are copied)."""

    def __init__(self, dtype: np.dtype, device: torch.device, fill: int = 0):
        self.host = np.full(1024, fill, dtype=dtype)
        self.size = 0
        self.fill = fill
        self.device = device
        self.dev = torch.from_numpy(self.host.copy()).to(device)
        self._synced = 0

    def reserve(self, n: int) -> int:
        """Room for `n` more entries; returns the offset of the first."""
        start = self.size
        if start + n > len(self.host):
            cap = max(len(self.host) * _GROW, start + n)
            host = np.full(cap, self.fill, dtype=self.host.dtype)
            host[:start] = self.host[:start]
            self.host = host
            self.dev = torch.from_numpy(host.copy()).to(self.device)
            self._synced = start
        self.size = start + n
        return start

    def sync(self) -> None:
        """Copy entries written on the host since the last sync to the device."""
        if self._synced < self.size:
            part = torch.from_numpy(self.host[self._synced : self.size].copy())
            self.dev[self._synced : self.size] = part.to(self.device)
            self._synced = self.size

    def touch(self, lo: int, hi: int) -> None:
        """Entries `lo:hi` (already synced) changed on the host: copy them again."""
        if lo < self._synced:
            hi = min(hi, self._synced)
            self.dev[lo:hi] = torch.from_numpy(self.host[lo:hi].copy()).to(self.device)


class GrammarTables:
    """The decoding tables of every molecule added, on `device`, filled as samples reach states."""

    def __init__(self, table: TokenTable, dfa: NumberDfa, canonical: CanonicalFilter | None, device="cpu"):
        self.table, self.dfa, self.canonical = table, dfa, canonical
        self.device = torch.device(device)
        self.grammars: list[MoleculeGrammar] = []
        self.bases: list[int] = []
        self._by_smiles: dict[str, int] = {}
        dev = self.device
        # per table row (state)
        self.shared_off = _Pool(np.int64, dev)
        self.shared_cnt = _Pool(np.int64, dev)
        self.own_off = _Pool(np.int64, dev)
        self.own_cnt = _Pool(np.int64, dev)
        self.filled = _Pool(np.bool_, dev)
        self.is_end = _Pool(np.bool_, dev)
        self.fallback = _Pool(np.bool_, dev)
        self._row_grammar = _Pool(np.int64, dev)
        # per candidate entry
        self.ids = _Pool(np.int64, dev)
        self.delta = _Pool(np.int64, dev)
        self._shared: dict[tuple, tuple[int, int]] = {}
        self.fallback_states = 0
        """States where the canonical filter rejected every allowed token (all kept)."""

    @property
    def _rows(self) -> list[_Pool]:
        return [self.shared_off, self.shared_cnt, self.own_off, self.own_cnt, self.filled, self.is_end, self.fallback]

    def add(self, smiles: str) -> int:
        """The start row of `smiles`'s grammar (built once per SMILES; raises what `MoleculeGrammar` raises)."""
        g = self._by_smiles.get(smiles)
        if g is None:
            grammar = MoleculeGrammar(smiles, self.table, self.dfa)
            n = grammar.num_states
            base = self.shared_off.size
            for pool in self._rows:
                pool.reserve(n)
            self._row_grammar.reserve(n)
            self._row_grammar.host[base : base + n] = len(self.grammars)
            self.is_end.host[base + n - 1] = True
            g = self._by_smiles[smiles] = len(self.grammars)
            self.grammars.append(grammar)
            self.bases.append(base)
            self.sync()
        return self.bases[g]

    def sync(self) -> None:
        for pool in [*self._rows, self._row_grammar, self.ids, self.delta]:
            pool.sync()

    def ensure(self, rows: torch.Tensor) -> None:
        """Fill every row in `rows` not filled yet (host work on first visits only; one flag check otherwise)."""
        missing = rows[~self.filled.dev[rows]]
        if missing.numel() == 0:
            return
        for row in sorted(set(missing.tolist())):
            self._fill(row)
        self.sync()

    def _fill(self, row: int) -> None:
        g = int(self._row_grammar.host[row])
        grammar, base = self.grammars[g], self.bases[g]
        local = row - base
        item, sub = grammar.state_of(local)
        self.filled.host[row] = True
        self.filled.touch(row, row + 1)
        if item >= grammar.n_items:
            return
        if item % 2 == 1:
            own = grammar.exits(item, sub)
            shared = self._shared_segment(grammar, item, sub)
        else:
            own, shared = grammar.literal_moves(item, sub), (0, 0)
        nxt = grammar.local_index(own.next_items, own.next_subs)
        ids, delta = own.ids, nxt - local
        if self.canonical is not None:
            keep = self._verdicts(grammar, (item, sub), ids, own.next_items, own.next_subs)
            if keep.any() or shared[1] > 0:
                ids, delta = ids[keep], delta[keep]
            elif len(ids) or (item % 2 == 1 and self._shared_segment(grammar, item, sub, filtered=False)[1]):
                self.fallback.host[row] = True
                self.fallback_states += 1
                if item % 2 == 1:
                    shared = self._shared_segment(grammar, item, sub, filtered=False)
        off = self.ids.reserve(len(ids))
        self.delta.reserve(len(ids))
        self.ids.host[off : off + len(ids)] = ids
        self.delta.host[off : off + len(ids)] = delta
        for pool, value in ((self.own_off, off), (self.own_cnt, len(ids))):
            pool.host[row] = value
        self.shared_off.host[row], self.shared_cnt.host[row] = shared
        for pool in (self.own_off, self.own_cnt, self.shared_off, self.shared_cnt, self.fallback):
            pool.touch(row, row + 1)

    def _shared_segment(self, grammar: MoleculeGrammar, item: int, sub: int, filtered: bool = True) -> tuple[int, int]:
        """(offset, count) of the moves staying inside the number, shared by every state with the same key."""
        inside_rows, inside_ends, _ = self.table.number_moves(self.dfa)[sub]
        filtered = filtered and self.canonical is not None
        head = self.canonical.number_head(grammar, item) if filtered else None
        context = self.canonical.context_key(grammar, (item, sub)) if filtered else None
        key = (sub, context, head)
        hit = self._shared.get(key)
        if hit is None:
            ids = self.table.cand_ids[inside_rows]
            ends = inside_ends.astype(np.int64)
            if filtered:
                # verdicts on a number's inside moves are facts about the tokenizer: kept by the filter across runs
                memo_key = ("inside", self.dfa.precision, self.dfa.max_int_digits, *key)
                keep = self.canonical.memo.get(memo_key)
                if keep is None:
                    keep = self._verdicts(grammar, (item, sub), ids, np.full(len(ids), item), ends)
                    self.canonical.memo[memo_key] = keep
                ids, ends = ids[keep], ends[keep]
            off = self.ids.reserve(len(ids))
            self.delta.reserve(len(ids))
            self.ids.host[off : off + len(ids)] = ids
            self.delta.host[off : off + len(ids)] = ends - sub
            hit = self._shared[key] = (off, len(ids))
        return hit

    def _verdicts(self, grammar, state, ids, next_items, next_subs) -> np.ndarray:
        canon = self.canonical
        return np.fromiter(
            (
                canon.keeps(grammar, state, int(t), (int(i), int(s)))
                for t, i, s in zip(ids.tolist(), next_items.tolist(), next_subs.tolist())
            ),
            dtype=bool,
            count=len(ids),
        )

    def candidates(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, pool entries, valid) of shape [len(rows), width]: each row's allowed tokens, padded; the next
        row of entry e taken from row r is `r + delta[e]` (`next_rows`)."""
        sc, so = self.shared_cnt.dev[rows], self.shared_off.dev[rows]
        oc, oo = self.own_cnt.dev[rows], self.own_off.dev[rows]
        n = sc + oc
        width = max(int(n.max()), 1) if rows.numel() else 1
        j = torch.arange(width, device=rows.device)
        # entry = shared offset + j inside the shared segment, own offset + (j - shared count) after it
        entry = torch.where(j < sc[:, None], so[:, None], (oo - sc)[:, None]) + j
        valid = j < n[:, None]
        entry.masked_fill_(~valid, 0)
        return self.ids.dev[entry], entry, valid

    def next_rows(self, rows: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
        """The rows reached from `rows` by the chosen pool `entries` (aligned 1-D tensors)."""
        return rows + self.delta.dev[entries]

    def allowed_ids(self, row: int) -> set[int]:
        """The allowed token ids of one row (for tests and debugging)."""
        self.ensure(torch.tensor([row], device=self.device))
        ids, _, valid = self.candidates(torch.tensor([row], device=self.device))
        return set(ids[valid].tolist())

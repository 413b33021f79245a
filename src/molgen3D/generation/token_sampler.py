"""One decode step for a whole batch as tensor work: gather the allowed ids, mask, draw, next state.

`SlotSampler` holds the batch's positions: which sample (row) each decodes, its table row
(`decode_tables.GrammarTables`), its token count and its seed, all tensors on the model's
device. A step reads only the batch's last-position logits on that device; the host learns
which positions finished (one small copy) and takes their tokens when they do. A position
whose sample finished can be given the next pending sample (`replace`), so the batch stays full.

Draws are inverse-CDF with a uniform that is a hash of (the sample's seed, its token count):
a sample's tokens depend on its seed and its logits only, never on the batch it shares, the
position it holds or the order samples were admitted in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from molgen3D.chem.tagged_text import CONFORMER_CLOSE
from molgen3D.generation.constrained import TokenTable
from molgen3D.generation.decode_tables import GrammarTables
from molgen3D.generation.coordinate_guard import CoordinateGuard

# Stop reasons of a sequence that did not end normally (see sampling's failure reasons).
DEAD_END = "grammar_dead_end"

_M32 = 0xFFFFFFFF
_MUL = 0x045D9F3B  # < 2**27, so products of 32-bit values stay inside int64


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = (x * _MUL) & _M32
    x = x ^ (x >> 16)
    x = (x * _MUL) & _M32
    return x ^ (x >> 16)


def counter_uniform(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) (float32, 24 bits) as a hash of each (seed, counter): no generator state to carry."""
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    h = _mix(lo ^ _mix(hi ^ _mix(counters & _M32)))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def draw(scores: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Row-wise choice from unnormalised `scores` (-inf = forbidden) with the row's uniform `u`:
    greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
        outside = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, u.reshape(-1, 1) * cdf[:, -1:], right=True).squeeze(-1)
    return picked.clamp_(max=probs.shape[-1] - 1)


@dataclass
class SequenceResult:
    """What one sampled sequence produced."""

    token_ids: list[int]
    stop: str | None
    """None when it ended normally ([/CONFORMER], <|endoftext|> or grammar end), else a failure reason."""


class SlotSampler:
    """The samples of one run: `rows` of them, decoded `slots` at a time by a runner that refills positions."""

    def __init__(
        self,
        table: TokenTable,
        tables: GrammarTables | None,
        starts: Sequence[int] | None,
        seeds: Sequence[int],
        limits: Sequence[int],
        cut_reasons: Sequence[str],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        slots: int = 16,
        device="cpu",
        guard: CoordinateGuard | None = None,
    ):
        self.table, self.tables, self.guard = table, tables, guard
        self.device = torch.device(device)
        self.temperature, self.top_p, self.slots = temperature, top_p, slots
        n = len(seeds)
        self._starts = torch.as_tensor(list(starts) if starts is not None else [0] * n, dtype=torch.long)
        self._seeds = torch.as_tensor(list(seeds), dtype=torch.long)
        self._limits = torch.as_tensor(list(limits), dtype=torch.long)
        self.cut_reasons = list(cut_reasons)
        self.results: list[SequenceResult | None] = [None] * n
        self._stop_ids = torch.as_tensor(sorted(table.stop_ids), dtype=torch.long, device=self.device)
        self.fallback_steps = torch.zeros((), dtype=torch.long, device=self.device)
        """Tokens drawn in states where the canonical filter kept nothing (so every allowed token was kept)."""
        self._tails: list[str] | None = None if CONFORMER_CLOSE in table.tag_ids else []
        """Free decoding with a tokenizer that spells `[/CONFORMER]` in pieces: each position's recent text."""
        self.rows: list[int] = []
        self.load([])

    @property
    def num_rows(self) -> int:
        return len(self.results)

    @property
    def constrained(self) -> bool:
        return self.tables is not None

    def load(self, rows: Sequence[int]) -> None:
        """Start a fresh batch holding `rows`, position k decoding rows[k]."""
        self.rows = list(rows)
        b, dev = len(self.rows), self.device
        width = int(self._limits[self.rows].max()) if self.rows else 1
        self.state = torch.zeros(b, dtype=torch.long, device=dev)
        self.seed = torch.zeros(b, dtype=torch.long, device=dev)
        self.limit = torch.zeros(b, dtype=torch.long, device=dev)
        self.ntok = torch.zeros(b, dtype=torch.long, device=dev)
        self.live = torch.zeros(b, dtype=torch.bool, device=dev)
        self.buf = torch.zeros((b, width), dtype=torch.long, device=dev)
        if self._tails is not None:
            self._tails = [""] * b
        self.replace(list(range(b)), self.rows)

    def replace(self, positions: Sequence[int], rows: Sequence[int]) -> None:
        """Positions `positions` now decode `rows` from their first token."""
        if not positions:
            return
        rows = list(rows)
        for p, r in zip(positions, rows):
            self.rows[p] = r
        need = int(self._limits[rows].max())
        if need > self.buf.shape[1]:
            pad = torch.zeros((self.buf.shape[0], need - self.buf.shape[1]), dtype=torch.long, device=self.device)
            self.buf = torch.cat([self.buf, pad], dim=1)
        idx = torch.as_tensor(list(positions), dtype=torch.long, device=self.device)
        self.state[idx] = self._starts[rows].to(self.device)
        self.seed[idx] = self._seeds[rows].to(self.device)
        self.limit[idx] = self._limits[rows].to(self.device)
        self.ntok[idx] = 0
        self.live[idx] = True
        if self._tails is not None:
            for p in positions:
                self._tails[p] = ""

    def keep(self, positions: Sequence[int]) -> None:
        """Shrink the batch to `positions` (in that order)."""
        idx = torch.as_tensor(list(positions), dtype=torch.long, device=self.device)
        self.rows = [self.rows[p] for p in positions]
        if self._tails is not None:
            self._tails = [self._tails[p] for p in positions]
        for name in ("state", "seed", "limit", "ntok", "live", "buf"):
            setattr(self, name, getattr(self, name)[idx])

    def step(self, logits: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Next token of every position from its last-position `logits` [batch, >= V] (finished positions:
        `<|endoftext|>`), and the positions whose sample finished with this step."""
        logits = logits[:, : self.table.vocab_size]
        live = self.live
        u = counter_uniform(self.seed, self.ntok)
        if self.tables is not None:
            self.tables.ensure(self.state[live])
            ids, entries, valid = self.tables.candidates(self.state)
            valid &= live[:, None]
            if self.guard is not None:
                guarded = (live & (self.guard.decider.dev[self.state] >= 0)).nonzero().flatten().tolist()
                if guarded:
                    self.guard.restrict(guarded, self.state, self.buf, self.ntok, ids, entries, valid)
            scores = logits.gather(1, ids).float().masked_fill_(~valid, float("-inf"))
            choice = draw(scores, self.temperature, self.top_p, u)[:, None]
            tok = ids.gather(1, choice).squeeze(1)
            new_state = self.tables.next_rows(self.state, entries.gather(1, choice).squeeze(1))
            moves = live & valid.any(dim=1)
            self.fallback_steps += (self.tables.fallback.dev[self.state] & moves).sum()
            self.state = torch.where(moves, new_state, self.state)
            ended = self.tables.is_end.dev[self.state]
        else:
            tok = draw(logits.float(), self.temperature, self.top_p, u)
            moves = live
            ended = torch.isin(tok, self._stop_ids)
            if self._tails is not None:
                ended |= self._text_closed(tok, live)
        tok = torch.where(moves, tok, torch.full_like(tok, self.table.eos_id))
        at = self.ntok.clamp(max=self.buf.shape[1] - 1)[:, None]
        self.buf.scatter_(1, at, torch.where(moves[:, None], tok[:, None], self.buf.gather(1, at)))
        self.ntok += moves.long()
        done = live & (~moves | ended | (self.ntok >= self.limit))
        finished = done.nonzero().flatten().tolist()
        if finished:
            self._finish(finished, moves, ended)
        return tok, finished

    def _text_closed(self, tok: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Whether each position's text now ends with `[/CONFORMER]` (host work, only for such tokenizers)."""
        keep = len(CONFORMER_CLOSE)
        closed = []
        for p, (t, alive) in enumerate(zip(tok.tolist(), live.tolist())):
            if alive:
                self._tails[p] = (self._tails[p] + self.table.strings[t])[-keep:]
            closed.append(alive and self._tails[p] == CONFORMER_CLOSE)
        return torch.as_tensor(closed, dtype=torch.bool, device=self.device)

    def _finish(self, positions: list[int], moves: torch.Tensor, ended: torch.Tensor) -> None:
        idx = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        counts, moved, normal = (t[idx].tolist() for t in (self.ntok, moves, ended))
        width = max(counts) if counts else 0
        tokens = self.buf[idx, :width].tolist()
        for p, n, m, e, toks in zip(positions, counts, moved, normal, tokens):
            row = self.rows[p]
            stop = DEAD_END if not m else None if e else self.cut_reasons[row]
            self.results[row] = SequenceResult(toks[:n], stop)
        self.live[idx] = False

    @property
    def any_live(self) -> bool:
        return bool(self.live.any())

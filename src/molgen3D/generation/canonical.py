"""Canonical tokenizations only: constrained decoding must not write text in token sequences the tokenizer never makes.

The grammar (`constrained.MoleculeGrammar`) allows every token that keeps the text in the
language, so `.23` + `45` is as good to it as `.2345`, and `[` + `C` as good as `[C`, though
the tokenizer writes one token for each and a trained model has never seen the split form.

`CanonicalFilter.keeps` judges a token written in a grammar state; the decoding tables
(`decode_tables`) fold its verdicts into each state's allowed tokens when the state is first
reached. A token `t` after the text `r` before the state is kept when
- the tokenizer keeps it: `encode(r + t) == encode(r) + [t]`, and
- it stays a token for at least one continuation the grammar allows: `encode(r + t + f)` starts
  with `encode(r) + [t]`, where `f` is the fixed rest of the current literal (then a number's
  start) or, inside a number, any way it can go on for `LOOKAHEAD` characters (`.23` followed
  by any two digits merges into `.2345`, so `.23` is rejected where four decimals are due; `[`
  is rejected before a literal `C]<` that the tokenizer writes `[C]` `<`).
BPE merges never cross the tokenizer's pre-tokenized pieces, so `r` is cut to the piece the
token joins. `r` is a function of the state: literals are known, and the digits of a number
are written by a representative (`1`), since no merge of either tokenizer tells one digit from
another; so a verdict is the same for every sample in that state. When every allowed token
of a state is rejected, the state keeps them all (counted as a fallback state), and
`is_canonical` checks a finished sample as a whole.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence

import numpy as np

from molgen3D.generation.constrained import _TAG_CHARS, MoleculeGrammar, NumberDfa, TokenTable, token_table

_BOUNDARY = ""
"""Stands for "what follows cannot merge": the end of the text or an added (tag) token."""
LOOKAHEAD = 3
"""Characters of a number looked ahead: enough for `,` + `85` or `.23` + `45` to be seen merging."""
_TAIL = 16
"""Characters of text before a state that its verdicts look at (merges never reach further back)."""
_NUMBER_CHARS = "-.0123456789"
_CLASS = {ch: int(NumberDfa.char_class(np.array([ord(ch)]))[0]) for ch in _NUMBER_CHARS}


class CanonicalFilter:
    """Per tokenizer: whether a drawn token keeps the generated ids the tokenizer's own tokenization."""

    def __init__(self, tokenizer, table: TokenTable | None = None):
        self.tokenizer = tokenizer
        self.table = table if table is not None else token_table(tokenizer)
        self._tags = set(self.table.tag_ids.values())
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._verdicts: dict[tuple, bool] = {}
        self.memo: dict = {}
        """Room for callers' caches of verdicts (e.g. whole segments of a number's moves)."""
        self._encoded: dict[str, list[int]] = {}

    def _raw_encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added (the Rust tokenizer directly when there is one: 5x faster)."""
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _encode(self, text: str) -> list[int]:
        ids = self._encoded.get(text)
        if ids is None:
            ids = self._encoded[text] = self._raw_encode(text)
        return ids

    def follows(self, grammar: MoleculeGrammar, state: tuple[int, int]) -> frozenset[str]:
        """Texts that may follow in `state`, as far as they decide merges (`""`: nothing can merge).

        In a literal: the rest of it (cut at a tag, which never merges), then the start of the
        next number; in a number: every way it can go on for `LOOKAHEAD` characters, with the
        next literal's start where it may end. Cached per grammar state.
        """
        cache = grammar.memo.setdefault("follows", {})
        texts = cache.get(state)
        if texts is None:
            item, sub = state
            if grammar.is_end(state):
                texts = frozenset({_BOUNDARY})
            elif item % 2 == 0:
                texts = self._after_literal(grammar, item, grammar.literals[item // 2][sub:])
            else:
                texts = self._number_tails(grammar, item, sub)
            cache[state] = texts
        return texts

    def _after_literal(self, grammar: MoleculeGrammar, item: int, rest: str) -> frozenset[str]:
        cut = min((rest.index(ch) for ch in _TAG_CHARS.values() if ch in rest), default=None)
        if cut is not None or item + 1 >= grammar.n_items:
            return frozenset({rest[:cut]})
        return frozenset(rest + tail for tail in self._number_tails(grammar, item + 1, NumberDfa.START))

    def _number_tails(self, grammar: MoleculeGrammar, item: int, q: int) -> frozenset[str]:
        """The number's next `LOOKAHEAD` characters from DFA state `q` (then the next literal where it may end)."""
        dfa = grammar.dfa
        literal = grammar.literals[(item + 1) // 2]
        cut = min((literal.index(ch) for ch in _TAG_CHARS.values() if ch in literal), default=len(literal))
        head = literal[: min(cut, LOOKAHEAD)]
        out, frontier = set(), [("", q)]
        for _ in range(LOOKAHEAD):
            grown = []
            for text, state in frontier:
                if dfa.accepting[state]:
                    out.add(text + head)
                for ch in _NUMBER_CHARS:
                    nxt = int(dfa.transitions[state, _CLASS[ch]])
                    if nxt >= 0:
                        grown.append((text + ch, nxt))
            frontier = grown
        out.update(text for text, _ in frontier)
        return frozenset(out)

    def _context(self, text: str, token_text: str) -> str:
        """The end of `text` that shares a pre-tokenized piece with the token (merges never cross pieces)."""
        pre = getattr(self._backend, "pre_tokenizer", None)
        if pre is None or not text:
            return text
        starts = [start for _, (start, _) in pre.pre_tokenize_str(text + token_text) if start <= len(text)]
        return text[max(starts, default=0) :]

    def number_head(self, grammar: MoleculeGrammar, item: int) -> str:
        """The start of the literal after number `item` that its look-ahead sees (what merges may depend on)."""
        literal = grammar.literals[(item + 1) // 2]
        cut = min((literal.index(ch) for ch in _TAG_CHARS.values() if ch in literal), default=len(literal))
        return literal[: min(cut, LOOKAHEAD)]

    def context_key(self, grammar: MoleculeGrammar, state: tuple[int, int]) -> str:
        """The text written just before `state` as far as merges see it: literals as they are, numbers by a
        representative (`1`s: every digit is alike to both tokenizers' merges), cut after the last tag and to
        the last pre-tokenized piece (a token joins at most that piece), so that states share verdicts."""
        keys = grammar.memo.setdefault("context_key", {})
        hit = keys.get(state)
        if hit is not None:
            return hit
        item, sub = state
        digits = _digits(grammar.dfa.precision, grammar.dfa.max_int_digits)
        parts = []
        for k in range(max(0, item - 3), min(item, grammar.n_items) + 1):
            if k == item:
                parts.append(grammar.literals[k // 2][:sub] if k % 2 == 0 else digits[sub])
            else:
                parts.append(grammar.literals[k // 2] if k % 2 == 0 else digits[-1])
        text = "".join(parts)
        cut = max(text.rfind(ch) for ch in _TAG_CHARS.values())
        text = text[cut + 1 :][-_TAIL:]
        pre = getattr(self._backend, "pre_tokenizer", None)
        if pre is not None and text:
            text = text[pre.pre_tokenize_str(text)[-1][1][0] :]
        keys[state] = text
        return text

    def keeps(self, grammar: MoleculeGrammar, state: tuple[int, int], token: int, next_state: tuple[int, int]) -> bool:
        """Whether `token` written in `state` stays canonical now and for some continuation allowed after it."""
        if token in self._tags:
            return True
        context = self._context(self.context_key(grammar, state), self.table.strings[token])
        return self.judge(context, token, self.follows(grammar, next_state))

    def judge(self, context: str, token: int, following: frozenset[str]) -> bool:
        """The verdict on `token` after the piece `context` with the texts `following` (cached)."""
        key = (context, token, following)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._judge(context, token, following)
        return verdict

    def _judge(self, context: str, token: int, following: frozenset[str]) -> bool:
        written = context + self.table.strings[token]
        kept = [*self._encode(context), token] if context else [token]
        if self._encode(written) != kept:
            return False
        if _BOUNDARY in following:
            return True
        return any(self._raw_encode(written + after)[: len(kept)] == kept for after in sorted(following))


@functools.lru_cache(maxsize=None)
def _digits(precision: int, max_int_digits: int) -> tuple[str, ...]:
    """A representative text reaching each state of the number DFA (`1` for any non-zero digit), then a whole number."""
    dfa = NumberDfa(precision, max_int_digits)
    found = {dfa.START: ""}
    frontier = [dfa.START]
    while frontier:
        grown = []
        for q in frontier:
            for ch in "1-0.":
                nxt = int(dfa.transitions[q, _CLASS[ch]])
                if nxt >= 0 and nxt not in found:
                    found[nxt] = found[q] + ch
                    grown.append(nxt)
        frontier = grown
    n = len(dfa.accepting)
    whole = next(found[q] for q in range(n) if dfa.accepting[q])
    return (*(found.get(q, "") for q in range(n)), whole)


_FILTERS: "weakref.WeakKeyDictionary[object, CanonicalFilter]" = weakref.WeakKeyDictionary()


def canonical_filter(tokenizer) -> CanonicalFilter:
    """The `CanonicalFilter` of a tokenizer, cached for the tokenizer object's lifetime: its verdicts are facts
    about the tokenizer, so every run of the process reuses them (their number is bounded by the vocabulary)."""
    canon = _FILTERS.get(tokenizer)
    if canon is None:
        canon = _FILTERS[tokenizer] = CanonicalFilter(tokenizer)
    return canon


def is_canonical(tokenizer, ids: Sequence[int]) -> bool:
    """Whether `ids` is what the tokenizer makes of their own text (decode, then encode)."""
    text = tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return tokenizer.encode(text, add_special_tokens=False) == list(ids)

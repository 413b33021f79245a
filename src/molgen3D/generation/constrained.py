"""Structure-constrained decoding: the only grammar of conformer text the samplers use.

The prompt fixes the molecule, so the answer is known up to its numbers:
`[CONFORMER]` seg0 `<x,y,z>` seg1 ... `<x,y,z>` segN `[/CONFORMER]` where the segments come
from `enriched_smiles.coordinate_template`. The model may only choose the numbers, each
`-?(0|[1-9][0-9]{0,m-1})` `.` and exactly `precision` digits.

Tokens may span several characters and cross the literal/number boundary (Qwen's BPE has
tokens like `]<`, `,-` or `>[`), so the rule is character level: a token is allowed iff its
text keeps the generated text a prefix of the language. `TokenTable` turns a tokenizer's
vocabulary into a padded character matrix once; `MoleculeGrammar` then finds the allowed
tokens of a state by walking only the tokens whose first character fits, all of them at
once, column by column (numpy), and memoises the answer with each token's next state.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from molgen3D.chem.enriched_smiles import coordinate_template
from molgen3D.chem.tagged_text import CONFORMER_CLOSE, CONFORMER_OPEN, EOT

__all__ = ["GrammarError", "MoleculeGrammar", "NumberDfa", "TokenTable", "token_table"]

# The conformer tags are single added tokens in MolGen3D tokenizers; inside the grammar each
# is one private-use character, so only the tag token (never `[`, `CON`, ...) can write it.
_TAG_CHARS = {CONFORMER_OPEN: "\ue000", CONFORMER_CLOSE: "\ue001"}
_PAD = -1
_NO_ROWS = np.zeros(0, dtype=np.int64)


class GrammarError(ValueError):
    """The tokenizer cannot express the conformer language, or a template cannot be built."""


@dataclass(frozen=True, eq=False)
class TokenTable:
    """The per-tokenizer string facts constrained decoding needs, computed once."""

    vocab_size: int
    """len(tokenizer): ids at or above it (padded logits rows) are never sampled."""
    strings: tuple[str, ...]
    """Decoded text of every id (tags as written, e.g. `[/CONFORMER]`)."""
    eos_id: int
    """<|endoftext|>."""
    tag_ids: dict[str, int]
    """`[CONFORMER]` / `[/CONFORMER]` -> id when the tokenizer has them as single tokens."""
    cand_ids: np.ndarray
    """Ids of tokens that can occur in conformer text (printable ASCII, no whitespace, or a tag)."""
    codes: np.ndarray
    """(len(cand_ids), max_len) int32 character codes of those tokens, -1 padded; tags are one private char."""
    lengths: np.ndarray
    """Character length of each candidate."""
    by_first: dict[int, np.ndarray]
    """First character code -> rows of `codes` starting with it."""

    _moves: dict = field(default_factory=dict, repr=False)
    """NumberDfa -> `number_moves` result (filled on first use)."""

    def number_moves(
        self, dfa: "NumberDfa"
    ) -> list[tuple[np.ndarray, np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]]:
        """Per DFA state q: (rows staying inside the number, their end states, {char: (rows leaving, column)}).

        A token leaves a complete number at the first character the DFA cannot take; rows are
        grouped by that character, which must then start the next literal.
        """
        key = (dfa.precision, dfa.max_int_digits)
        if key not in self._moves:
            self._moves[key] = _number_moves(self, dfa)
        return self._moves[key]

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end a free-running sample."""
        close = self.tag_ids.get(CONFORMER_CLOSE)
        return frozenset({self.eos_id} | ({close} if close is not None else set()))


def _number_moves(table: TokenTable, dfa: "NumberDfa") -> list:
    classes = NumberDfa.char_class(table.codes)
    moves = []
    for q in range(len(dfa.accepting)):
        state = np.full(len(table.lengths), q, dtype=np.int64)
        alive = np.ones(len(table.lengths), dtype=bool)
        exit_col = np.full(len(table.lengths), -1, dtype=np.int64)
        for col in range(table.codes.shape[1]):
            idx = np.flatnonzero(alive & (exit_col < 0) & (table.lengths > col))
            if idx.size == 0:
                break
            nq = dfa.transitions[state[idx], classes[idx, col]]
            takes = nq >= 0
            state[idx[takes]] = nq[takes]
            leaving = ~takes & dfa.accepting[state[idx]]
            exit_col[idx[leaving]] = col
            alive[idx[~takes & ~leaving]] = False
        inside, leaves = np.flatnonzero(alive & (exit_col < 0)), np.flatnonzero(alive & (exit_col >= 0))
        exit_chars = table.codes[leaves, exit_col[leaves]]
        by_char = {
            int(ch): (leaves[exit_chars == ch], exit_col[leaves[exit_chars == ch]]) for ch in np.unique(exit_chars)
        }
        moves.append((inside, state[inside], by_char))
    return moves


_TABLES: "weakref.WeakKeyDictionary[object, TokenTable]" = weakref.WeakKeyDictionary()


def token_table(tokenizer) -> TokenTable:
    """The `TokenTable` of a Hugging Face tokenizer, cached for the tokenizer object's lifetime."""
    table = _TABLES.get(tokenizer)
    if table is None:
        table = _TABLES[tokenizer] = _build_table(tokenizer)
    return table


def _build_table(tokenizer) -> TokenTable:
    vocab_size = len(tokenizer)
    strings = tokenizer.batch_decode(
        [[i] for i in range(vocab_size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    added = tokenizer.get_added_vocab()
    eos_id = added.get(EOT, tokenizer.convert_tokens_to_ids(EOT))
    if eos_id is None or eos_id == getattr(tokenizer, "unk_token_id", None):
        raise GrammarError(f"tokenizer {tokenizer.name_or_path!r} has no {EOT} token")
    tag_ids = {tag: added[tag] for tag in _TAG_CHARS if tag in added}
    tag_chars = {added[tag]: _TAG_CHARS[tag] for tag in tag_ids}
    excluded = set(added.values()) - set(tag_chars)

    cand_ids, texts = [], []
    for i, text in enumerate(strings):
        if i in excluded or not text:
            continue
        if i in tag_chars:
            texts.append(tag_chars[i])
        elif all(33 <= ord(ch) <= 126 for ch in text):
            texts.append(text)
        else:
            continue
        cand_ids.append(i)
    max_len = max(map(len, texts))
    codes = np.full((len(texts), max_len), _PAD, dtype=np.int32)
    lengths = np.fromiter(map(len, texts), dtype=np.int32, count=len(texts))
    for row, text in enumerate(texts):
        codes[row, : len(text)] = np.frombuffer(text.encode("utf-32-le"), dtype=np.int32)
    firsts = codes[:, 0]
    order = np.argsort(firsts, kind="stable")
    uniq, starts = np.unique(firsts[order], return_index=True)
    by_first = {int(c): rows for c, rows in zip(uniq, np.split(order, starts[1:]))}
    table = TokenTable(
        vocab_size=vocab_size,
        strings=tuple(strings),
        eos_id=int(eos_id),
        tag_ids=tag_ids,
        cand_ids=np.asarray(cand_ids, dtype=np.int64),
        codes=codes,
        lengths=lengths,
        by_first=by_first,
    )
    _check_concatenative(tokenizer, table)
    return table


def _check_concatenative(tokenizer, table: TokenTable) -> None:
    """Constrained decoding reasons on per-token text; the tokenizer's decode must agree with it."""
    sample = f"{CONFORMER_OPEN}[C]<-1.2300,0.0000,12.5000>[C@@H](=O)1[nH]<0.1000,2.0000,-3.0000>1{CONFORMER_CLOSE}"
    ids = tokenizer.encode(sample, add_special_tokens=False)
    joined = "".join(table.strings[i] for i in ids)
    if joined != sample:
        raise GrammarError(
            f"tokenizer {tokenizer.name_or_path!r}: per-token texts join to {joined!r}, not the encoded text "
            f"{sample!r}; constrained decoding needs a decoder that concatenates token texts"
        )


@dataclass(frozen=True)
class NumberDfa:
    """One coordinate: `-?(0|[1-9][0-9]{0,m-1})` then `.` and exactly `precision` digits."""

    precision: int = 4
    """Digits after the decimal point (the data's fixed count)."""
    max_int_digits: int = 3
    """Longest integer part (3 = up to 999 A); keeps a number from growing forever."""
    transitions: np.ndarray = field(init=False, repr=False)
    """(states, 5 char classes) -> next state or -1; classes: '0', '1'-'9', '-', '.', other."""
    accepting: np.ndarray = field(init=False, repr=False)
    """States at which the number may end."""

    START, SIGN, ZERO = 0, 1, 2

    def __post_init__(self):
        if self.precision < 0 or self.max_int_digits < 1:
            raise GrammarError(
                f"need precision >= 0 and max_int_digits >= 1, got {self.precision}, {self.max_int_digits}"
            )
        m, d = self.max_int_digits, self.precision
        first_int, first_frac = 3, 3 + m
        n_states = first_frac + (d + 1 if d else 0)
        t = np.full((n_states, 5), -1, dtype=np.int16)
        zero, nonzero, minus, dot = 0, 1, 2, 3
        t[self.START, minus] = self.SIGN
        for q in (self.START, self.SIGN):
            t[q, zero] = self.ZERO
            t[q, nonzero] = first_int
        for k in range(m - 1):
            t[first_int + k, [zero, nonzero]] = first_int + k + 1
        accepting = np.zeros(n_states, dtype=bool)
        if d:
            t[[self.ZERO, *range(first_int, first_frac)], dot] = first_frac
            for j in range(d):
                t[first_frac + j, [zero, nonzero]] = first_frac + j + 1
            accepting[first_frac + d] = True
        else:
            accepting[[self.ZERO, *range(first_int, first_frac)]] = True
        object.__setattr__(self, "transitions", t)
        object.__setattr__(self, "accepting", accepting)

    @staticmethod
    def char_class(codes: np.ndarray) -> np.ndarray:
        """Character codes -> the DFA's classes (0 '0', 1 '1'-'9', 2 '-', 3 '.', 4 anything else)."""
        cls = np.full(codes.shape, 4, dtype=np.int8)
        cls[codes == ord("0")] = 0
        cls[(codes >= ord("1")) & (codes <= ord("9"))] = 1
        cls[codes == ord("-")] = 2
        cls[codes == ord(".")] = 3
        return cls


@dataclass(frozen=True)
class Allowed:
    """The tokens allowed in one state and the state each leads to (aligned arrays)."""

    ids: np.ndarray
    next_items: np.ndarray
    next_subs: np.ndarray


_EMPTY = Allowed(_NO_ROWS, _NO_ROWS, _NO_ROWS)


class MoleculeGrammar:
    """The conformer language of one molecule as items: literal, number, literal, number, ..., literal.

    A state is `(item, sub)`: for a literal item, `sub` is the offset of the next character to
    write; for a number item, the `NumberDfa` state. `(n_items, 0)` is the end (all written).
    """

    start = (0, 0)

    def __init__(self, smiles: str, table: TokenTable, dfa: NumberDfa | None = None):
        self.smiles = smiles
        self.memo: dict = {}
        """Room for callers' caches about this grammar (freed with it, so they never outlive or mix grammars)."""
        self.table = table
        self.dfa = dfa or NumberDfa()
        segments = coordinate_template(smiles)
        if len(segments) < 2:
            raise GrammarError(f"SMILES {smiles!r} has no atoms")
        open_text = _TAG_CHARS[CONFORMER_OPEN] if CONFORMER_OPEN in table.tag_ids else CONFORMER_OPEN
        close_text = _TAG_CHARS[CONFORMER_CLOSE] if CONFORMER_CLOSE in table.tag_ids else CONFORMER_CLOSE
        literals = [f"{open_text}{segments[0]}<"]
        for seg in segments[1:-1]:
            literals += [",", ",", f">{seg}<"]
        literals += [",", ",", f">{segments[-1]}{close_text}"]
        self.literals = literals
        width = max(map(len, literals))
        self.lit_codes = np.full((len(literals), width + 1), _PAD, dtype=np.int32)
        for k, lit in enumerate(literals):
            self.lit_codes[k, : len(lit)] = [ord(ch) for ch in lit]
        self.lit_len = np.array([len(lit) for lit in literals], dtype=np.int32)
        self.n_items = 2 * len(literals) - 1
        sizes = [len(literals[k // 2]) if k % 2 == 0 else len(self.dfa.accepting) for k in range(self.n_items)]
        self.item_base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        """Local index of state (item, sub) = item_base[item] + sub; the end state is item_base[n_items]."""
        self._memo: dict[tuple[int, int], Allowed] = {}

    @property
    def num_states(self) -> int:
        """Every (item, sub) state plus the end: the size of this grammar's block of decoding-table rows."""
        return int(self.item_base[-1]) + 1

    def local_index(self, items: np.ndarray, subs: np.ndarray) -> np.ndarray:
        """Local indices of states given as aligned item / sub arrays."""
        return self.item_base[np.minimum(items, self.n_items)] + np.where(items >= self.n_items, 0, subs)

    def state_of(self, local: int) -> tuple[int, int]:
        """The (item, sub) state of a local index."""
        item = int(np.searchsorted(self.item_base, local, side="right")) - 1
        return (item, 0) if item >= self.n_items else (item, local - int(self.item_base[item]))

    def exits(self, item: int, sub: int) -> Allowed:
        """From number state (item, sub): tokens that finish the number and go on into the next literal (no memo)."""
        exits = self.table.number_moves(self.dfa)[sub][2]
        rows, cols = exits.get(int(self.lit_codes[(item + 1) // 2, 0]), (_NO_ROWS, _NO_ROWS))
        return self._walk(rows, cols, item + 1, 0)

    def literal_moves(self, item: int, sub: int) -> Allowed:
        """From literal state (item, sub): the tokens that write on from there (no memo)."""
        rows = self.table.by_first.get(int(self.lit_codes[item // 2, sub]), _NO_ROWS)
        return self._walk(rows, np.zeros(len(rows), dtype=np.int64), item, sub)

    def is_end(self, state: tuple[int, int]) -> bool:
        return state[0] >= self.n_items

    def allowed(self, state: tuple[int, int]) -> Allowed:
        """Tokens that keep the text a prefix of the language from `state` (memoised)."""
        hit = self._memo.get(state)
        if hit is None:
            hit = self._memo[state] = self._expand(*state)
        return hit

    def _expand(self, item: int, sub: int) -> Allowed:
        if item >= self.n_items:
            return _EMPTY
        if item % 2 == 0:
            rows = self.table.by_first.get(int(self.lit_codes[item // 2, sub]), _NO_ROWS)
            return self._walk(rows, np.zeros(len(rows), dtype=np.int64), item, sub)
        # Inside a number: tokens that stay in it are precomputed per DFA state; only tokens
        # that finish the number and go on into the next literal are walked here.
        inside_rows, inside_ends, exits = self.table.number_moves(self.dfa)[sub]
        exit_rows, exit_cols = exits.get(int(self.lit_codes[(item + 1) // 2, 0]), (_NO_ROWS, _NO_ROWS))
        walked = self._walk(exit_rows, exit_cols, item + 1, 0)
        return Allowed(
            np.concatenate([self.table.cand_ids[inside_rows], walked.ids]),
            np.concatenate([np.full(len(inside_rows), item, dtype=np.int64), walked.next_items]),
            np.concatenate([inside_ends.astype(np.int64), walked.next_subs]),
        )

    def _walk(self, rows: np.ndarray, cols: np.ndarray, item: int, sub: int) -> Allowed:
        """Run candidate `rows` from character `cols` on, all starting in state (item, sub), column by column."""
        if len(rows) == 0:
            return _EMPTY
        codes, lengths = self.table.codes[rows], self.table.lengths[rows]
        items = np.full(len(rows), item, dtype=np.int64)
        subs = np.full(len(rows), sub, dtype=np.int64)
        alive = np.ones(len(rows), dtype=bool)
        trans, accepting = self.dfa.transitions, self.dfa.accepting
        for step in range(int((lengths - cols).max())):
            idx = np.flatnonzero(alive & (lengths > cols + step))
            if idx.size == 0:
                break
            c = codes[idx, cols[idx] + step]
            it, sb = items[idx], subs[idx]
            ok = it < self.n_items
            is_num = ok & (it % 2 == 1)
            # A number takes the character if its DFA can; else, if complete, the next literal does.
            q = np.where(is_num, sb, 0)
            nq = trans[q, NumberDfa.char_class(c)]
            takes = is_num & (nq >= 0)
            leaves = is_num & ~takes & accepting[q]
            ok &= ~(is_num & ~takes & ~leaves)
            sb = np.where(takes, nq, sb)
            it = np.where(leaves, it + 1, it)
            sb = np.where(leaves, 0, sb)
            in_lit = ok & ~takes & (it % 2 == 0)
            lit_k = np.where(in_lit, it // 2, 0)
            lit_sb = np.where(in_lit, sb, 0)
            ok &= ~in_lit | (self.lit_codes[lit_k, lit_sb] == c)
            sb = np.where(in_lit, sb + 1, sb)
            finished = in_lit & (sb >= self.lit_len[lit_k])
            it = np.where(finished, it + 1, it)
            sb = np.where(finished, 0, sb)
            items[idx], subs[idx] = it, sb
            alive[idx] = ok
        keep = np.flatnonzero(alive)
        return Allowed(self.table.cand_ids[rows[keep]], items[keep], subs[keep])

    def advance(self, state: tuple[int, int], token_id: int) -> tuple[int, int] | None:
        """The state after `token_id`, or None if the token is not allowed (used to replay texts)."""
        allowed = self.allowed(state)
        hits = np.flatnonzero(allowed.ids == token_id)
        if hits.size == 0:
            return None
        k = int(hits[0])
        return int(allowed.next_items[k]), int(allowed.next_subs[k])

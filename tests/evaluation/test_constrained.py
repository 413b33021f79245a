"""The conformer grammar on real tokenizers: the data's own texts pass, anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest

from molgen3D.chem.enriched_smiles import decode, strip_coordinates
from molgen3D.chem.units import CONFORMER_CLOSE, CONFORMER_OPEN
from molgen3D.evaluation.constrained import MoleculeGrammar, NumberDfa, token_table

from .helpers import fixture_lines


def run_dfa(dfa: NumberDfa, text: str) -> int | None:
    """DFA state after `text`, None if rejected."""
    q = dfa.START
    for ch in text:
        q = int(dfa.transitions[q, NumberDfa.char_class(np.array([ord(ch)]))[0]])
        if q < 0:
            return None
    return q


@pytest.mark.parametrize("text,complete", [
    ("1.2300", True), ("-0.0001", True), ("0.0000", True), ("-123.4567", True),
    ("12.345", False), ("1.", False), ("-", False),
])
def test_number_dfa_accepts_fixed_decimals(text, complete):
    dfa = NumberDfa(precision=4, max_int_digits=3)
    q = run_dfa(dfa, text)
    assert q is not None and bool(dfa.accepting[q]) == complete


@pytest.mark.parametrize("text", ["1.23456", "01.0000", "1234.0000", "--1.0000", ".5000", "1,0000", "+1.0000"])
def test_number_dfa_rejects(text):
    assert run_dfa(NumberDfa(precision=4, max_int_digits=3), text) is None


def test_precision_zero_numbers_have_no_point():
    dfa = NumberDfa(precision=0, max_int_digits=2)
    assert dfa.accepting[run_dfa(dfa, "-12")] and run_dfa(dfa, "1.") is None


@pytest.fixture(params=["compact", "qwen"])
def tokenizer(request, compact_tokenizer, qwen_custom_tokenizer):
    return compact_tokenizer if request.param == "compact" else qwen_custom_tokenizer


def test_training_texts_replay_token_by_token(tokenizer, fixture_data):
    """Every token of a real training conformer is allowed in turn, and the text ends the language."""
    table = token_table(tokenizer)
    for line in fixture_lines(fixture_data, "valid")[::3]:
        grammar = MoleculeGrammar(line["canonical_smiles"], table)
        ids = tokenizer.encode(f"{CONFORMER_OPEN}{line['embedded_smiles']}{CONFORMER_CLOSE}", add_special_tokens=False)
        state = grammar.start
        for i in ids:
            state = grammar.advance(state, i)
            assert state is not None, f"token {tokenizer.convert_ids_to_tokens([i])} refused"
        assert grammar.is_end(state)


def test_random_walks_are_graph_identical_conformers(tokenizer, fixture_data):
    """Uniform choices among allowed tokens (a model with no knowledge) still write the prompt's molecule."""
    table = token_table(tokenizer)
    rng = np.random.default_rng(0)
    for smiles in sorted({r["canonical_smiles"] for r in fixture_lines(fixture_data, "test")}):
        grammar = MoleculeGrammar(smiles, table)
        state, ids = grammar.start, []
        while not grammar.is_end(state):
            allowed = grammar.allowed(state)
            k = int(rng.integers(len(allowed.ids)))
            ids.append(int(allowed.ids[k]))
            state = (int(allowed.next_items[k]), int(allowed.next_subs[k]))
        text = tokenizer.decode(ids)
        assert text.startswith(CONFORMER_OPEN) and text.endswith(CONFORMER_CLOSE)
        body = text[len(CONFORMER_OPEN):-len(CONFORMER_CLOSE)]
        assert strip_coordinates(body) == smiles
        assert decode(body).GetNumAtoms() == body.count("<")


def allowed_texts(tokenizer, grammar, state) -> set[str]:
    return {tokenizer.decode([int(i)]) for i in grammar.allowed(state).ids}


def walk_text(tokenizer, grammar, text: str):
    """State after the text (encoded with the tokenizer)."""
    state = grammar.start
    for i in tokenizer.encode(text, add_special_tokens=False):
        state = grammar.advance(state, i)
        assert state is not None
    return state


def test_qwen_tokens_may_cross_literal_and_number(qwen_custom_tokenizer):
    grammar = MoleculeGrammar("CO", token_table(qwen_custom_tokenizer))
    # after `[CONFORMER][C` the literal `]<` remains, then a number: Qwen has `]<` and `]` tokens
    state = walk_text(qwen_custom_tokenizer, grammar, f"{CONFORMER_OPEN}[C")
    texts = allowed_texts(qwen_custom_tokenizer, grammar, state)
    assert "]" in texts and "]<" in texts
    assert all("]<".startswith(t) or t.startswith("]<") for t in texts)
    # a complete x: only the separator may follow, possibly glued to a sign (`,-`)
    state = walk_text(qwen_custom_tokenizer, grammar, f"{CONFORMER_OPEN}[C]<1.2345")
    texts = allowed_texts(qwen_custom_tokenizer, grammar, state)
    assert "," in texts and ",-" in texts and not any(t[0].isdigit() for t in texts)


def test_tags_only_as_their_own_tokens(qwen_custom_tokenizer):
    table = token_table(qwen_custom_tokenizer)
    grammar = MoleculeGrammar("C", table)
    assert set(grammar.allowed(grammar.start).ids.tolist()) == {table.tag_ids[CONFORMER_OPEN]}
    state = walk_text(qwen_custom_tokenizer, grammar, f"{CONFORMER_OPEN}[C]<1.0000,2.0000,3.0000>")
    assert set(grammar.allowed(state).ids.tolist()) == {table.tag_ids[CONFORMER_CLOSE]}
    assert grammar.is_end(grammar.advance(state, table.tag_ids[CONFORMER_CLOSE]))


def test_decimals_and_digits_are_enforced(compact_tokenizer):
    table = token_table(compact_tokenizer)
    grammar = MoleculeGrammar("CC", table, NumberDfa(precision=4, max_int_digits=2))
    state = walk_text(compact_tokenizer, grammar, f"{CONFORMER_OPEN}[C]<1.23")
    texts = allowed_texts(compact_tokenizer, grammar, state)
    assert texts and all(t.isdigit() and len(t) <= 2 for t in texts)  # two more digits at most, nothing else
    state = walk_text(compact_tokenizer, grammar, f"{CONFORMER_OPEN}[C]<12")
    assert all(t.startswith(".") for t in allowed_texts(compact_tokenizer, grammar, state))  # a third digit is too many


def test_structure_is_forced(compact_tokenizer):
    """Between coordinates, the only freedom is how to spell the forced literal, never what it says."""
    grammar = MoleculeGrammar("CC(=O)N", token_table(compact_tokenizer))
    state = walk_text(compact_tokenizer, grammar, f"{CONFORMER_OPEN}[C]<1.0000,1.0000,1.0000>[C]<1.0000,1.0000,1.0000")
    texts = allowed_texts(compact_tokenizer, grammar, state)
    literal = ">(=[O]<"
    assert texts and all(literal.startswith(t) or t.startswith(literal) for t in texts)

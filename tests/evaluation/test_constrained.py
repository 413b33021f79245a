"""The conformer grammar on real tokenizers: the data's own texts pass, anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest

from molgen3D.chem.enriched_smiles import decode, strip_coordinates
from molgen3D.chem.tagged_text import CONFORMER_CLOSE, CONFORMER_OPEN
from molgen3D.generation.constrained import MoleculeGrammar, NumberDfa, token_table

from .helpers import fixture_lines


def run_dfa(dfa: NumberDfa, text: str) -> int | None:
    """DFA state after `text`, None if rejected."""
    q = dfa.START
    for ch in text:
        q = int(dfa.transitions[q, NumberDfa.char_class(np.array([ord(ch)]))[0]])
        if q < 0:
            return None
    return q


@pytest.mark.parametrize(
    "text,complete",
    [
        ("1.2300", True),
        ("-0.0001", True),
        ("0.0000", True),
        ("-123.4567", True),
        ("12.345", False),
        ("1.", False),
        ("-", False),
    ],
)
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
        body = text[len(CONFORMER_OPEN) : -len(CONFORMER_CLOSE)]
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


def test_is_canonical_tells_a_split_from_the_tokenizers_own(qwen_custom_tokenizer):
    from molgen3D.generation.canonical import is_canonical

    tok = qwen_custom_tokenizer
    own = tok.encode("[C]<-1.5,0.0,2.0>", add_special_tokens=False)
    split = [tok.convert_tokens_to_ids("["), tok.convert_tokens_to_ids("C"), *own[1:]]
    assert tok.decode(split) == tok.decode(own) and own[0] != split[0]
    assert is_canonical(tok, own) and not is_canonical(tok, split)


def test_canonical_filter_rejects_split_fractions_and_literals(compact_tokenizer):
    """`.23` where four decimals are due would merge with the next digits; `[` before `C]<` would merge too."""
    from molgen3D.generation.canonical import CanonicalFilter

    tok = compact_tokenizer
    grammar = MoleculeGrammar("CO", token_table(tok), NumberDfa(4, 3))
    state, history = grammar.start, []
    for i in tok.encode("[CONFORMER][C]<-1", add_special_tokens=False):
        state = grammar.advance(state, i)
        history.append(i)
    canon = CanonicalFilter(tok)
    whole, short = tok.convert_tokens_to_ids(".2345"), tok.convert_tokens_to_ids(".23")
    assert tok.unk_token_id not in (whole, short)
    assert canon.keeps(grammar, state, whole, grammar.advance(state, whole))
    assert not canon.keeps(grammar, state, short, grammar.advance(state, short))
    opened = grammar.advance(grammar.start, history[0])
    bracket, atom = tok.convert_tokens_to_ids("["), tok.convert_tokens_to_ids("[C]")
    assert canon.keeps(grammar, opened, atom, grammar.advance(opened, atom))
    assert not canon.keeps(grammar, opened, bracket, grammar.advance(opened, bracket))


@pytest.mark.parametrize("which", ["compact", "qwen"])
def test_canonical_constrained_samples_retokenize_to_the_same_ids(
    which, fixture_data, compact_tokenizer, qwen_custom_tokenizer
):
    """With the filter every sample decodes and re-tokenizes to the ids drawn; without it a random model splits."""
    import functools

    from molgen3D.generation.canonical import is_canonical
    from molgen3D.generation.decode_loops import run_with_cache
    from molgen3D.generation.sampling import SamplingConfig, plan_jobs, run_batches

    from .helpers import smallest_molecules, tiny_qwen3

    tokenizer = compact_tokenizer if which == "compact" else qwen_custom_tokenizer
    model = tiny_qwen3(len(tokenizer), seed=4)
    smiles = smallest_molecules(fixture_data, "train", 1)
    rates = {}
    for canonical in (True, False):
        cfg = SamplingConfig(canonical=canonical, batch_size=4, seed=2, max_new_tokens=1500)
        batches, _ = plan_jobs(tokenizer, smiles, [4], cfg)
        results = run_batches(functools.partial(run_with_cache, model), tokenizer, smiles, batches, cfg)
        ids = [r.token_ids for batch in results for r in batch]
        rates[canonical] = sum(is_canonical(tokenizer, i) for i in ids) / len(ids)
    assert rates[True] == 1.0 and rates[False] < 1.0

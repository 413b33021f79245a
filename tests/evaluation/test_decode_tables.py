"""The device tables against the grammar they are built from, and samples that do not depend on batching."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from molgen3D.generation.canonical import CanonicalFilter
from molgen3D.generation.constrained import MoleculeGrammar, NumberDfa, token_table
from molgen3D.generation.decode_loops import run_with_cache
from molgen3D.generation.decode_tables import GrammarTables
from molgen3D.generation.sampling import SamplingConfig, plan_jobs, run_batches

from .helpers import fixture_lines, smallest_molecules, tiny_qwen3


def reference_allowed(canon: CanonicalFilter, grammar: MoleculeGrammar, state, history: list[int]) -> set[int]:
    """The allowed set of the sampler before the tables: the grammar's tokens the canonical filter accepts
    after the text of the last three tokens actually written (tags left out); all of them when none is."""
    allowed = grammar.allowed(state)
    strings, tags = canon.table.strings, set(canon.table.tag_ids.values())
    text = "".join(strings[i] for i in history[-3:] if i not in tags)
    kept = set()
    for t, item, sub in zip(allowed.ids.tolist(), allowed.next_items.tolist(), allowed.next_subs.tolist()):
        if t in tags or canon.judge(canon._context(text, strings[t]), t, canon.follows(grammar, (item, sub))):
            kept.add(t)
    return kept or set(allowed.ids.tolist())


@pytest.mark.parametrize("which", ["compact", "qwen"])
@pytest.mark.parametrize("canonical", [True, False])
def test_tables_allow_what_the_grammar_allowed_on_random_walks(
    which, canonical, fixture_data, compact_tokenizer, qwen_custom_tokenizer
):
    tokenizer = compact_tokenizer if which == "compact" else qwen_custom_tokenizer
    table = token_table(tokenizer)
    dfa = NumberDfa(4, 3)
    canon = CanonicalFilter(tokenizer, table) if canonical else None
    tables = GrammarTables(table, dfa, canon)
    rng = np.random.default_rng(1)
    smiles_list = sorted({r["canonical_smiles"] for r in fixture_lines(fixture_data, "test")})[:4]
    compared = 0
    for smiles in smiles_list:
        grammar = MoleculeGrammar(smiles, table, dfa)
        row = tables.add(smiles)
        state, history = grammar.start, []
        while not grammar.is_end(state):
            expected = (
                reference_allowed(canon, grammar, state, history) if canon else set(grammar.allowed(state).ids.tolist())
            )
            assert tables.allowed_ids(row) == expected, (smiles, tokenizer.decode(history))
            compared += 1
            tok = int(rng.choice(sorted(expected)))
            ids, entries, valid = tables.candidates(torch.tensor([row]))
            row = int(tables.next_rows(torch.tensor([row]), entries[0][ids[0] == tok][:1])[0])
            state = grammar.advance(state, tok)
            history.append(tok)
        assert bool(tables.is_end.dev[row])
    assert compared > 100


def decode_texts(tokenizer, model, smiles, counts, batch_size, order=None):
    cfg = SamplingConfig(batch_size=batch_size, seed=3, max_new_tokens=1500)
    batches, _ = plan_jobs(tokenizer, smiles, counts, cfg)
    jobs = [job for batch in batches for job in batch]
    if order is not None:
        jobs = [jobs[k] for k in order]
    results = run_batches(functools.partial(run_with_cache, model), tokenizer, smiles, [jobs], cfg)[0]
    return {(job.mol, job.index): res.token_ids for job, res in zip(jobs, results)}


def test_same_samples_whatever_the_batch_size_and_refill_order(fixture_data, compact_tokenizer):
    """A sample depends on its seed only: batch 1, 2 and 5 (refilled as samples finish) and a shuffled queue agree."""
    model = tiny_qwen3(len(compact_tokenizer), seed=5)
    smiles = smallest_molecules(fixture_data, "train", 3)
    counts = [2, 2, 1]
    first = decode_texts(compact_tokenizer, model, smiles, counts, 1)
    assert len(first) == 5 and len({tuple(v) for v in first.values()}) == 5
    for batch_size, order in ((2, None), (5, None), (2, [4, 2, 0, 3, 1])):
        assert decode_texts(compact_tokenizer, model, smiles, counts, batch_size, order) == first

"""Decoding from random models: constrained samples always have the prompt's graph, free ones are counted."""

from __future__ import annotations

import functools

import pytest
import torch
from rdkit import Chem

from molgen3D.chem.enriched_smiles import decode, strip_coordinates
from molgen3D.generation.constrained import token_table
from molgen3D.generation.decode_loops import run_with_cache, run_without_cache
from molgen3D.generation.sampling import (
    GRAPH_MISMATCH,
    MAX_NEW_TOKENS,
    NO_OPEN_TAG,
    PARSE_ERROR,
    UNREPRESENTABLE,
    UNTERMINATED,
    SamplingConfig,
    finish_sample,
    sample_molecules,
)
from molgen3D.generation.token_sampler import SlotSampler, counter_uniform, draw

from .helpers import smallest_molecules, tiny_qwen3


@pytest.fixture(scope="module")
def molecules(fixture_data):
    return smallest_molecules(fixture_data, "train", 2)


def with_model(model):
    return functools.partial(run_with_cache, model)


@pytest.mark.parametrize("which", ["compact", "qwen"])
def test_constrained_samples_from_a_random_model_are_graph_identical(
    which, molecules, compact_tokenizer, qwen_custom_tokenizer
):
    tokenizer = compact_tokenizer if which == "compact" else qwen_custom_tokenizer
    model = tiny_qwen3(len(tokenizer))
    cfg = SamplingConfig(max_new_tokens=1500, batch_size=3, seed=1)
    outcomes = sample_molecules(with_model(model), tokenizer, molecules, [2, 1], cfg)
    assert [len(o) for o in outcomes] == [2, 1]
    for smiles, samples in zip(molecules, outcomes):
        for o in samples:
            assert o.failure is None, (o.failure, o.text[:200])
            assert strip_coordinates(o.text) == smiles
            mol = decode(o.text)
            assert Chem.MolToSmiles(mol) == smiles and mol.GetNumConformers() == 1
            assert o.mol.GetNumAtoms() == Chem.MolFromSmiles(smiles).GetNumAtoms()


def test_free_decoding_failures_are_counted(molecules, compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer), seed=3)
    cfg = SamplingConfig(constrained=False, max_new_tokens=40, batch_size=4, seed=0)
    outcomes = sample_molecules(with_model(model), compact_tokenizer, molecules, [3, 3], cfg)
    flat = [o for samples in outcomes for o in samples]
    assert len(flat) == 6 and sorted(o.sample_index for o in outcomes[0]) == [0, 1, 2]
    assert all(o.mol is None and o.failure is not None for o in flat)
    assert {o.failure for o in flat} <= {MAX_NEW_TOKENS, NO_OPEN_TAG, UNTERMINATED, PARSE_ERROR, GRAPH_MISMATCH}
    # a free sample that is cut off used the whole budget; one that stopped early did not
    for o in flat:
        assert (o.num_tokens == 40) == (o.failure == MAX_NEW_TOKENS)


def test_same_seed_same_samples_and_seed_matters(molecules, compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer))

    def run(seed):
        config = SamplingConfig(seed=seed, batch_size=2)
        return [o.text for o in sample_molecules(with_model(model), compact_tokenizer, molecules[:1], [2], config)[0]]

    first = run(5)
    assert run(5) == first and run(6) != first


@pytest.mark.parametrize("batch_size,trim", [(2, None), (1, None), (1, 1)])
def test_kv_cache_loop_matches_full_forward(molecules, compact_tokenizer, monkeypatch, batch_size, trim):
    """Greedy decoding with the cache (left padding, rows refilled or dropped as they finish, dead columns
    trimmed) equals recomputing everything."""
    from molgen3D.generation import decode_loops

    if trim is not None:
        monkeypatch.setattr(decode_loops, "_TRIM", trim)
    model = tiny_qwen3(len(compact_tokenizer), seed=2)
    cfg = SamplingConfig(temperature=0.0, batch_size=batch_size, max_new_tokens=1500)
    cached = sample_molecules(with_model(model), compact_tokenizer, molecules, [1, 1], cfg)
    full = sample_molecules(
        lambda prompts, sampler, pad: run_without_cache(lambda ids: model(input_ids=ids).logits, prompts, sampler, pad),
        compact_tokenizer,
        molecules,
        [1, 1],
        cfg,
    )
    assert [o[0].text for o in cached] == [o[0].text for o in full]


def test_unrepresentable_molecule_fails_every_sample(compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer))
    # a bare carbon radical is written [C], which the format cannot tell from a plain C
    outcomes = sample_molecules(
        with_model(model), compact_tokenizer, ["[C]O", "CO"], [2, 1], SamplingConfig(max_new_tokens=200)
    )
    assert [o.failure for o in outcomes[0]] == [UNREPRESENTABLE, UNREPRESENTABLE]
    assert outcomes[1][0].failure is None


def test_max_new_tokens_cuts_constrained_samples(molecules, compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer))
    out = sample_molecules(with_model(model), compact_tokenizer, molecules[:1], [2], SamplingConfig(max_new_tokens=10))
    assert [(o.failure, o.num_tokens) for o in out[0]] == [(MAX_NEW_TOKENS, 10)] * 2


def test_draw_respects_top_p_and_temperature():
    u = counter_uniform(torch.arange(2000), torch.zeros(2000, dtype=torch.long))
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    picks = draw(scores, 1.0, 0.7, u)
    # nucleus 0.7 keeps 0.5 and 0.3 (the first two reach 0.8 >= 0.7), renormalised to 5/8 and 3/8
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).float().mean().item() - 0.625) < 0.05
    assert draw(scores[:3], 0.0, 1.0, u[:3]).tolist() == [0, 0, 0]
    masked = scores[:500].clone()
    masked[:, 0] = float("-inf")
    assert 0 not in draw(masked, 1.0, 1.0, u[:500]).tolist()


def test_counter_uniforms_are_uniform_and_depend_on_seed_and_counter():
    seeds = torch.tensor([(1 << 62) + 5, 7]).repeat_interleave(5000)
    counters = torch.arange(5000).repeat(2)
    u = counter_uniform(seeds, counters)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert not torch.equal(u[:5000], u[5000:]) and len(set(u[:5000].tolist())) > 4900


def test_finish_sample_reasons():
    ok = "[CONFORMER][C]<0.0000,0.0000,0.0000>[O]<1.4000,0.0000,0.0000>[/CONFORMER]"
    mol, failure, body = finish_sample(ok + "<|endoftext|>", "CO", None)
    assert failure is None and mol.GetNumAtoms() == 2 and body.startswith("[C]<")
    assert finish_sample(ok, "CN", None)[1] == GRAPH_MISMATCH
    assert finish_sample(ok[len("[CONFORMER]") :], "CO", None)[1] == NO_OPEN_TAG
    assert finish_sample(ok[: -len("[/CONFORMER]")], "CO", None)[1] == UNTERMINATED
    assert finish_sample("[CONFORMER][C]<0.0000,0.0000>[/CONFORMER]", "C", None)[1] == PARSE_ERROR
    assert finish_sample(ok, "CO", MAX_NEW_TOKENS)[1] == MAX_NEW_TOKENS
    # the same graph written in another atom order is still the prompt's molecule
    other = "[CONFORMER][O]<1.4000,0.0000,0.0000>[C]<0.0000,0.0000,0.0000>[/CONFORMER]"
    assert finish_sample(other, "CO", None)[1] is None


def test_sampler_pads_finished_rows_with_eos(compact_tokenizer):
    table = token_table(compact_tokenizer)
    sampler = SlotSampler(table, None, None, [0, 1], [5, 5], [MAX_NEW_TOKENS] * 2, slots=2)
    sampler.load([0, 1])
    logits = torch.full((2, table.vocab_size + 7), -1e9)  # padded vocab rows are never sampled
    logits[0, table.eos_id] = 0.0
    logits[1, 5] = 0.0
    logits[:, table.vocab_size :] = 1e9
    first, finished = sampler.step(logits)
    assert first.tolist() == [table.eos_id, 5] and finished == [0] and sampler.live.tolist() == [False, True]
    second, _ = sampler.step(logits)
    assert second[0].item() == table.eos_id and sampler.results[0].token_ids == [table.eos_id]


def test_free_decoding_stops_at_a_close_tag_spelled_in_pieces(qwen_origin_tokenizer):
    """A tokenizer without a `[/CONFORMER]` token: free decoding still stops when the text closes."""
    from molgen3D.chem.tagged_text import CONFORMER_CLOSE

    table = token_table(qwen_origin_tokenizer)
    assert CONFORMER_CLOSE not in table.tag_ids
    pieces = qwen_origin_tokenizer.encode(f"[C]{CONFORMER_CLOSE}", add_special_tokens=False)
    sampler = SlotSampler(table, None, None, [0, 1], [50, 50], [MAX_NEW_TOKENS] * 2, slots=2)
    sampler.load([0, 1])
    finished = []
    for tok in pieces:
        logits = torch.full((2, table.vocab_size), -1e9)
        logits[0, tok] = 0.0
        logits[1, pieces[0]] = 0.0
        finished += sampler.step(logits)[1]
    assert finished == [0] and sampler.results[0].stop is None
    assert qwen_origin_tokenizer.decode(sampler.results[0].token_ids).endswith(CONFORMER_CLOSE)
    assert sampler.results[1] is None and sampler.live.tolist() == [False, True]

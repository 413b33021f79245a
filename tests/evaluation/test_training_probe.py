"""The training-time probe: reproducible molecule choice, and scores that mean what they say."""

from __future__ import annotations

import functools
import math

import torch

from molgen3D.chem.tagged_text import format_prompt, format_unit
from molgen3D.evaluation.training_probe import load_references, sample_and_score

from .helpers import fixture_lines, tiny_qwen3


def test_load_references_is_seeded_and_order_free(fixture_data, tmp_path):
    refs = load_references(fixture_data / "train", num_molecules=4, seed=3)
    assert len(refs) == 4 and len({s for s, _ in refs}) == 4
    assert all(len(confs) == 3 and confs[0].GetNumConformers() == 1 for _, confs in refs)
    assert [s for s, _ in load_references(fixture_data / "train", 4, seed=3)] == [s for s, _ in refs]
    assert [s for s, _ in load_references(fixture_data / "train", 4, seed=4)] != [s for s, _ in refs]
    # the same lines in another order (and file) give the same molecules
    lines = (fixture_data / "train" / "part-00000.jsonl").read_text().splitlines()
    shuffled = tmp_path / "split"
    shuffled.mkdir()
    (shuffled / "a.jsonl").write_text("\n".join(reversed(lines[: len(lines) // 2])) + "\n")
    (shuffled / "b.jsonl").write_text("\n".join(lines[len(lines) // 2 :]) + "\n")
    assert sorted(s for s, _ in load_references(shuffled, 4, seed=3)) == sorted(s for s, _ in refs)


def oracle_logits_fn(units: list[tuple[list[int], list[int]]], vocab: int):
    """A 'model' that predicts the next token of the reference unit whose prompt the row starts with.

    `units` = (prompt ids, unit ids); `vocab` may exceed the tokenizer (padded embedding rows).
    """

    def logits_fn(ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(ids.shape[0], ids.shape[1], vocab)
        for b, row in enumerate(ids.tolist()):
            unit = next(u for p, u in units if row[: len(p)] == p)
            for t in range(min(len(row), len(unit) - 1)):
                out[b, t, unit[t + 1]] = 50.0
        return out

    return logits_fn


def test_a_model_that_writes_the_reference_scores_zero(fixture_data, compact_tokenizer):
    refs = load_references(fixture_data / "valid", num_molecules=2, seed=0)
    first = {}
    for line in fixture_lines(fixture_data, "valid"):
        first.setdefault(line["canonical_smiles"], line["embedded_smiles"])
    encode = functools.partial(compact_tokenizer.encode, add_special_tokens=False)
    units = [(encode(format_prompt(s)), encode(format_unit(s, first[s]))) for s, _ in refs]
    result = sample_and_score(
        oracle_logits_fn(units, len(compact_tokenizer) + 5),
        compact_tokenizer,
        refs,
        samples_per_molecule=2,
        max_new_tokens=600,
        temperature=1.0,
        seed=0,
    )
    assert result["conformer_samples"] == 4 and result["conformer_validity"] == 1.0
    # the written coordinates are the reference's truncated to 4 decimals
    assert result["conformer_mean_best_rmsd"] < 1e-3


def test_random_model_probe(fixture_data, compact_tokenizer, compact_tokenizer_dir):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    refs = load_references(fixture_data / "valid", num_molecules=1, seed=0)
    model = tiny_qwen3(len(compact_tokenizer))
    # the validator holds TorchTitan's tokenizer wrapper; the probe accepts it as well
    titan_tokenizer = HuggingFaceTokenizer(str(compact_tokenizer_dir))
    result = sample_and_score(
        lambda ids: model(input_ids=ids).logits,
        titan_tokenizer,
        refs,
        samples_per_molecule=2,
        max_new_tokens=600,
        temperature=1.0,
        seed=0,
    )
    assert result["conformer_samples"] == 2 and result["conformer_validity"] == 1.0
    assert result["conformer_mean_best_rmsd"] > 5.0  # random coordinates are far from any conformer
    cut = sample_and_score(
        lambda ids: model(input_ids=ids).logits,
        compact_tokenizer,
        refs,
        samples_per_molecule=2,
        max_new_tokens=20,
        temperature=1.0,
        seed=0,
    )
    assert cut["conformer_validity"] == 0.0 and math.isnan(cut["conformer_mean_best_rmsd"])

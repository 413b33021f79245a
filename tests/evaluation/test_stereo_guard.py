"""The prompt's stereo by construction: whatever the model, every sample of a molecule whose SMILES specifies
stereo realises it, in every position format; stereo the prompt leaves open stays the model's choice."""

from __future__ import annotations

import functools

import pytest
from rdkit import Chem

from molgen3D.generation.decode_loops import run_with_cache
from molgen3D.generation.sampling import SamplingConfig, assemble, plan_jobs, run_batches
from molgen3D.generation.stereo_rules import stereo_rules
from molgen3D.scoring.checks import stereo_matches

from .helpers import tiny_qwen3

FIXTURES = [
    "C[C@H](N)O",  # implicit H: the three heavy neighbours
    "C[C@@](F)(Cl)Br",  # four heavy neighbours
    "C[C@H]1CCCCN1",  # ring centre, its last neighbour written through the ring closure
    "N[C@H]1CC[C@@H](O)CC1",  # two ring centres
    "C/C=C/C",  # E
    "C/C=C\\CO",  # Z
    "C1=C/CCCCCC/1",  # E across a ring closure (the double bond's neighbour is the closing atom)
    "O[C@H]1CCC/C1=C\\F",  # a centre and a double bond on a ring
]


def canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def sample(tokenizer, model, smiles, count, positions, stereo=True, batch_size=8, stats=None):
    cfg = SamplingConfig(
        batch_size=batch_size, seed=11, max_new_tokens=800, positions=positions, stereo=stereo, geometry=False
    )
    batches, failed = plan_jobs(tokenizer, smiles, [count] * len(smiles), cfg)
    results = run_batches(functools.partial(run_with_cache, model), tokenizer, smiles, batches, cfg, stats=stats)
    return assemble(tokenizer, smiles, batches, results, failed, positions), results


def test_rules_read_the_prompt():
    (centre,), _ = stereo_rules("C[C@H](N)O")
    assert (centre.kind, centre.atoms, centre.sign) == ("centre", (1, 0, 2, 3), 1)
    assert stereo_rules("C[C@@H](N)O")[0][0].sign == -1
    (trans,), _ = stereo_rules("C/C=C/C")
    (cis,), _ = stereo_rules("C/C=C\\C")
    assert (trans.kind, trans.atoms, trans.sign, cis.sign) == ("double_bond", (0, 1, 2, 3), -1, 1)
    assert stereo_rules("CC(N)O") == ([], 0) and stereo_rules("CC=CC") == ([], 0)


@pytest.mark.parametrize("positions", ["local", "relative", "absolute"])
def test_specified_stereo_holds_whatever_the_model(positions, compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer), seed=2)
    smiles = [canonical(s) for s in FIXTURES]
    stats = {}
    outcomes, _ = sample(compact_tokenizer, model, smiles, 10, positions, stats=stats)
    assert stats["stereo_rules"] == 10 and stats["stereo_unguarded"] == 0
    for smi, samples in zip(smiles, outcomes):
        valid = [o.mol for o in samples if o.mol is not None]
        # a random model's relative offsets can walk past the coordinate bound: those samples are not graded
        assert len(valid) >= 6 and {o.failure for o in samples} <= {None, "coordinate_out_of_range"}, smi
        assert all(stereo_matches(mol, smi) for mol in valid), smi


def test_without_the_guard_a_random_model_gets_stereo_wrong(compact_tokenizer):
    """What the guard is for: the same model and seeds, unguarded, write the other hand or side."""
    model = tiny_qwen3(len(compact_tokenizer), seed=2)
    smiles = [canonical(s) for s in FIXTURES[:6]]
    outcomes, _ = sample(compact_tokenizer, model, smiles, 10, "local", stereo=False)
    matches = [stereo_matches(o.mol, smi) for smi, samples in zip(smiles, outcomes) for o in samples if o.mol]
    assert 0 < sum(matches) < len(matches)


def test_unspecified_stereo_stays_free(compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer), seed=2)
    smiles = ["CC(N)O", "CC=CC"]
    stats = {}
    outcomes, _ = sample(compact_tokenizer, model, smiles, 16, "local", stats=stats)
    assert stats["stereo_rules"] == 0
    seen: list[set[str]] = [set(), set()]
    for k, samples in enumerate(outcomes):
        for o in samples:
            mol = Chem.Mol(o.mol)
            Chem.AssignStereochemistryFrom3D(mol)
            seen[k].add(Chem.MolToSmiles(mol))
    assert len(seen[0]) >= 2 and len(seen[1]) >= 2, seen


def test_same_guarded_samples_whatever_the_batch_size(compact_tokenizer):
    model = tiny_qwen3(len(compact_tokenizer), seed=4)
    smiles = [canonical(s) for s in ("C[C@H](N)O", "C/C=C\\CO")]
    tokens = []
    for batch_size in (1, 3):
        _, results = sample(compact_tokenizer, model, smiles, 3, "local", batch_size=batch_size)
        tokens.append([r.token_ids for batch in results for r in batch])
    assert tokens[0] == tokens[1]

"""Rollout helpers: the loss mask keeps the coordinate tokens, seeds change with the step only."""

from __future__ import annotations

import pytest

from molgen3D.training.posttraining.rollout import chosen_mask, smiles_of_prompt, step_seed


def test_only_coordinate_numbers_are_trained():
    tokens = ["[CONFORMER]", "[C]", "<", "1", ".", "23", ",", "-0", ".5", ",", "2.00", ">", "1", "[c]", "<1.0", ",0,0>"]
    assert chosen_mask(tokens) == [0, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1]


def test_step_seeds_differ_between_steps_and_repeat():
    assert step_seed(0, 3) == step_seed(0, 3) != step_seed(0, 4) != step_seed(1, 4)


def test_prompt_smiles():
    assert smiles_of_prompt("[SMILES]CCO[/SMILES]") == "CCO"
    with pytest.raises(ValueError, match="not a conformer prompt"):
        smiles_of_prompt("CCO")


def test_the_stereo_term_is_one_for_a_prompt_without_stereo_and_follows_the_match_otherwise():
    from types import SimpleNamespace

    import numpy as np
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molgen3D.training.posttraining.config import RewardSettings
    from molgen3D.training.posttraining.rollout import RolloutScorer

    def embedded(smiles, seed=7):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=seed)
        return Chem.RemoveHs(mol)

    class Pool:
        def matrices(self, tasks):
            return [np.full((1, len(samples)), 0.5) for _, samples in tasks], None

    plain, chiral = "CCO", "C[C@H](N)O"
    mirror = Chem.RWMol(embedded(chiral))
    conf = mirror.GetConformer()
    for i in range(mirror.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (-p.x, p.y, p.z))
    refs = [SimpleNamespace(smiles=s, conformers=[]) for s in (plain, chiral)]
    scorer = RolloutScorer(None, refs, None, RewardSettings(posebusters_weight=0.0), Pool())
    sample = lambda mol: SimpleNamespace(mol=mol, extra=None)  # noqa: E731
    terms = scorer._score(
        [plain, chiral], [[sample(embedded(plain))], [sample(embedded(chiral)), sample(mirror.GetMol())]]
    )
    assert list(terms[plain]["stereo"]) == [1.0]
    assert list(terms[chiral]["stereo"]) == [1.0, 0.0]

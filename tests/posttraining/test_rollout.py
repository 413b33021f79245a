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

"""References come from the training split only: valid/test molecules are refused by name."""

from __future__ import annotations

import re

import pytest

from molgen3D.training.posttraining.references import HeldOutMoleculeError, training_references

from evaluation.helpers import fixture_lines


@pytest.mark.parametrize("split", ["test", "valid"])
def test_a_held_out_molecule_is_refused_with_its_name(fixture_data, split):
    held_out = fixture_lines(fixture_data, split)[0]["canonical_smiles"]
    train = fixture_lines(fixture_data, "train")[0]["canonical_smiles"]
    pattern = re.escape(f"{held_out} ({split} split)")
    with pytest.raises(HeldOutMoleculeError, match=pattern):
        training_references(fixture_data, [train, held_out])


def test_train_molecules_come_with_their_train_conformers(fixture_data):
    lines = fixture_lines(fixture_data, "train")
    smiles = lines[0]["canonical_smiles"]
    found = training_references(fixture_data, [smiles])
    assert [r.smiles for r in found] == [smiles]
    assert len(found[0].conformers) == sum(line["canonical_smiles"] == smiles for line in lines)


def test_a_split_folder_is_not_a_data_set(fixture_data):
    with pytest.raises(ValueError, match="test split; give the data set root"):
        training_references(fixture_data / "test")


def test_a_molecule_outside_the_data_set_is_an_error(fixture_data):
    with pytest.raises(ValueError, match="not in the train split"):
        training_references(fixture_data, ["CCCCCCCCCCCCO"])

"""One stereo-free graph key for splits, GEOM references and sample validity: spellings of one molecule agree."""

from __future__ import annotations

import pytest
from rdkit import Chem

from molgen3D.chem.graph_key import stereo_free_key


@pytest.mark.parametrize(
    "spellings",
    [
        ("C1=CC=CC=C1O", "Oc1ccccc1", "[H]Oc1ccccc1"),  # Kekulé vs aromatic (the unsanitized key told them apart)
        ("C1=CC=C[NH]1", "c1cc[nH]c1"),
        ("CN(=O)=O", "C[N+](=O)[O-]"),  # nitro spellings (likewise)
        ("F/C=C/F", "F/C=C\\F", "FC=CF"),  # stereoisomers share a key
        ("C[C@H](N)O", "C[C@@H](N)O"),
    ],
)
def test_every_spelling_of_a_molecule_gives_one_key(spellings):
    keys = {stereo_free_key(s) for s in spellings}
    keys |= {stereo_free_key(Chem.AddHs(Chem.MolFromSmiles(s))) for s in spellings}
    keys |= {stereo_free_key(Chem.MolFromSmiles(s, sanitize=False)) for s in spellings}
    assert len(keys) == 1 and None not in keys


def test_unreadable_or_unsanitizable_molecules_have_no_key():
    assert stereo_free_key("not a smiles") is None
    assert stereo_free_key("c1ccnc1") is None  # cannot be kekulized
    assert stereo_free_key(Chem.MolFromSmiles("CC(C)(C)(C)(C)O", sanitize=False)) is None  # pentavalent carbon


def test_the_argument_is_left_as_it_is():
    mol = Chem.MolFromSmiles("C1=CC=CC=C1O", sanitize=False)
    assert stereo_free_key(mol) == "Oc1ccccc1"
    assert not any(a.GetIsAromatic() for a in mol.GetAtoms())  # sanitizing happened on a copy

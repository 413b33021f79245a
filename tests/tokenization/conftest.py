"""Units for the tokenizer tests: the committed fixture, RDKit-written molecules, hand-made edge cases."""

from __future__ import annotations

import random

import pytest
from tokenization_cases import ADVERSARIAL_SMILES, HAND_MADE_BRACKETS, embed_text, read_fixture_units

from molgen3D.chem.tagged_text import format_unit


@pytest.fixture(scope="session")
def fixture_units(fixture_data) -> list[str]:
    units = read_fixture_units(fixture_data)
    assert len(units) >= 100, f"expected the committed fixture under {fixture_data}, found {len(units)} units"
    return units


@pytest.fixture(scope="session")
def rdkit_units() -> list[str]:
    """Units written by `chem.enriched_smiles.encode` from RDKit molecules with random 3D coordinates."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    from molgen3D.chem.enriched_smiles import encode

    rng = random.Random(7)
    units = []
    for smiles in ADVERSARIAL_SMILES:
        mol = Chem.MolFromSmiles(smiles)
        assert mol is not None, smiles
        conf = Chem.Conformer(mol.GetNumAtoms())
        conf.Set3D(True)
        for i in range(mol.GetNumAtoms()):
            conf.SetAtomPosition(i, Point3D(*(rng.uniform(-40.0, 40.0) for _ in range(3))))
        mol.AddConformer(conf)
        units.append(format_unit(Chem.MolToSmiles(mol), encode(mol)))
    return units


@pytest.fixture(scope="session")
def hand_made_units() -> list[str]:
    """Edge cases written without RDKit: long numbers, 0..6 decimals, every bracket form."""
    rng = random.Random(11)
    units = []
    for decimals in range(7):
        for int_digits in (1, 2, 4):
            for smiles in ADVERSARIAL_SMILES[::3]:
                units.append(format_unit(smiles, embed_text(smiles, rng, int_digits, decimals)))
    for bracket in HAND_MADE_BRACKETS:
        smiles = f"C{bracket}(=O)%12CC%12"
        units.append(format_unit(smiles, embed_text(smiles, rng, 3, 4)))
    return units

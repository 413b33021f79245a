"""The chemistry report tells ring-closure bonds (written last around a ring) from the bonds along the SMILES
tree, so what geometry-aware decoding repairs can be seen."""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from molgen3D.scoring.geometry import _bonds, geometry_report, ring_closure_bonds
from molgen3D.scoring.outcome import SampleOutcome
from molgen3D.scoring.references import ReferenceMolecule


def embedded(smiles: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=1) == 0
    return Chem.RemoveHs(mol)


def test_closure_bonds_follow_the_writing_order():
    for smiles, closures in [("C1CCCCC1", {(0, 5)}), ("c1ccc2ccccc2c1", {(0, 9), (3, 8)}), ("CCO", set())]:
        mol = embedded(smiles)
        bonds = _bonds(mol)
        mask = ring_closure_bonds(mol, smiles, bonds)
        assert {tuple(sorted(map(int, b))) for b in bonds[mask]} == closures, smiles
    assert ring_closure_bonds(embedded("CCO"), "CCCC", _bonds(embedded("CCO"))) is None


def test_a_stretched_closure_shows_in_its_own_column():
    smiles = "C1CCCCC1"
    ref = embedded(smiles)
    sample = Chem.Mol(ref)
    xyz = sample.GetConformer().GetPositions()
    xyz[5] += 0.6 * (xyz[5] - xyz[0]) / np.linalg.norm(xyz[5] - xyz[0])  # pull the closing atom off its partner
    for i, p in enumerate(xyz):
        sample.GetConformer().SetAtomPosition(i, p.tolist())
    reference = ReferenceMolecule(name="x", smiles=smiles, conformers=[ref])
    report = geometry_report([reference], [[SampleOutcome(0, sample, None, "", 0)]])
    assert report["ring_closure_bond_mae"] > 0.5 > report["tree_bond_mae"]
    same = geometry_report([reference], [[SampleOutcome(0, ref, None, "", 0)]])
    assert same["ring_closure_bond_mae"] < 1e-6

"""Bond angles: one definition for prepare-data's straight-atom check and scoring's angle deviation."""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molgen3D.chem.angles import angle_triples, bond_angles
from molgen3D.datasets.chemistry import straight_angle


def test_triples_and_angles_of_a_bent_and_a_straight_centre():
    propane = Chem.MolFromSmiles("CCC")
    assert angle_triples(propane).tolist() == [[0, 1, 2]]
    xyz = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert np.allclose(bond_angles(xyz, angle_triples(propane)), [90.0])
    xyz[2] = [-3.0, 0.0, 0.0]
    assert np.allclose(bond_angles(xyz, angle_triples(propane)), [180.0])
    xyz[2] = xyz[1]  # a zero-length bond has no direction: 90, never NaN
    assert np.allclose(bond_angles(xyz, angle_triples(propane)), [90.0])


def test_straight_angle_reads_the_shared_angles():
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(C)(C)O"))
    rdDistGeom.EmbedMolecule(mol, randomSeed=7)
    triples = angle_triples(mol)
    angles = bond_angles(mol.GetConformer().GetPositions(), triples)
    assert len(triples) == sum(a.GetDegree() * (a.GetDegree() - 1) // 2 for a in mol.GetAtoms())
    assert 100 < angles.min() and angles.max() < 120 and straight_angle(mol) == ""
    assert straight_angle(mol, limit=float(angles.max()) - 1e-6).startswith("atom ")

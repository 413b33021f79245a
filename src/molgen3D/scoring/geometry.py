"""Chemistry checks of valid samples beyond RMSD: stereo, bond lengths and angles, clashes.

All checks see heavy atoms (hydrogens of `--add-hs` samples are removed first), the atoms
the GEOM protocol scores. Geometry is compared with the molecule's reference conformers:
bond lengths and angles hardly move between conformers of one molecule, so the mean over the
references is the target and a sample's mean absolute deviation from it says how chemically
sane its local geometry is, whatever its torsions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.angles import angle_triples, bond_angles
from molgen3D.chem.coordinate_format import smiles_parents
from molgen3D.scoring.checks import stereo_matches

CLASH_SCALE = 0.6
"""Two heavy atoms three or more bonds apart clash when closer than this x the sum of their van der Waals
radii (C...C 2.04 A). Real conformers keep such pairs beyond ~2.5 A (gauche 1-4 C...C is ~2.9-3.1 A)."""


def heavy_atoms(mol: Chem.Mol) -> Chem.Mol:
    """`mol` without its hydrogens (unchanged when it has none): the atoms every check here sees."""
    with BlockLogs():
        return Chem.RemoveHs(mol, sanitize=False) if any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()) else mol


def _bonds(mol: Chem.Mol) -> np.ndarray:
    return np.asarray([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int64).reshape(-1, 2)


def _lengths(xyz: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    return np.linalg.norm(xyz[bonds[:, 0]] - xyz[bonds[:, 1]], axis=1)


def _aligned_xyz(sample: Chem.Mol, reference: Chem.Mol) -> np.ndarray | None:
    """The sample's coordinates in the reference's atom order (SDF references need not be in prompt order)."""
    if sample.GetNumAtoms() == reference.GetNumAtoms():
        match = reference.GetSubstructMatch(sample, useChirality=False)
        if len(match) == sample.GetNumAtoms():
            xyz = np.empty((sample.GetNumAtoms(), 3))
            xyz[list(match)] = sample.GetConformer().GetPositions()
            return xyz
    return None


def ring_closure_bonds(reference: Chem.Mol, smiles: str, bonds: np.ndarray) -> np.ndarray | None:
    """Per bond of `bonds` (atom pairs of `reference`): whether it closes a ring in `smiles`' writing order (not
    a bond to the atom's SMILES-tree parent), the bonds a sampler writes last around a ring; None when
    `smiles` does not map onto `reference`."""
    with BlockLogs():
        prompt = Chem.MolFromSmiles(smiles)
    if prompt is None or prompt.GetNumAtoms() != reference.GetNumAtoms():
        return None
    match = reference.GetSubstructMatch(prompt, useChirality=False)
    if len(match) != prompt.GetNumAtoms():
        return None
    try:
        parents = smiles_parents(smiles)
    except ValueError:
        return None
    tree = {frozenset((match[i], match[p])) for i, p in enumerate(parents) if p >= 0}
    return np.array([frozenset(map(int, b)) not in tree for b in bonds], dtype=bool)


def mark_stereo(smiles: Sequence[str], outcomes: Sequence[Sequence]) -> dict[str, int]:
    """Record on each valid sample whether its coordinates realise its prompt's stereo (`extra["stereo_ok"]`).

    Returns how many samples were checked (their prompt specifies stereo) and how many were right.
    """
    checked = right = 0
    for smi, samples in zip(smiles, outcomes):
        for o in samples:
            if o.mol is not None:
                ok = stereo_matches(o.mol, smi)
                if ok is not None:
                    o.extra = {**(o.extra or {}), "stereo_ok": ok}
                    checked += 1
                    right += ok
    return {"checked": checked, "ok": right}


def clash_count(mol: Chem.Mol) -> int:
    """Heavy-atom pairs three or more bonds apart closer than `CLASH_SCALE` x the sum of their vdW radii."""
    heavy = heavy_atoms(mol)
    n = heavy.GetNumAtoms()
    if n < 4:
        return 0
    xyz = heavy.GetConformer().GetPositions()
    table = Chem.GetPeriodicTable()
    radii = np.array([table.GetRvdw(a.GetAtomicNum()) for a in heavy.GetAtoms()])
    topo = Chem.GetDistanceMatrix(heavy)
    dist = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    close = (topo >= 3) & (dist < CLASH_SCALE * (radii[:, None] + radii[None, :]))
    return int(np.triu(close, 1).sum())


def geometry_report(references: Sequence, outcomes: Sequence[Sequence]) -> dict:
    """Per method: stereo rate, bond-length / bond-angle deviation from the references, clashes.

    - `stereo_ok`: share of valid samples of molecules with specified stereo whose 3D stereo is the prompt's;
    - `bond_length_mae` (A) and `bond_angle_mae` (degrees): mean over valid samples of the mean absolute
      deviation of each bond length / bond angle from its mean over the molecule's reference conformers;
    - `ring_closure_bond_mae` and `tree_bond_mae` (A): the same over the bonds that close a ring in the prompt's
      writing order, and over the others (samples of molecules with ring closures);
    - `clash_free`: share of valid samples without clashes; `clashes_per_sample`: mean count.
    """
    stereo_checked = stereo_ok = 0
    bond_dev, angle_dev, clashes, closure_dev, tree_dev = [], [], [], [], []
    for ref, samples in zip(references, outcomes):
        valid = [o.mol for o in samples if o.mol is not None]
        if not valid:
            continue
        ref0 = ref.conformers[0]
        bonds, triples = _bonds(ref0), angle_triples(ref0)
        ref_xyz = [c.GetConformer().GetPositions() for c in ref.conformers]
        target_len = np.mean([_lengths(x, bonds) for x in ref_xyz], axis=0)
        target_ang = np.mean([bond_angles(x, triples) for x in ref_xyz], axis=0)
        closing = ring_closure_bonds(ref0, ref.smiles, bonds) if len(bonds) else None
        for mol in valid:
            heavy = heavy_atoms(mol)
            ok = stereo_matches(heavy, ref.smiles)
            if ok is not None:
                stereo_checked += 1
                stereo_ok += bool(ok)
            clashes.append(clash_count(heavy))
            xyz = _aligned_xyz(heavy, ref0)
            if xyz is None:
                continue
            if len(bonds):
                dev = np.abs(_lengths(xyz, bonds) - target_len)
                bond_dev.append(float(dev.mean()))
                if closing is not None and closing.any():
                    closure_dev.append(float(dev[closing].mean()))
                    tree_dev.append(float(dev[~closing].mean()))
            if len(triples):
                angle_dev.append(float(np.abs(bond_angles(xyz, triples) - target_ang).mean()))
    return {
        "stereo_checked": stereo_checked,
        "stereo_ok": stereo_ok / stereo_checked if stereo_checked else math.nan,
        "bond_length_mae": float(np.mean(bond_dev)) if bond_dev else math.nan,
        "bond_angle_mae": float(np.mean(angle_dev)) if angle_dev else math.nan,
        "ring_closure_bond_mae": float(np.mean(closure_dev)) if closure_dev else math.nan,
        "tree_bond_mae": float(np.mean(tree_dev)) if tree_dev else math.nan,
        "clash_free": float(np.mean([c == 0 for c in clashes])) if clashes else math.nan,
        "clashes_per_sample": float(np.mean(clashes)) if clashes else math.nan,
    }

"""Per-sample validity rules shared by sampling, sample files and the baseline.

A sample is *valid* (scored by RMSD, as in the GEOM protocol) when its text decodes, every
coordinate is finite and within `MAX_ABS_COORDINATE`, and its heavy-atom graph is the prompt's
(stereo aside).
Stereo is checked separately (`stereo_matches`): the GEOM protocol scores every graph-valid
sample, so a wrong stereoisomer stays valid and is reported as its own rate.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.coordinate_format import MAX_ABS_COORDINATE
from molgen3D.chem.graph_key import stereo_free_key

NON_FINITE = "non_finite_coordinate"
OUT_OF_RANGE = "coordinate_out_of_range"
GRAPH_MISMATCH = "graph_mismatch"
NO_CONFORMER = "no_conformer"


def coordinate_failure(mol: Chem.Mol) -> str | None:
    """`non_finite_coordinate`, `coordinate_out_of_range`, `no_conformer`, or None when the coordinates are usable."""
    if mol.GetNumConformers() == 0:
        return NO_CONFORMER
    xyz = mol.GetConformer().GetPositions()
    if not np.isfinite(xyz).all():
        return NON_FINITE
    if xyz.size and np.abs(xyz).max() > MAX_ABS_COORDINATE:
        return OUT_OF_RANGE
    return None


def same_graph(mol: Chem.Mol, canonical_smiles: str) -> bool:
    """Whether `mol`'s heavy-atom graph (atoms, bonds, charges; stereo aside) is the prompt's.

    Stereo is left out on purpose: an SDF reader perceives stereo from the coordinates, and
    whether the coordinates realise the prompt's stereo is `stereo_matches`' question.
    """
    prompt = stereo_free_key(canonical_smiles)
    return prompt is not None and stereo_free_key(mol) == prompt


def sample_failure(mol: Chem.Mol, canonical_smiles: str, *, graph_text: str | None = None) -> str | None:
    """Why `mol` is not a valid sample of `canonical_smiles`, or None.

    `graph_text` (the coordinate-free text when known) short-cuts the graph comparison.
    """
    failure = coordinate_failure(mol)
    if failure is not None:
        return failure
    if graph_text != canonical_smiles and not same_graph(mol, canonical_smiles):
        return GRAPH_MISMATCH
    return None


def stereo_matches(mol: Chem.Mol, canonical_smiles: str) -> bool | None:
    """Whether the 3D coordinates realise the prompt's stereo (tetrahedral centres and double bonds).

    Only centres and bonds the prompt specifies are compared: stereo perceived from the
    coordinates is dropped where the prompt leaves it open, then the canonical SMILES are
    compared. None when the prompt specifies no stereo (nothing to get wrong).
    """
    with BlockLogs():
        prompt = Chem.MolFromSmiles(canonical_smiles)
        if prompt is None:
            return None
        if not any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in prompt.GetAtoms()) and not any(
            b.GetStereo() != Chem.BondStereo.STEREONONE for b in prompt.GetBonds()
        ):
            return None
        heavy = Chem.RemoveHs(mol)
        match = heavy.GetSubstructMatch(prompt, useChirality=False)
        if len(match) != prompt.GetNumAtoms():
            return False
        perceived = Chem.Mol(heavy)
        Chem.AssignStereochemistryFrom3D(perceived, replaceExistingTags=True)
        specified_atoms = {
            match[a.GetIdx()] for a in prompt.GetAtoms() if a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED
        }
        specified_bonds = set()
        for b in prompt.GetBonds():
            if b.GetStereo() != Chem.BondStereo.STEREONONE:
                specified_bonds.add(frozenset((match[b.GetBeginAtomIdx()], match[b.GetEndAtomIdx()])))
        for atom in perceived.GetAtoms():
            if atom.GetIdx() not in specified_atoms:
                atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
        for bond in perceived.GetBonds():
            bond.SetBondDir(Chem.BondDir.NONE)  # the SMILES writer derives directions from the stereo kept
            if frozenset((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())) not in specified_bonds:
                bond.SetStereo(Chem.BondStereo.STEREONONE)
        return Chem.MolToSmiles(perceived) == Chem.MolToSmiles(prompt)


def single_conformer(mol: Chem.Mol, conf_id: int = -1) -> Chem.Mol:
    """A copy of `mol` holding only conformer `conf_id`, renumbered to id 0.

    Tools that address "the" conformer by id 0 (PoseBusters' energy check among them) fail on
    molecules whose only conformer kept another id, as `Chem.Mol(mol, confId=k)` leaves it.
    """
    conf = Chem.Conformer(mol.GetConformer(conf_id))
    out = Chem.Mol(mol)
    out.RemoveAllConformers()
    conf.SetId(0)
    out.AddConformer(conf, assignId=False)
    return out

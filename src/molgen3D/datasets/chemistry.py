"""Chemistry rules shared by every input: fragments, stereo from 3D, geometry sanity.

Pure functions of RDKit molecules, so a worker pool gives the same result as one process.
"""

from __future__ import annotations

import re

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.angles import angle_triples, bond_angles
from molgen3D.chem.enriched_smiles import encode_conformers

FRAGMENT_POLICIES = ("largest", "keep", "drop")
MIN_ATOM_DISTANCE = 0.7
"""Angstrom. The shortest bond there is (H-H in H2) is 0.74 A; any two atoms closer are a broken geometry."""
_COINCIDENT = 1e-4
_COORDINATES = re.compile(r"<[^<>]*>")
_BRACKETED_PLAIN = re.compile(r"\[(Cl|Br|[BCNOPSFI]|[bcnops]|\*)\]")


def choose_fragments(mol: Chem.Mol, policy: str) -> tuple[Chem.Mol | None, int]:
    """(the molecule to keep, fragments removed); None when `policy` is `drop` and there are several.

    `largest` keeps the fragment with the most heavy atoms (then most atoms, then the smallest
    canonical SMILES, so ties are deterministic); conformers travel with the fragment.
    """
    if policy not in FRAGMENT_POLICIES:
        raise ValueError(f"fragment policy must be one of {FRAGMENT_POLICIES}, got {policy!r}")
    if policy == "keep" or len(Chem.GetMolFrags(mol)) <= 1:
        return mol, 0
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if policy == "drop":
        return None, len(frags) - 1

    def rank(frag: Chem.Mol) -> tuple[int, int, str]:
        return frag.GetNumHeavyAtoms(), frag.GetNumAtoms(), _negated(Chem.MolToSmiles(frag))

    for frag in frags:
        frag.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(frag)
    best = max(frags, key=rank)
    with BlockLogs():
        try:
            Chem.SanitizeMol(best)
        except (Chem.MolSanitizeException, RuntimeError):
            pass  # an unsanitizable input stays as parsed; its own checks reject it later if it matters
    return best, len(frags) - 1


def _negated(text: str) -> str:
    """A key that sorts `text` in reverse, so `max` picks the smallest SMILES on ties."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def geometry_problem(positions: np.ndarray, min_distance: float = MIN_ATOM_DISTANCE) -> str:
    """`coincident_atoms`, `atoms_too_close` or "" for an (n, 3) array of coordinates in Angstrom."""
    if len(positions) < 2:
        return ""
    if not np.isfinite(positions).all():
        return "non_finite_coordinates"
    if float(np.ptp(positions, axis=0).max()) < _COINCIDENT:
        return "coincident_atoms"
    centred = positions - positions.mean(axis=0)
    squares = np.einsum("ij,ij->i", centred, centred)
    d2 = squares[:, None] + squares[None, :] - 2.0 * (centred @ centred.T)
    np.fill_diagonal(d2, np.inf)
    return "atoms_too_close" if float(d2.min()) < min_distance**2 else ""


STRAIGHT_ANGLE = 170.0
"""Degrees. Two neighbours of an atom that is not sp-hybridised this close to a line are an embedding
failure (ETKDGv3 writes about 1% of drug-like conformers with such an atom at ~180 degrees)."""


def straight_angle(mol: Chem.Mol, conf_id: int = -1, limit: float = STRAIGHT_ANGLE) -> str:
    """ "" or where conformer `conf_id` bends an atom that is not sp-hybridised straight (>= `limit` degrees)."""
    triples = angle_triples(mol)
    if not len(triples):
        return ""
    angles = bond_angles(mol.GetConformer(conf_id).GetPositions(), triples)
    not_sp = np.array([a.GetHybridization() != Chem.HybridizationType.SP for a in mol.GetAtoms()])
    straight = np.flatnonzero((angles >= limit) & not_sp[triples[:, 1]])
    if not len(straight):
        return ""
    centre = int(triples[straight[0], 1])
    atom = mol.GetAtomWithIdx(centre)
    angle = float(angles[triples[:, 1] == centre].max())
    return f"atom {centre} ({atom.GetSymbol()}, {atom.GetHybridization()}) at {angle:.1f} degrees"


def max_degree(mol: Chem.Mol) -> int:
    return max((atom.GetDegree() for atom in mol.GetAtoms()), default=0)


def conformer_text(mol: Chem.Mol, conf_id: int, precision: int) -> tuple[str, str]:
    """(canonical SMILES, enriched SMILES) of one conformer, with the stereo its own 3D geometry has.

    Stereo is perceived from the coordinates, not taken from the input, so an SDF without stereo
    whose conformers are R and S writes each conformer under the SMILES that matches it.
    """
    single = Chem.Mol(mol, False, conf_id)
    with BlockLogs():
        Chem.AssignStereochemistryFrom3D(single, confId=conf_id)
    text = encode_conformers(single, [conf_id], precision)[0]
    return _BRACKETED_PLAIN.sub(r"\1", _COORDINATES.sub("", text)), text

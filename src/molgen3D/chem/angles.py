"""Bond angles of a conformer: which atom triples form one, and their values in degrees.

One definition for data preparation (an atom pulled straight is an embedding failure) and for
scoring (a sample's angles against its references').
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem


def angle_triples(mol: Chem.Mol) -> np.ndarray:
    """(n, 3) atom triples i-j-k with bonds i-j and j-k, ordered by centre j, then i < k: fixed for a graph."""
    triples = []
    for j in range(mol.GetNumAtoms()):
        nbrs = sorted(n.GetIdx() for n in mol.GetAtomWithIdx(j).GetNeighbors())
        triples += [(i, j, k) for a, i in enumerate(nbrs) for k in nbrs[a + 1 :]]
    return np.asarray(triples, dtype=np.int64).reshape(-1, 3)


def bond_angles(xyz: np.ndarray, triples: np.ndarray) -> np.ndarray:
    """Angle i-j-k in degrees for each triple of `triples` over (n, 3) coordinates (90 for a zero-length bond)."""
    a = xyz[triples[:, 0]] - xyz[triples[:, 1]]
    b = xyz[triples[:, 2]] - xyz[triples[:, 1]]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

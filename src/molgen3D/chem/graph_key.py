"""The stereo-free graph key: which molecule a SMILES or an RDKit molecule is, stereo aside.

One rule for data splits (stereoisomers share a key, so they share a split), GEOM references
(a conformer is kept when its key is its test-set SMILES' key) and sample validity (a sample's
key must be its prompt's).
"""

from __future__ import annotations

from rdkit import Chem
from rdkit.rdBase import BlockLogs


def stereo_free_key(mol_or_smiles: Chem.Mol | str) -> str | None:
    """Canonical heavy-atom SMILES without stereo, or None when RDKit cannot read or sanitize the molecule.

    The molecule is sanitized (a copy; the argument is left as it is), so every spelling of one
    molecule gives one key: Kekulé or aromatic rings, `N(=O)=O` or `[N+](=O)[O-]`, explicit
    hydrogens or not. Without sanitizing, `C1=CC=CC=C1O` and `Oc1ccccc1` would be two molecules.
    """
    with BlockLogs():
        try:
            if isinstance(mol_or_smiles, str):
                mol = Chem.MolFromSmiles(mol_or_smiles)
                if mol is None:
                    return None
            else:
                mol = Chem.RemoveHs(mol_or_smiles)
            return Chem.MolToSmiles(mol, isomericSmiles=False)
        except (RuntimeError, ValueError):  # RDKit's sanitize errors derive from ValueError
            return None

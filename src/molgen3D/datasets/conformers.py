"""Molecules to conformer texts: ETKDGv3 embedding of SMILES, and 3D SDF records as they are.

Pure functions of their arguments (seed included), so a worker pool gives the same result
as one process. Each returns an `Outcome`: the texts, or the reason it produced none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers
from rdkit.rdBase import BlockLogs

from molgen3D.chem.enriched_smiles import EnrichedSmilesError, encode_conformers


@dataclass(frozen=True)
class EmbedSettings:
    """How conformers are generated from a SMILES."""

    conformers: int
    seed: int
    mmff: bool
    mmff_max_iters: int
    precision: int


@dataclass(frozen=True)
class Outcome:
    """Result for one molecule: conformer texts, or the skip reason and a detail."""

    texts: list[str] = field(default_factory=list)
    reason: str = ""
    detail: str = ""


def canonicalize(smiles: str) -> str | None:
    """Canonical isomeric SMILES of the heavy-atom graph, or None if RDKit cannot read it."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def embed_smiles(canonical: str, settings: EmbedSettings) -> Outcome:
    """`settings.conformers` ETKDGv3 conformers of `canonical` (fewer if some fail), as enriched SMILES."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(canonical)
        if mol is None:
            return Outcome(reason="invalid_smiles", detail=canonical)
        mol = Chem.AddHs(mol)
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = settings.seed
        params.numThreads = 1
        conf_ids = list(rdDistGeom.EmbedMultipleConfs(mol, settings.conformers, params))
        if not conf_ids:
            return Outcome(reason="embed_failed", detail=canonical)
        if settings.mmff:
            if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
                return Outcome(reason="mmff_no_params", detail=canonical)
            rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=settings.mmff_max_iters)
    return _encode(mol, conf_ids, settings.precision)


def sdf_conformer(block: str, precision: int) -> tuple[str, Outcome]:
    """(canonical SMILES, Outcome with one text) of one SDF record with 3D coordinates."""
    with BlockLogs():
        mol = Chem.MolFromMolBlock(block, removeHs=False)
    name = block.split("\n", 1)[0].strip()
    if mol is None:
        return "", Outcome(reason="invalid_record", detail=f"RDKit cannot read the mol block {name!r}")
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        return "", Outcome(reason="not_3d", detail=f"record {name!r} has no 3D coordinates")
    outcome = _encode(mol, [mol.GetConformer().GetId()], precision)
    canonical = Chem.MolToSmiles(Chem.RemoveHs(mol)) if outcome.texts else ""
    return canonical, outcome


def _encode(mol: Chem.Mol, conf_ids: list[int], precision: int) -> Outcome:
    try:
        return Outcome(texts=encode_conformers(mol, conf_ids, precision))
    except EnrichedSmilesError as err:
        return Outcome(reason="unrepresentable", detail=str(err))

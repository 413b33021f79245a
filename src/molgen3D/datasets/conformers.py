"""One input molecule -> its JSONL lines: SMILES (ETKDGv3 embedding), an SDF record, a GEOM pickle.

Pure functions of their arguments (seed included), so a worker pool gives the same result as one
process. Each returns a `Unit`: the lines written for that input molecule, the stereo-free key
that decides its split, and every skip with its reason, in order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers
from rdkit.rdBase import BlockLogs

from molgen3D.chem.enriched_smiles import EnrichedSmilesError
from molgen3D.chem.graph_key import stereo_free_key
from molgen3D.datasets.chemistry import (
    choose_fragments,
    conformer_text,
    geometry_problem,
    straight_angle,
    max_degree,
)
from molgen3D.datasets.geom import read_pickle
from molgen3D.datasets.inputs import Record
from molgen3D.datasets.shards import conformer_line


@dataclass(frozen=True)
class Settings:
    """Everything that decides what one input molecule becomes."""

    conformers: int
    seed: int
    mmff: bool
    mmff_max_iters: int
    precision: int
    fragments: str
    max_atom_degree: int | None
    max_conformers: int | None
    min_distance: float


@dataclass
class Unit:
    """The outcome for one input molecule: lines to write, its split key, skips (reason, example, unit, count)."""

    where: str
    key: str = ""
    dedup: str = ""
    """Canonical SMILES of a SMILES record: a later record with the same one is a duplicate molecule."""
    text: str = ""
    lines: list[str] = field(default_factory=list)
    digests: list[int] = field(default_factory=list)
    """64-bit digest of each line's canonical + enriched SMILES: what makes two conformers the same."""
    skips: list[tuple[str, str, str, int]] = field(default_factory=list)

    def skip(self, reason: str, detail: str, unit: str = "molecule", count: int = 1) -> Unit:
        self.skips.append((reason, f"{self.where}: {detail}" if detail else self.where, unit, count))
        return self


class _Conformers:
    """Collects one molecule's conformers: geometry checks, own-stereo SMILES, exact duplicates dropped."""

    def __init__(self, unit: Unit, settings: Settings, name: str):
        self.unit, self.settings, self.name = unit, settings, name
        self.seen: set[str] = set()

    def add(self, mol: Chem.Mol, conf_id: int, label: str, **extras) -> bool:
        problem = geometry_problem(mol.GetConformer(conf_id).GetPositions(), self.settings.min_distance)
        if problem:
            self.unit.skip(problem, label, unit="conformer")
            return False
        try:
            canonical, text = conformer_text(mol, conf_id, self.settings.precision)
        except (EnrichedSmilesError, ValueError) as err:
            self.unit.skip("unrepresentable", f"{label}: {err}", unit="conformer")
            return False
        if text in self.seen:
            self.unit.skip("duplicate_conformer", label, unit="conformer")
            return False
        self.seen.add(text)
        if self.name:
            extras = {"name": self.name, **extras}
        self.unit.lines.append(conformer_line(canonical, text, **extras))
        digest = hashlib.blake2b(f"{canonical}\x00{text}".encode(), digest_size=8).digest()
        self.unit.digests.append(int.from_bytes(digest, "big"))
        return True


def from_smiles(record: Record, settings: Settings) -> Unit:
    """`settings.conformers` ETKDGv3 conformers of one SMILES record (fewer if some fail or are broken)."""
    unit = Unit(record.where)
    if not record.text:
        return unit.skip("blank_line", "", unit="line")
    with BlockLogs():
        mol = Chem.MolFromSmiles(record.text)
    if mol is None:
        return unit.skip("invalid_smiles", record.text)
    mol = _fragments(mol, settings, unit, record.text)
    if mol is None:
        return unit
    unit.dedup, unit.text = Chem.MolToSmiles(mol), record.text
    unit.key = stereo_free_key(mol)
    with BlockLogs():
        mol = Chem.AddHs(mol)
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = settings.seed
        params.numThreads = 1
        conf_ids = list(rdDistGeom.EmbedMultipleConfs(mol, settings.conformers, params))
        if not conf_ids:
            return unit.skip("embed_failed", unit.dedup)
        if settings.mmff:
            if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
                return unit.skip("mmff_no_params", unit.dedup)
            rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=settings.mmff_max_iters)
    missing = settings.conformers - len(conf_ids)
    if missing:
        unit.skip("conformer_embed_failed", f"{unit.dedup} ({missing} missing)", unit="conformer", count=missing)
    collector = _Conformers(unit, settings, record.name)
    for conf_id in conf_ids:
        label = f"{unit.dedup} conformer {conf_id}"
        straight = straight_angle(mol, conf_id)
        if straight:
            unit.skip("embed_straight_angle", f"{label}: {straight}", unit="conformer")
            continue
        collector.add(mol, conf_id, label)
    return unit


def from_sdf(record: Record, settings: Settings) -> Unit:
    """The one conformer of a 3D SDF record."""
    unit = Unit(record.where)
    with BlockLogs():
        mol = Chem.MolFromMolBlock(record.text, removeHs=False)
    title = record.name
    if mol is None:
        return unit.skip("invalid_record", f"RDKit cannot read the mol block {title!r}")
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        return unit.skip("not_3d", f"record {title!r} has no 3D coordinates")
    mol = _fragments(mol, settings, unit, title or Chem.MolToSmiles(mol))
    if mol is None:
        return unit
    if settings.max_atom_degree is not None and max_degree(mol) > settings.max_atom_degree:
        return unit.skip("atom_degree_above_max", f"record {title!r}", unit="conformer")
    unit.key = stereo_free_key(mol)
    _Conformers(unit, settings, title).add(mol, mol.GetConformer().GetId(), f"record {title!r}")
    return unit


def from_geom(path: str, settings: Settings) -> Unit:
    """The conformers of one GEOM pickle, highest Boltzmann weight first, at most `max_conformers`.

    As Torsional Diffusion prepares GEOM: conformers whose graph differs from the molecule's
    SMILES (they reacted during the conformer search) and those with an atom of degree above
    `max_atom_degree` are dropped.
    """
    file = Path(path)
    unit = Unit(file.name)
    data = read_pickle(file)
    smiles = str(data.get("smiles", ""))
    with BlockLogs():
        reference = Chem.MolFromSmiles(smiles, sanitize=False) if smiles else None
    if reference is None:
        return unit.skip("invalid_smiles", f"pickle SMILES {smiles!r}")
    reference = _fragments(reference, settings, unit, smiles)
    if reference is None:
        return unit
    unit.key = stereo_free_key(reference)
    if unit.key is None:
        return unit.skip("invalid_smiles", f"pickle SMILES {smiles!r} (RDKit cannot sanitize it)")
    ranked = sorted(data["conformers"], key=lambda c: -float(c.get("boltzmannweight", 0.0) or 0.0))
    collector = _Conformers(unit, settings, file.stem)
    kept = 0
    for rank, conformer in enumerate(ranked):
        label = f"conformer {rank} ({conformer.get('geom_id', '?')})"
        if settings.max_conformers is not None and kept >= settings.max_conformers:
            unit.skip("beyond_max_conformers", f"{len(ranked) - rank} after {kept}", "conformer", len(ranked) - rank)
            break
        mol = conformer.get("rd_mol")
        if not isinstance(mol, Chem.Mol) or mol.GetNumConformers() == 0:
            unit.skip("invalid_record", f"{label} has no rd_mol with coordinates", unit="conformer")
            continue
        mol, _ = choose_fragments(mol, "largest" if settings.fragments == "largest" else "keep")
        if settings.max_atom_degree is not None and max_degree(mol) > settings.max_atom_degree:
            unit.skip("atom_degree_above_max", label, unit="conformer")
            continue
        if stereo_free_key(mol) != unit.key:
            unit.skip("conformer_graph_differs", f"{label}: {stereo_free_key(mol)} vs {unit.key}", unit="conformer")
            continue
        extras = {"boltzmann_weight": conformer.get("boltzmannweight"), "energy": conformer.get("totalenergy")}
        extras = {k: v for k, v in extras.items() if v is not None}
        kept += collector.add(mol, mol.GetConformer().GetId(), label, **extras)
    return unit


def _fragments(mol: Chem.Mol, settings: Settings, unit: Unit, what: str) -> Chem.Mol | None:
    """Apply the fragment policy, counting what it removes; None (and a skip) if the molecule is dropped."""
    kept, removed = choose_fragments(mol, settings.fragments)
    if kept is None:
        unit.skip("multiple_fragments", what)
    elif removed:
        unit.skip("fragments_removed", what, unit="fragment", count=removed)
    return kept

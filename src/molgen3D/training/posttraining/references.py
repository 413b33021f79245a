"""The molecules post-training rewards against: the training split of a prepared data set, never valid/test.

Splits group molecules by a stereo-free key (stereoisomers never cross splits), so a requested
molecule is refused when its stereo-free key is in the valid or test split: training on it would
leak the held-out set the model is scored on.
"""

from __future__ import annotations

from pathlib import Path

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.config.paths import resolve_path
from molgen3D.chem.graph_key import stereo_free_key
from molgen3D.datasets.skips import SkipLog
from molgen3D.scoring.references import ReferenceMolecule, canonicalize, iter_jsonl, load_jsonl_references


class HeldOutMoleculeError(ValueError):
    """A molecule asked for post-training belongs to the valid or test split."""


def _key(smiles: str) -> str | None:
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else stereo_free_key(mol)


def dataset_root(dataset: str | Path) -> Path:
    """The prepared data set root behind `dataset`; a split folder or a non-data-set path is an error."""
    root = resolve_path(str(dataset))
    if root.name in ("train", "valid", "test") and (root.parent / "manifest.json").is_file():
        raise ValueError(
            f"[posttrain] dataset = {dataset!r} is the {root.name} split; give the data set root {root.parent} "
            "(references are always its train split)"
        )
    if not (root / "manifest.json").is_file() or not (root / "train").is_dir():
        raise FileNotFoundError(
            f"[posttrain] dataset = {dataset!r} ({root}) is not a prepared data set (no manifest.json and train/); "
            "run `molgen3d prepare-data` first"
        )
    return root


def held_out_keys(root: Path) -> dict[str, str]:
    """Stereo-free key -> split name for every molecule of the valid and test splits."""
    keys: dict[str, str] = {}
    for split in ("valid", "test"):
        if not (root / split).is_dir():
            continue
        for _, smiles, _ in iter_jsonl(root / split, SkipLog()):
            key = _key(smiles)
            if key is not None:
                keys.setdefault(key, split)
    return keys


def check_not_held_out(smiles: list[str], root: Path) -> None:
    """Raise `HeldOutMoleculeError` naming every requested molecule of the valid or test split."""
    held = held_out_keys(root)
    bad = [(s, held[k]) for s in smiles if (k := _key(s)) is not None and k in held]
    if bad:
        listed = ", ".join(f"{s} ({split} split)" for s, split in bad)
        raise HeldOutMoleculeError(
            f"[posttrain] molecules: {listed} of {root} is held out; post-training rewards only against the "
            "train split, so remove it from `molecules`"
        )


def training_references(
    dataset: str | Path,
    molecules: list[str] | None = None,
    max_molecules: int = 0,
    max_conformers: int | None = None,
) -> list[ReferenceMolecule]:
    """Train-split molecules with their conformers: `molecules` (checked) or all, then the first `max_molecules`."""
    root = dataset_root(dataset)
    select = None
    if molecules:
        wanted = []
        for smiles in molecules:
            canonical = canonicalize(smiles)
            if canonical is None:
                raise ValueError(f"[posttrain] molecules: RDKit cannot parse {smiles!r}")
            wanted.append(canonical)
        check_not_held_out(wanted, root)

        def select(all_smiles: list[str]) -> list[str]:
            missing = [s for s in wanted if s not in set(all_smiles)]
            if missing:
                raise ValueError(
                    f"[posttrain] molecules: {', '.join(missing)} not in the train split of {root}; "
                    "use molecules of that split"
                )
            return wanted[:max_molecules] if max_molecules else wanted

    elif max_molecules:

        def select(all_smiles: list[str]) -> list[str]:
            return all_smiles[:max_molecules]

    found, _ = load_jsonl_references(root / "train", select=select, max_conformers=max_conformers)
    if not found:
        raise ValueError(f"[posttrain] dataset: no usable molecules in {root / 'train'}")
    return found

"""What `generate` checks about its molecules before it samples: fragments, unseen elements, an empty input.

- Fragments: `prepare-data` trains on the largest fragment of a salt or mixture, so by default
  the prompt is that fragment too (`--fragments largest`, counted); `all` keeps every fragment.
- Elements: a model folder exported by `export-hf` records the elements its training data had
  (`training_elements.json`); a molecule with another element is sampled, but named in a warning
  and in the summary, since its coordinates come from tokens the model never trained on.
- An input that leaves nothing to sample is an error naming what was skipped, not an empty output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.datasets.chemistry import choose_fragments
from molgen3D.datasets.skips import SkipLog
from molgen3D.generation.sample_io import MoleculeInput
from molgen3D.hf.training_elements import ELEMENTS_FILE, elements_of, read_training_elements
from molgen3D.scoring.references import canonical_smiles

FRAGMENTS = ("largest", "all")


def keep_fragments(molecules: Sequence[MoleculeInput], mode: str, cut: SkipLog) -> list[MoleculeInput]:
    """Each molecule as `prepare-data` keeps it (`largest` fragment) or whole (`all`); cut molecules go to `cut`."""
    if mode not in FRAGMENTS:
        raise ValueError(f"--fragments must be one of {', '.join(FRAGMENTS)}, got {mode!r}")
    if mode == "all":
        return list(molecules)
    kept = []
    for m in molecules:
        if "." not in m.smiles:
            kept.append(m)
            continue
        with BlockLogs():
            mol = Chem.MolFromSmiles(m.smiles)
        largest, removed = choose_fragments(mol, "largest")
        smiles = canonical_smiles(largest)
        cut.add("fragments_removed", f"{m.where}: {m.smiles} -> {smiles}", unit="molecule")
        kept.append(replace(m, smiles=smiles, name=m.name if m.name != m.smiles else smiles))
    return kept


def unseen_elements(molecules: Sequence[MoleculeInput], model_dir: Path) -> dict:
    """Molecules with elements the model's training data never had: {"checked", "elements": {el: [names]}}."""
    seen = read_training_elements(model_dir)
    if seen is None:
        return {"checked": False, "note": f"{model_dir} has no {ELEMENTS_FILE}: elements were not checked"}
    found: dict[str, list[str]] = {}
    for m in molecules:
        for element in sorted((elements_of(m.smiles) or set()) - {e for e, n in seen.items() if n > 0}):
            found.setdefault(element, []).append(m.name)
    return {"checked": True, "elements": found}


def nothing_to_sample(path: Path, skips: SkipLog) -> ValueError:
    """The error for an input that held no molecule to sample, naming what was skipped."""
    skipped = "; ".join(f"{reason}: {e['count']} (e.g. {e['examples'][0]})" for reason, e in skips.as_dict().items())
    return ValueError(
        f"{path}: nothing to sample: "
        + (f"every record was skipped ({skipped})" if skipped else "the file holds no molecules")
        + "; pass a file of SMILES (.smi/.csv) or 3D SDF records"
    )

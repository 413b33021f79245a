"""Which elements a model's training data had: `training_elements.json` in the exported model folder.

A tokenizer has tokens for elements the data never holds ([Se], [Si], [Na+]); a model samples
coordinates for them all the same, and they pass every validity check. `export-hf` counts, once,
the training molecules holding each element (unique `canonical_smiles` of the run's training
split, named in `run_meta.json`), so `generate` can warn about prompts outside the data.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.files import write_json_atomic

logger = logging.getLogger(__name__)

ELEMENTS_FILE = "training_elements.json"
_SMILES_FIELD = re.compile(rb'"canonical_smiles"\s*:\s*"((?:[^"\\]|\\.)*)"')


def elements_of(smiles: str) -> set[str] | None:
    """Element symbols of a SMILES (explicit and bracket atoms), None when RDKit cannot read it."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    return None if mol is None else {atom.GetSymbol() for atom in mol.GetAtoms()}


def count_elements(files: Iterable[Path]) -> dict[str, Any]:
    """Per element, how many distinct training molecules hold it, over JSONL (or .jsonl.gz) files."""
    from molgen3D.datasets.jsonl_paths import open_jsonl

    unique: set[bytes] = set()
    for file in files:
        with open_jsonl(file, "rb") as f:
            for line in f:
                match = _SMILES_FIELD.search(line)
                if match:
                    unique.add(match.group(1))
    counts: Counter[str] = Counter()
    for raw in unique:
        elements = elements_of(json.loads(b'"' + raw + b'"'))
        counts.update(elements or ())
    return {"molecules": len(unique), "elements": dict(sorted(counts.items()))}


def train_data_of(meta: dict) -> str | None:
    """The training split a run read, as its `run_meta.json` records it (path or alias), or None."""
    config = meta.get("job_config") or {}
    for section, key in (("molgen_data", "train_path_key"), ("training", "dataset_path")):
        value = (config.get(section) or {}).get(key)
        if value:
            return str(value)
    return None


def record_training_elements(hf_dir: Path, meta: dict) -> Path | None:
    """Write `training_elements.json` into an exported folder; None (and a log line) when the data is not here."""
    from molgen3D.datasets.jsonl_paths import expand_paths

    data = train_data_of(meta)
    try:
        files = expand_paths(data) if data else []
    except (FileNotFoundError, ValueError) as exc:
        files, data = [], f"{data} ({exc})"
    if not files:
        logger.warning("no %s written: the run's training data (%s) is not readable here", ELEMENTS_FILE, data)
        return None
    record = {"source": str(data), **count_elements(files)}
    return write_json_atomic(Path(hf_dir) / ELEMENTS_FILE, record)


def read_training_elements(model_dir: Path) -> dict[str, int] | None:
    """Element -> training molecules holding it, from the model folder; None when the folder records none."""
    path = Path(model_dir) / ELEMENTS_FILE
    if not path.is_file():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8"))["elements"])

"""Check the enriched-SMILES round trip on a SMILES file (default: rdkit's 10,000 drug-like SMILES).

Per molecule: embed one ETKDGv3 conformer, encode, decode, and require the same canonical
SMILES, heavy-atom coordinates equal to the truncated originals (under some graph match, so
the check does not trust the encoder's atom order), and agreement with `coordinate_template`.
Run it as `python -m molgen3D.datasets.roundtrip_check [--limit N] [--json out.json]`.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import tyro
from rdkit import Chem
from rdkit.Chem import rdDistGeom
from rdkit.rdBase import BlockLogs
from tqdm import tqdm

from molgen3D.chem.enriched_smiles import (
    EnrichedSmilesError,
    coordinate_template,
    decode,
    encode,
    format_coordinate,
    strip_coordinates,
)
from molgen3D.datasets.inputs import bundled_smiles_file, read_smiles
from molgen3D.datasets.skips import SkipLog

_BLOCK = re.compile(r"<[^<>]*>")
# Reasons that say the format failed (the others say RDKit could not give us a conformer).
FORMAT_FAILURES = (
    "unrepresentable",
    "decode_error",
    "graph_mismatch",
    "strip_mismatch",
    "template_mismatch",
    "coordinate_mismatch",
)


def check_molecule(smiles: str, seed: int = 42, precision: int = 4) -> tuple[str, str]:
    """("ok", "") or (reason, detail) for one SMILES."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() == 0:  # "" parses to a molecule with no atoms
            return "invalid_smiles", smiles
        mol = Chem.AddHs(mol)
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = seed
        if rdDistGeom.EmbedMolecule(mol, params) < 0:
            return "embed_failed", smiles
    try:
        text = encode(mol, precision=precision)
    except EnrichedSmilesError as err:
        return "unrepresentable", f"{smiles}: {err}"
    try:
        decoded = decode(text)
    except EnrichedSmilesError as err:
        return "decode_error", f"{smiles}: {err}"
    heavy = Chem.RemoveHs(mol)
    canonical = Chem.MolToSmiles(heavy)
    if Chem.MolToSmiles(decoded) != canonical:
        return "graph_mismatch", f"{canonical} -> {Chem.MolToSmiles(decoded)}"
    if strip_coordinates(text) != canonical:
        return "strip_mismatch", f"{canonical} -> {strip_coordinates(text)}"
    segments = coordinate_template(canonical)
    blocks = _BLOCK.findall(text)
    if len(blocks) != len(segments) - 1 or "".join(s + b for s, b in zip(segments, blocks)) + segments[-1] != text:
        return "template_mismatch", canonical
    if not coordinates_match(heavy, decoded, precision):
        return "coordinate_mismatch", canonical
    return "ok", ""


def coordinates_match(original: Chem.Mol, decoded: Chem.Mol, precision: int) -> bool:
    """True if some graph match maps every decoded atom onto an original atom at its truncated coordinates.

    Stereo is left to the canonical SMILES comparison: substructure matching with chirality
    rejects valid automorphisms of ring stereo (cis/trans 1,4-cyclohexanes).
    """
    if decoded.GetNumAtoms() != original.GetNumAtoms():
        return False
    step = 10.0**-precision
    orig = original.GetConformer().GetPositions()
    dec = decoded.GetConformer().GetPositions()
    for match in original.GetSubstructMatches(decoded, uniquify=False, maxMatches=10000):
        if all(_truncated(orig[j][k], dec[i][k], step, precision) for i, j in enumerate(match) for k in range(3)):
            return True
    return False


def _truncated(value: float, written: float, step: float, precision: int) -> bool:
    """`written` is `value` cut toward zero: not larger in size, less than one step smaller, on the grid."""
    shortfall = abs(value) - abs(written)
    same_side = written == 0 or (written > 0) == (value > 0)
    return (
        same_side
        and -1e-9 * step <= shortfall < step
        and format_coordinate(written, precision) == format_coordinate(value, precision)
    )


@dataclass
class RoundTripConfig:
    """Round-trip every molecule of a SMILES file through encode/decode."""

    input: Path | None = None
    """SMILES file (.smi/.csv/.tsv, gz ok); default: wehi_mols.csv bundled with rdkit."""
    limit: int | None = None
    """Check only the first N molecules."""
    seed: int = 42
    """ETKDGv3 random seed."""
    precision: int = 4
    """Coordinate decimals."""
    workers: int = 1
    """Worker processes."""
    json: Path | None = None
    """Also write the summary here."""


def run(config: RoundTripConfig) -> dict:
    """Counts by outcome with examples, molecules checked per second."""
    if config.limit is not None and config.limit < 0:
        raise ValueError(f"--limit must be >= 0 (or omitted for all), got {config.limit}")
    source = config.input or bundled_smiles_file()
    records = list(islice(read_smiles(source), config.limit))
    smiles = [r.text for r in records]
    check = partial(check_molecule, seed=config.seed, precision=config.precision)
    start = time.perf_counter()
    bar = dict(total=len(smiles), desc="round trip", unit="mol", file=sys.stderr, mininterval=2.0)
    if config.workers > 1:
        with multiprocessing.get_context("spawn").Pool(config.workers) as pool:
            results = list(tqdm(pool.imap(check, smiles, chunksize=8), **bar))
    else:
        results = [check(s) for s in tqdm(smiles, **bar)]
    seconds = time.perf_counter() - start
    counts = Counter(reason for reason, _ in results)
    log = SkipLog()
    for record, (reason, detail) in zip(records, results):
        if reason != "ok":
            log.add(reason, f"{record.where}: {detail}")
    embedded = len(results) - counts["invalid_smiles"] - counts["embed_failed"]
    return {
        "input": source.name,
        "molecules": len(results),
        "embedded": embedded,
        "round_tripped": counts["ok"],
        "format_failures": sum(counts[r] for r in FORMAT_FAILURES),
        "failures": log.as_dict(),
        "seconds": round(seconds, 1),
        "workers": config.workers,
    }


def cli(argv: list[str]) -> int:
    config = tyro.cli(RoundTripConfig, args=argv, prog="python -m molgen3D.datasets.roundtrip_check")
    summary = run(config)
    text = json.dumps(summary, indent=2)
    print(text)
    if config.json:
        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["format_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))

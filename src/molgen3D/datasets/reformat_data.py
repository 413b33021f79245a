"""`molgen3d reformat-data`: a prepared data set re-written in another coordinate format.

Data preparation always writes the original format (4 decimals, as stored, absolute). A model
may learn better from another (`chem.coordinate_format`); this writes a copy of every split
with each conformer text passed through `apply_format`, and a manifest that records the format
(`coordinate_format`) next to the source's manifest, so training and evaluation can check it.
Up to date when the output's manifest names the same source manifest and format.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from tqdm import tqdm

from molgen3D.chem.coordinate_format import MANIFEST_KEY, ORIGINAL, CoordinateFormat, apply_format
from molgen3D.chem.dataset_manifest import MANIFEST
from molgen3D.datasets.jsonl_paths import open_jsonl
from molgen3D.datasets.splits import SPLITS
from molgen3D.files import atomic_output, gzip_text_writer, write_json_atomic


def reformat_dataset(source: str | Path, output: str | Path, fmt: CoordinateFormat, force: bool = False) -> Path:
    """Write `source` (a prepared data set in the original format) into `output` in `fmt`; returns `output`."""
    from molgen3D.config.paths import resolve_path

    source, output = resolve_path(str(source)), resolve_path(str(output))
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: --source must be a folder written by `molgen3d prepare-data`"
        )
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    if MANIFEST_KEY in manifest and CoordinateFormat.from_dict(manifest[MANIFEST_KEY]) != ORIGINAL:
        raise ValueError(
            f"{manifest_path}: the source is already in format {manifest[MANIFEST_KEY]['name']}; "
            "re-format the original data set (written by `molgen3d prepare-data`) instead"
        )
    stamp = {"source_manifest_sha256": hashlib.sha256(raw).hexdigest(), MANIFEST_KEY: fmt.to_dict()}
    out_manifest = output / MANIFEST
    if not force and out_manifest.is_file():
        current = json.loads(out_manifest.read_text(encoding="utf-8"))
        if all(current.get(k) == v for k, v in stamp.items()) and _files_present(output, current):
            print(f"[reformat-data] {output} is up to date ({fmt.name})", file=sys.stderr)
            return output
    out_manifest.unlink(missing_ok=True)
    for split in SPLITS:
        (output / split).mkdir(parents=True, exist_ok=True)
        for file in manifest.get("counts", {}).get(split, {}).get("files", []):
            _reformat_file(source / split / file, output / split / file, fmt)
    new = {**manifest, **stamp}
    write_json_atomic(out_manifest, new)
    print(f"[reformat-data] wrote {output} in format {fmt.name}", file=sys.stderr)
    return output


def _files_present(output: Path, manifest: dict) -> bool:
    counts = manifest.get("counts", {})
    return all((output / s / f).is_file() for s in SPLITS for f in counts.get(s, {}).get("files", []))


def _reformat_file(src: Path, dst: Path, fmt: CoordinateFormat) -> None:
    """One shard re-written whole (temporary file, then rename); `.gz` without a timestamp: same text, same bytes."""
    if src.suffix == ".gz":
        with atomic_output(dst, "wb") as raw, gzip_text_writer(raw) as out:
            _reformat_lines(src, out, fmt)
    else:
        with atomic_output(dst, "w", encoding="utf-8", newline="\n") as out:
            _reformat_lines(src, out, fmt)


def _reformat_lines(src: Path, out: TextIO, fmt: CoordinateFormat) -> None:
    with open_jsonl(src, "rt") as lines:
        for number, line in enumerate(tqdm(lines, desc=f"reformat {src.parent.name}", unit="line", file=sys.stderr), 1):
            row = json.loads(line)
            try:
                row["embedded_smiles"] = apply_format(row["embedded_smiles"], fmt)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{src}:{number}: cannot re-format this line ({exc})") from None
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


@dataclass
class ReformatConfig:
    """Re-write a prepared data set in another coordinate format."""

    source: str
    """Data set written by `molgen3d prepare-data` (a folder or an alias such as data:embedded_root)."""
    output: str
    """Folder for the re-formatted copy (train/ valid/ test/ and manifest.json)."""
    decimals: int = 4
    """Digits after the decimal point (truncated toward zero)."""
    frame: Literal["stored", "canonical"] = "stored"
    """`canonical`: centroid at the origin, principal axes, proper rotation."""
    positions: Literal["absolute", "relative", "local"] = "absolute"
    """`relative`: each atom as its offset from its SMILES-tree parent; `local`: that offset in the
    frame of the bonds leading to the parent."""
    force: bool = False
    """Rewrite even if the output is up to date."""


def cli(argv: list[str]) -> int:
    import tyro

    cfg = tyro.cli(ReformatConfig, args=argv, prog="molgen3d reformat-data")
    try:
        fmt = CoordinateFormat(cfg.decimals, cfg.frame, cfg.positions)
        reformat_dataset(cfg.source, cfg.output, fmt, force=cfg.force)
    except (OSError, ValueError) as exc:
        print(f"molgen3d reformat-data: error: {exc}", file=sys.stderr)
        return 1
    return 0

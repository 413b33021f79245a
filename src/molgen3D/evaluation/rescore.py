"""`molgen3d rescore DIR`: every metric, table and plot again from an evaluation's saved samples, no sampling.

Reads `run.json` and `samples/*.sdf` that `molgen3d evaluate` wrote, re-reads the references
it names, and rewrites `metrics.json`, `table.txt` and `coverage.png` at the threshold given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from molgen3D.evaluation.evaluate import format_table, score_run


@dataclass
class RescoreConfig:
    """Rescore a `molgen3d evaluate` output directory from its saved samples."""

    out: Annotated[Path, tyro.conf.Positional]
    """The --out directory of `molgen3d evaluate`."""
    threshold: float = 0.75
    """Coverage threshold in A (0.75 for GEOM-DRUGS, 0.5 for GEOM-QM9)."""
    posebusters: Literal["mol", "mol_fast", "none"] = "mol"
    """PoseBusters checks on every valid sample."""
    rmsd_workers: int = 2
    """RMSD worker processes (RMSDs are reused from rmsd/*.npz while the samples are unchanged)."""
    pair_timeout: float = 30.0
    """Seconds one RMSD pair may take before it is counted as a time-out."""
    max_matches: int = 100_000
    """Cap on the symmetry mappings GetBestRMS tries per pair."""

    def __post_init__(self):
        if not self.threshold > 0:
            raise ValueError(f"--threshold must be > 0, got {self.threshold}")


def cli(argv: list[str]) -> int:
    try:
        cfg = tyro.cli(RescoreConfig, args=argv, prog="molgen3d rescore")
        metrics = score_run(
            cfg.out,
            threshold=cfg.threshold,
            rmsd_workers=cfg.rmsd_workers,
            pair_timeout=cfg.pair_timeout,
            max_matches=cfg.max_matches,
            posebusters=cfg.posebusters,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"molgen3d rescore: {exc}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(f"metrics: {cfg.out / 'metrics.json'}; table: {cfg.out / 'table.txt'}")
    return 0

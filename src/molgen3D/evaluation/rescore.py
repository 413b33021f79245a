"""`molgen3d rescore DIR`: every metric, table and plot again from an evaluation's saved samples, no sampling.

Reads `run.json` and `samples/*.sdf` that `molgen3d evaluate` wrote, re-reads the references
it names, and rewrites `metrics.json`, `table.txt` and `coverage.png` with the scoring options given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from molgen3D.evaluation.folder_owner import owned
from molgen3D.evaluation.run_folder import RUN_FILE
from molgen3D.evaluation.score_run import score_run
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.report import format_table


@dataclass
class RescoreConfig:
    """Rescore a `molgen3d evaluate` output directory from its saved samples."""

    out: Annotated[Path, tyro.conf.Positional]
    """The --out directory of `molgen3d evaluate`."""
    scoring: tyro.conf.OmitArgPrefixes[ScoringOptions] = field(default_factory=ScoringOptions)
    """Scoring options (as `molgen3d evaluate` takes them)."""


def rescore(cfg: RescoreConfig) -> dict:
    """Score the folder again while holding it, so no `evaluate` writes samples under it meanwhile."""
    if not (Path(cfg.out) / RUN_FILE).is_file():
        raise FileNotFoundError(f"{cfg.out} has no {RUN_FILE}: not a directory written by `molgen3d evaluate`")
    with owned(cfg.out, "molgen3d rescore"):
        return score_run(cfg.out, cfg.scoring)


def cli(argv: list[str]) -> int:
    try:
        cfg = tyro.cli(RescoreConfig, args=argv, prog="molgen3d rescore")
        metrics = rescore(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"molgen3d rescore: {exc}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(f"metrics: {cfg.out / 'metrics.json'}; table: {cfg.out / 'table.txt'}")
    return 0

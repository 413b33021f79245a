"""`molgen3d posttrain --config T.toml`: GRPO post-training of an exported model (docs/CONFIG.md, `[posttrain]`).

Data parallel: launch the same command under `torchrun --nproc_per_node N` (or `accelerate launch`);
each process draws its own molecules' rollouts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class PosttrainArgs:
    """GRPO post-training from a TOML config."""

    config: Path
    """The TOML with a [posttrain] section (docs/CONFIG.md)."""
    model: str | None = None
    """Override [posttrain] model (the start model folder)."""
    steps: int | None = None
    """Override [posttrain] steps."""
    out: str | None = None
    """Override [posttrain] out."""
    stop_after: int | None = None
    """Stop with a checkpoint after this step (the schedule still spans `steps`); run again to resume."""


def cli(argv: list[str]) -> int:
    from molgen3D.training.posttraining.config import load_config
    from molgen3D.training.posttraining.references import HeldOutMoleculeError
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError

    args = tyro.cli(PosttrainArgs, args=argv, prog="molgen3d posttrain")
    overrides = {k: v for k, v in (("model", args.model), ("steps", args.steps), ("out", args.out)) if v is not None}
    try:
        cfg = load_config(args.config, overrides)
        from molgen3D.training.posttraining.trainer import run_posttrain

        summary = run_posttrain(cfg, stop_after=args.stop_after)
    except (MolGenConfigError, HeldOutMoleculeError, FileNotFoundError, ValueError) as exc:
        print(f"molgen3d posttrain: {exc}", file=sys.stderr)
        return 1
    print(f"post-trained {summary['steps']} steps in {summary['seconds']} s; run folder {cfg.out}")
    if "final_model" in summary:
        print(f"model folder (generate/evaluate load it): {summary['final_model']}")
    return 0

"""The `molgen3d` command: one subcommand per job, each imported only when it runs.

Every subcommand module exposes `cli(argv: list[str]) -> int`, which parses its own
arguments with tyro. Importing lazily keeps `molgen3d --help` instant (no torch import).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("molgen3D.datasets.prepare", "molecules (SMILES, SDF or GEOM) -> train/valid/test JSONL shards"),
    "reformat-data": ("molgen3D.datasets.reformat_data", "re-write a prepared data set in another coordinate format"),
    "build-tokenizer": ("molgen3D.tokenization.build", "build the Qwen3 origin/custom and compact tokenizers"),
    "pack-stats": (
        "molgen3D.training.pretraining.dataprocessing.pack_stats",
        "pack a few batches and print their statistics",
    ),
    "doctor": ("molgen3D.training.pretraining.doctor", "preflight a training run on this machine/allocation"),
    "pretrain": ("molgen3D.training.pretraining.torchtitan_runner", "pretrain with TorchTitan from a TOML config"),
    "posttrain": ("molgen3D.training.posttraining.cli", "GRPO post-training of an exported model from a TOML config"),
    "export-hf": ("molgen3D.hf.export", "export a saved DCP step to a Hugging Face model folder"),
    "generate": ("molgen3D.generation.generate", "sample conformers from a trained model"),
    "evaluate": (
        "molgen3D.evaluation.evaluate",
        "score sampled conformers against references (COV/MAT), with an ETKDG baseline",
    ),
    "rescore": ("molgen3D.evaluation.rescore", "recompute every metric and the plot from saved samples"),
    "demo": (
        "molgen3D.demo",
        "the main job on the embedded default: data, tokenizers, pretrain, export, sample, score",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: molgen3d <command> [options]   (molgen3d <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"molgen3d: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`molgen3d pack-stats`: pack a few batches exactly as training would and print what they hold.

A quick look at a data set + tokenizer + seq_len before training: how many units fit in a
sample, how much of each batch is padding, how long units are, what was skipped and why.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import tyro

from molgen3D.config.paths import PathAliasError
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset, TitanStatefulDataLoader
from molgen3D.training.pretraining.dataprocessing.packing import IGNORE_INDEX


@dataclass
class PackStatsConfig:
    """Options of `molgen3d pack-stats`."""

    data: str = "data:conformers_train"
    """JSONL file, directory of *.jsonl, glob, or alias (data:conformers_train)."""
    tokenizer: str = "tokenizers:molgen_compact"
    """Tokenizer directory or alias (tokenizers:qwen3_0.6b_custom, tokenizers:molgen_compact)."""
    seq_len: int = 2048
    """Tokens per packed sample."""
    batch_size: int = 4
    """Samples per batch."""
    batches: int = 8
    """Batches to pack (fewer if one pass over the data ends first)."""
    lookahead_limit: int = 100
    """Pending units the packer may choose from (1 = first-fit)."""
    min_emb_len: int = 16
    """Skip units whose embedded_smiles has fewer characters."""
    seed: int = 0
    """Shuffle seed."""
    json_out: bool = False
    """Print the statistics as JSON instead of a table."""


def pack_stats(
    data: str,
    tokenizer: Any,
    *,
    seq_len: int = 2048,
    batch_size: int = 4,
    batches: int = 8,
    lookahead_limit: int = 100,
    min_emb_len: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Pack up to `batches` batches (one shuffled pass at most) and return their statistics."""
    dataset = JsonlTaggedPackedDataset(
        data, tokenizer, seq_len, min_emb_len=min_emb_len, seed=seed, lookahead_limit=lookahead_limit, infinite=False
    )
    loader = TitanStatefulDataLoader(dataset, dp_rank=0, dp_world_size=1, batch_size=batch_size)
    units_per_sample: list[int] = []
    n_batches = 0
    for inputs, labels in loader:
        n_real = (labels != IGNORE_INDEX).sum(dim=1) + 1
        for row, n in zip(inputs["input"], n_real.tolist()):
            units_per_sample.append(int((row[:n] == dataset.eot_id).sum()))
        n_batches += 1
        if n_batches == batches:
            break
    m = loader.metrics()
    units = m["units_packed"]
    counters = dataset.counters
    return {
        "data": [str(f) for f in dataset.index.files],
        "lines_in_data": len(dataset.index),
        "seq_len": seq_len,
        "batch_size": batch_size,
        "lookahead_limit": lookahead_limit,
        "batches": n_batches,
        "samples": int(m["samples"]),
        "units": int(units),
        "units_per_sample": {
            "mean": units / m["samples"] if m["samples"] else 0.0,
            "min": min(units_per_sample, default=0),
            "max": max(units_per_sample, default=0),
        },
        "padding_fraction": m["padding_fraction"],
        "tokens_per_unit": (m["tokens"] - units) / units if units else 0.0,
        "truncated": int(m["truncated"]),
        "skipped": {r: n for r, n in counters.skipped.items() if n},
        "skip_examples": {r: e for r, e in counters.skip_examples.items() if e},
    }


def format_stats(stats: dict[str, Any]) -> str:
    ups = stats["units_per_sample"]
    lines = [
        f"data:              {', '.join(stats['data'][:3])}{' ...' if len(stats['data']) > 3 else ''} "
        f"({stats['lines_in_data']} lines)",
        f"packed:            {stats['batches']} batches x {stats['batch_size']} = {stats['samples']} samples "
        f"of {stats['seq_len']} tokens (lookahead {stats['lookahead_limit']})",
        f"units per sample:  mean {ups['mean']:.2f}, min {ups['min']}, max {ups['max']}",
        f"tokens per unit:   {stats['tokens_per_unit']:.1f} (separator not counted)",
        f"padding fraction:  {stats['padding_fraction']:.4f}",
        f"truncated units:   {stats['truncated']}",
        f"skipped lines:     {sum(stats['skipped'].values())} {stats['skipped'] or ''}".rstrip(),
    ]
    for reason, examples in stats["skip_examples"].items():
        lines += [f"  {reason}: {e}" for e in examples]
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    cfg = tyro.cli(PackStatsConfig, args=argv, prog="molgen3d pack-stats")
    try:
        stats = pack_stats(
            cfg.data,
            cfg.tokenizer,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            batches=cfg.batches,
            lookahead_limit=cfg.lookahead_limit,
            min_emb_len=cfg.min_emb_len,
            seed=cfg.seed,
        )
    except (FileNotFoundError, PathAliasError, ValueError) as err:
        print(f"molgen3d pack-stats: {err}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2) if cfg.json_out else format_stats(stats), file=sys.stdout)
    return 0

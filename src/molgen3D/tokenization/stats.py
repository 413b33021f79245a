"""Tokens per unit and per heavy atom of a tokenizer on conformer units.

Sequence length, packing and the model's speed all scale with these numbers; the dataloader
benchmark reports them per tokenizer. Run `python -m molgen3D.tokenization.stats --data <split>
--tokenizers tokenizers:qwen3_0.6b_custom tokenizers:molgen_compact` for a side-by-side table.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molgen3D.chem.tagged_text import format_unit
from molgen3D.datasets.skips import SkipLog

# One `<x,y,z>` block per heavy atom (a dative bond `<-`/`->` is not one).
_COORDINATE_BLOCK = re.compile(r"<[-+]?[\d.]+,[-+]?[\d.]+,[-+]?[\d.]+>")
_BATCH = 256


def heavy_atoms(unit: str) -> int:
    """The number of coordinate blocks of a unit: one per heavy atom."""
    return len(_COORDINATE_BLOCK.findall(unit))


def _encode_batches(tokenizer: Any, units: list[str]) -> Iterator[int]:
    """Token counts without added BOS/EOS, through the fast backend when there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "encode_batch"):
        backend = tokenizer
    for start in range(0, len(units), _BATCH):
        chunk = units[start : start + _BATCH]
        if backend is not None:
            yield from (len(enc.ids) for enc in backend.encode_batch(chunk, add_special_tokens=False))
        else:
            yield from (len(tokenizer.encode(unit)) for unit in chunk)


def tokens_per_unit(tokenizer: Any, units: Iterable[str]) -> dict:
    """Summary of token counts over `units` (unit text as `chem.tagged_text.format_unit` writes it).

    `tokenizer`: a transformers tokenizer, a `tokenizers.Tokenizer`, a TorchTitan
    HuggingFaceTokenizer, or a tokenizer directory / `tokenizers:` alias. Keys: units, tokens,
    heavy_atoms, tokens_per_unit (mean), tokens_per_unit_median, tokens_per_unit_max,
    tokens_per_heavy_atom, chars_per_token.
    """
    if isinstance(tokenizer, (str, Path)):
        from molgen3D.tokenization.load import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    units = list(units)
    if not units:
        raise ValueError("tokens_per_unit needs at least one unit")
    counts = list(_encode_batches(tokenizer, units))
    tokens, atoms, chars = sum(counts), sum(map(heavy_atoms, units)), sum(map(len, units))
    return {
        "units": len(units),
        "tokens": tokens,
        "heavy_atoms": atoms,
        "tokens_per_unit": tokens / len(units),
        "tokens_per_unit_median": statistics.median(counts),
        "tokens_per_unit_max": max(counts),
        "tokens_per_heavy_atom": tokens / atoms if atoms else float("nan"),
        "chars_per_token": chars / tokens,
    }


def read_units(path: str | Path, skips: SkipLog | None = None, limit: int | None = None) -> Iterator[str]:
    """Units of the JSONL lines under `path` (file, directory or glob); bad lines are counted in `skips`."""
    from molgen3D.datasets.jsonl_paths import expand_paths, open_jsonl

    skips = skips if skips is not None else SkipLog()
    emitted = 0
    for file in expand_paths(path, recursive=True):
        with open_jsonl(file) as f:
            for number, raw in enumerate(f, 1):
                if limit is not None and emitted >= limit:
                    return
                where = f"{file}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    skips.add("not UTF-8", where, unit="line")
                    continue
                if not line.strip():
                    skips.add("blank line", where, unit="line")
                    continue
                try:
                    record = json.loads(line)
                    smiles, embedded = record["canonical_smiles"], record["embedded_smiles"]
                except (ValueError, KeyError, TypeError):
                    skips.add("not a JSON object with canonical_smiles and embedded_smiles", where, unit="line")
                    continue
                if not (isinstance(smiles, str) and isinstance(embedded, str) and smiles and embedded):
                    skips.add("empty or non-string field", where, unit="line")
                    continue
                emitted += 1
                yield format_unit(smiles, embedded)


@dataclass
class TokenStatsConfig:
    """Print tokens per unit and per heavy atom for each tokenizer on one data set."""

    data: str
    """A JSONL file, a directory of them, a glob, or a paths.yaml alias (e.g. `data:fixture_train`)."""
    tokenizers: tuple[str, ...] = ("tokenizers:qwen3_0.6b_custom", "tokenizers:molgen_compact")
    """Tokenizer directories or `tokenizers:` aliases."""
    limit: int | None = None
    """Read at most this many units."""


def cli(argv: list[str]) -> int:
    import tyro

    cfg = tyro.cli(TokenStatsConfig, args=argv, prog="python -m molgen3D.tokenization.stats")
    skips = SkipLog(max_examples=3)
    units = list(read_units(cfg.data, skips, cfg.limit))
    print(skips.summary(), file=sys.stderr)
    print(f"{'tokenizer':<36} {'tok/unit':>9} {'median':>7} {'max':>6} {'tok/heavy atom':>15} {'chars/tok':>10}")
    for name in cfg.tokenizers:
        s = tokens_per_unit(name, units)
        print(
            f"{name:<36} {s['tokens_per_unit']:>9.1f} {s['tokens_per_unit_median']:>7.0f} {s['tokens_per_unit_max']:>6}"
            f" {s['tokens_per_heavy_atom']:>15.2f} {s['chars_per_token']:>10.2f}"
        )
    print(f"{len(units)} units from {cfg.data}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))

"""Helpers for the packed-dataloader invariants: tokenizers, synthetic JSONL, and a sample checker."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from molgen3D.chem.tagged_text import format_unit

IGNORE = -100


def synthetic_record(i: int, n_atoms: int) -> dict[str, str]:
    """A well-formed line whose text is unique to i (coordinates carry i)."""
    atoms = "".join(f"[C]<{i % 97}.{(i * 31 + j) % 10000:04d},{j}.5000,-{i % 7}.1250>" for j in range(n_atoms))
    return {"canonical_smiles": "C" * n_atoms, "embedded_smiles": atoms}


def write_synthetic(path: Path, n: int, seed: int = 0, max_atoms: int = 6) -> list[dict[str, str]]:
    """`n` valid lines of varied length in one JSONL file; returns the records in file order."""
    rng = random.Random(seed)
    records = [synthetic_record(i, rng.randint(1, max_atoms)) for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def encode(tokenizer, record: dict[str, str]) -> tuple[int, ...]:
    """The reference tokenization of a record's unit, through the tokenizer's public call."""
    text = format_unit(record["canonical_smiles"], record["embedded_smiles"])
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_sample(inputs: torch.Tensor, labels: torch.Tensor, seq_len: int, eot: int) -> list[tuple[int, ...]]:
    """Check one sample's layout and label rule and cut it into its units (token tuples)."""
    x, y = inputs.tolist(), labels.tolist()
    assert len(x) == len(y) == seq_len
    ignored = [t for t, v in enumerate(y) if v == IGNORE]
    assert ignored, "the last real token must be ignored"
    last_real = ignored[0]
    assert ignored == list(range(last_real, seq_len)), "-100 must be one suffix"
    assert y[:last_real] == x[1 : last_real + 1], "labels[t] must equal input[t+1]"
    assert x[last_real] == eot, "the last real token is the separator after the last unit"
    assert all(v == eot for v in x[last_real:]), "padding must be <|endoftext|>"
    units, current = [], []
    for tok in x[: last_real + 1]:
        if tok == eot:
            assert current, "empty unit between two separators"
            units.append(tuple(current))
            current = []
        else:
            current.append(tok)
    return units


def units_of_batches(batches, seq_len: int, eot: int) -> list[tuple[int, ...]]:
    units = []
    for inputs, labels in batches:
        x = inputs["input"] if isinstance(inputs, dict) else inputs
        if x.dim() == 1:
            x, labels = x[None], labels[None]
        for row in range(x.shape[0]):
            units.extend(split_sample(x[row], labels[row], seq_len, eot))
    return units

"""Embedding rows for number pieces that start close when their values are close.

A randomly initialised embedding makes `.4567` and `.4568` unrelated classes; a small model sees
each a few dozen times and never learns that they are neighbours. Here each number piece gets
a row built from its value: a smooth cosine basis of the value scaled into [0, 1] (low
frequencies weigh most, so nearby values have nearly equal rows) plus one fixed direction per
family (integer parts, fractions of each length, digits, digit pairs), so families stay apart.
The head is tied to the embedding, so the output scores start smooth in the value too.
Deterministic: the rows depend only on the pieces, the width, the norm and the seed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["number_piece_values", "numeric_embedding_rows"]

_INTEGER = re.compile(r"[<,](-?\d{1,3})")
_FRACTION = re.compile(r"\.(\d{1,6})")
_DIGITS = re.compile(r"\d{1,2}")
_INTEGER_SPAN = 100


def number_piece_values(vocab: Mapping[str, int]) -> dict[int, tuple[str, float]]:
    """Token id -> (family, value in [0, 1]) for every number piece of a compact vocabulary.

    Families: `int` (`<-12`, `,3`: the signed integer part), `frac<k>` (`.4567`: its value),
    `digit` (`7`), `pair` (`07`). Other pieces are left out.
    """
    out: dict[int, tuple[str, float]] = {}
    for piece, token_id in vocab.items():
        if m := _INTEGER.fullmatch(piece):
            value = int(m.group(1))
            out[token_id] = ("int", (value + _INTEGER_SPAN) / (2 * _INTEGER_SPAN))
        elif m := _FRACTION.fullmatch(piece):
            digits = m.group(1)
            out[token_id] = (f"frac{len(digits)}", int(digits) / 10 ** len(digits))
        elif _DIGITS.fullmatch(piece):
            out[token_id] = ("digit", int(piece) / 10) if len(piece) == 1 else ("pair", int(piece) / 100)
    return out


def numeric_embedding_rows(
    values: Mapping[int, tuple[str, float]], dim: int, row_norm: float, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, rows [len(ids), dim]) with every row of norm `row_norm` (match the model's other rows)."""
    if dim < 4 or not row_norm > 0:
        raise ValueError(f"need dim >= 4 and row_norm > 0, got {dim}, {row_norm}")
    ids = sorted(values)
    generator = torch.Generator().manual_seed(seed)
    families = sorted({family for family, _ in values.values()})
    family_dirs = {
        f: torch.nn.functional.normalize(torch.randn(dim, generator=generator, dtype=torch.float64), dim=0)
        for f in families
    }
    k = torch.arange(dim, dtype=torch.float64)
    weights = 1.0 / (1.0 + k)
    rows = torch.empty(len(ids), dim, dtype=torch.float64)
    for r, token_id in enumerate(ids):
        family, value = values[token_id]
        smooth = torch.nn.functional.normalize(weights * torch.cos(torch.pi * k * value), dim=0)
        rows[r] = torch.nn.functional.normalize(smooth + 0.5 * family_dirs[family], dim=0) * row_norm
    return torch.tensor(ids, dtype=torch.long), rows.float()

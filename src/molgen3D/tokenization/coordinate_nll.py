"""Held-out negative log-likelihood per coordinate, comparable across tokenizers and formats.

Per-token NLL cannot compare a tokenizer that writes `<-12.4567` as 2 pieces with one that
writes it as 9: here the NLL of every piece that lies inside one coordinate (its delimiter `<`
or `,`, sign, integer part and fraction) is summed, giving nats per coordinate. The fraction
part alone (pieces that hold the point or a fraction digit) is compared with the uniform choice among its
10^decimals values; structure tokens of the conformer (atoms, bonds, branches, ring closures)
are reported per token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from molgen3D.chem.tagged_text import CONFORMER_OPEN

__all__ = ["coordinate_nll", "token_classes", "uniform_fraction_nll"]

_NUMBER = re.compile(r"([<,])(-?\d+)(\.\d*)?")
PROMPT, STRUCTURE = -2, -1


def uniform_fraction_nll(decimals: int) -> float:
    """Nats of a uniform guess among the 10^decimals fractions."""
    return decimals * math.log(10)


def token_classes(tokenizer, text: str) -> tuple[list[int], list[int], list[bool]]:
    """(ids, class per token, holds-a-fraction-digit per token) of one unit.

    Class: the index of the coordinate the token lies in (0, 1, ... in the conformer),
    STRUCTURE for other conformer tokens, PROMPT for tokens before `[CONFORMER]` ends.
    """
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    start = text.index(CONFORMER_OPEN) + len(CONFORMER_OPEN)
    spans = [(m.start(), m.end(), m.start(3) if m.group(3) else m.end()) for m in _NUMBER.finditer(text, start)]
    classes, fraction = [], []
    k = 0
    for a, b in enc.offsets:
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        inside = k < len(spans) and spans[k][0] <= a and b <= spans[k][1]
        classes.append(k if inside else (PROMPT if b <= start else STRUCTURE))
        fraction.append(inside and b > spans[k][2])
    return enc.ids, classes, fraction


@torch.no_grad()
def coordinate_nll(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], tokenizer, units: Sequence[str], eot_id: int, max_len: int = 4096
) -> dict[str, float]:
    """Mean NLL per coordinate, of its fraction part, and per conformer structure token over `units`.

    `logits_fn(ids [1, T]) -> logits [1, T, V]`; each unit is read after one `<|endoftext|>`, as
    in a packed training row.
    """
    per_coord, per_fraction, structure = [], [], []
    for text in units:
        ids, classes, fraction = token_classes(tokenizer, text)
        ids, classes, fraction = ids[:max_len], classes[:max_len], fraction[:max_len]
        inputs = torch.tensor([[eot_id, *ids[:-1]]])
        nll = F.cross_entropy(logits_fn(inputs)[0].float(), torch.tensor(ids), reduction="none").tolist()
        sums: dict[int, float] = {}
        frac: dict[int, float] = {}
        for value, c, f in zip(nll, classes, fraction):
            if c >= 0:
                sums[c] = sums.get(c, 0.0) + value
                if f:
                    frac[c] = frac.get(c, 0.0) + value
            elif c == STRUCTURE:
                structure.append(value)
        per_coord += list(sums.values())
        per_fraction += [frac.get(c, 0.0) for c in sums]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    return {
        "nll_per_coordinate": mean(per_coord),
        "nll_fraction_per_coordinate": mean(per_fraction),
        "nll_per_structure_token": mean(structure),
        "coordinates": len(per_coord),
    }

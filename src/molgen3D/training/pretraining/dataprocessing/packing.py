"""Pure packing rules: which pending unit goes next, and how a packed sample and its labels look.

Kept free of I/O so the packing rules can be read (and tested) in one place.
"""

from __future__ import annotations

from typing import Sequence

IGNORE_INDEX = -100


def pick_best_fit(costs: Sequence[int], room: int, lookahead_limit: int) -> int | None:
    """Index of the unit among the first `lookahead_limit` that leaves the least room, or None.

    A unit's cost is its tokens + 1 separator. Ties go to the earliest unit (oldest first);
    the scan stops at the first exact fit.
    """
    best, best_cost = None, 0
    for i in range(min(lookahead_limit, len(costs))):
        cost = costs[i]
        if best_cost < cost <= room:
            best, best_cost = i, cost
            if cost == room:
                break
    return best


def assemble(units: Sequence[Sequence[int]], seq_len: int, eot_id: int) -> tuple[list[int], list[int], int]:
    """Pack whole units into one sample: `(input_ids, labels, n_real)`.

    Each unit is followed by one `<|endoftext|>`; the rest is `<|endoftext|>` padding.
    `labels[t] = input[t+1]` up to the last real token (the separator after the last unit);
    from there on every label is IGNORE_INDEX, so separators between units are trained on
    (they predict the next unit's first token) and padding never is.
    """
    ids: list[int] = []
    for unit in units:
        ids.extend(unit)
        ids.append(eot_id)
    n_real = len(ids)
    if n_real > seq_len:
        raise ValueError(f"{len(units)} units take {n_real} tokens with separators, more than seq_len={seq_len}")
    ids.extend([eot_id] * (seq_len - n_real))
    labels = ids[1:n_real] + [IGNORE_INDEX] * (seq_len - n_real + 1) if n_real else [IGNORE_INDEX] * seq_len
    return ids, labels, n_real

"""Assign molecules to train/valid/test: exact counts, a seeded order, one split per molecule group.

Molecules are grouped by a stereo-free key, ordered by a seeded hash of that key, and the first
`n_train` go to train, the next `n_valid` to valid, the rest to test. The counts come from the
fractions by largest remainder, so 10 molecules at 0.8/0.1/0.1 give exactly 8/1/1. The result
depends only on the set of keys and the seed: not on input order or the worker count.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

SPLITS = ("train", "valid", "test")


def validate_fractions(fractions: tuple[float, float, float]) -> None:
    """Raise ValueError unless there are three non-negative fractions summing to 1."""
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"split_fractions must be three non-negative numbers (train, valid, test) summing to 1, got {fractions}"
        )


def split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Molecules per split for `n` molecules: largest remainder, and at least one in every non-zero split.

    Raises ValueError naming the fractions when `n` is smaller than the number of non-zero splits.
    """
    validate_fractions(fractions)
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n < len(wanted):
        raise ValueError(
            f"{n} molecule(s) cannot fill the {len(wanted)} non-empty splits of split_fractions={tuple(fractions)}; "
            f"give at least {len(wanted)} molecules or set the unwanted fractions to 0"
        )
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(SPLITS)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in wanted:
        if counts[i] == 0:
            donor = max(range(len(SPLITS)), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def split_rank(key: str, seed: int) -> bytes:
    """The seeded position of a molecule group in the split order."""
    return hashlib.sha256(f"{seed}\x00{key}".encode()).digest()


def assign_splits(keys: Iterable[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Split name of every distinct key."""
    unique = sorted(set(keys), key=lambda k: (split_rank(k, seed), k))
    counts = split_counts(len(unique), fractions)
    names = [name for name, c in zip(SPLITS, counts) for _ in range(c)]
    return dict(zip(unique, names))

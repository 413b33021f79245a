"""Assign molecules to train/valid/test by a seeded hash of their canonical SMILES.

A molecule's split depends only on itself and the seed: every conformer of it lands in the
same split, worker count and input order do not matter, and growing the input never moves a
molecule from one split to another.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "valid", "test")


def validate_fractions(fractions: tuple[float, float, float]) -> None:
    """Raise ValueError unless there are three non-negative fractions summing to 1."""
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"split_fractions must be three non-negative numbers (train, valid, test) summing to 1, got {fractions}"
        )


def assign_split(canonical_smiles: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """`train`, `valid` or `test` for this molecule."""
    digest = hashlib.sha256(f"{seed}\x00{canonical_smiles}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    bound = 0.0
    for name, fraction in zip(SPLITS, fractions):
        bound += fraction
        if u < bound:
            return name
    return [name for name, fraction in zip(SPLITS, fractions) if fraction > 0][-1]

"""NLL per coordinate: every piece of a coordinate counted once, whatever the split."""

from __future__ import annotations

import math

import pytest
import torch

from molgen3D.chem.tagged_text import format_unit
from molgen3D.tokenization.coordinate_nll import (
    PROMPT,
    STRUCTURE,
    coordinate_nll,
    token_classes,
)
from molgen3D.tokenization.load import load_tokenizer

UNIT = format_unit("CO", "[C]<-1.2345,0.5000,12.0001>[O]<0.1000,-0.0020,3.4567>")


@pytest.mark.parametrize("name,pieces_per_coord", [("molgen_compact", 2), ("molgen_compact_pairs", 3)])
def test_pieces_are_grouped_by_coordinate(tokenizer_root, name, pieces_per_coord):
    tok = load_tokenizer(tokenizer_root / name)
    ids, classes, fraction = token_classes(tok, UNIT)
    coords = sorted({c for c in classes if c >= 0})
    assert coords == list(range(6))
    assert all(classes.count(c) == pieces_per_coord for c in coords)
    assert PROMPT in classes and STRUCTURE in classes
    assert sum(fraction) == 6 * (pieces_per_coord - 1)


def test_digit_split_counts_every_character(tokenizer_root):
    tok = load_tokenizer(tokenizer_root / "molgen_compact_digits")
    _, classes, fraction = token_classes(tok, UNIT)
    assert classes.count(0) == len("<-1.2345") and sum(f for c, f in zip(classes, fraction) if c == 0) == len(".2345")


def test_uniform_model_gives_pieces_times_log_vocab(tokenizer_root):
    tok = load_tokenizer(tokenizer_root / "molgen_compact_pairs")
    vocab = len(tok)
    out = coordinate_nll(lambda ids: torch.zeros(1, ids.shape[1], vocab), tok, [UNIT], tok.eos_token_id)
    assert out["coordinates"] == 6
    assert out["nll_per_coordinate"] == pytest.approx(3 * math.log(vocab), rel=1e-5)
    assert out["nll_fraction_per_coordinate"] == pytest.approx(2 * math.log(vocab), rel=1e-5)

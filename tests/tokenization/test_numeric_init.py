"""Numeric embedding init: deterministic rows, close for close values, families apart."""

from __future__ import annotations

import pytest
import torch

from molgen3D.tokenization.compact import compact_vocabulary
from molgen3D.tokenization.numeric_init import (
    number_piece_values,
    numeric_embedding_rows,
)


@pytest.fixture(scope="module")
def vocab():
    return {p: i for i, p in enumerate(compact_vocabulary("whole"))}


def test_number_pieces_and_their_values(vocab):
    values = number_piece_values(vocab)
    assert values[vocab[".4567"]] == ("frac4", pytest.approx(0.4567))
    assert values[vocab["<-12"]] == ("int", pytest.approx(88 / 200))
    assert values[vocab["7"]] == ("digit", pytest.approx(0.7))
    assert vocab["[C]"] not in values and vocab["CC"] not in values


def test_rows_are_deterministic_with_the_requested_norm(vocab):
    values = number_piece_values(vocab)
    ids_a, rows_a = numeric_embedding_rows(values, 64, 1.5, seed=3)
    ids_b, rows_b = numeric_embedding_rows(values, 64, 1.5, seed=3)
    assert torch.equal(ids_a, ids_b) and torch.equal(rows_a, rows_b)
    assert torch.allclose(rows_a.norm(dim=1), torch.full((len(ids_a),), 1.5), atol=1e-5)
    _, other_seed = numeric_embedding_rows(values, 64, 1.5, seed=4)
    assert not torch.equal(rows_a, other_seed)


def test_neighbouring_values_start_closer_than_distant_ones(vocab):
    values = number_piece_values(vocab)
    ids, rows = numeric_embedding_rows(values, 128, 1.0)
    row = {int(i): r for i, r in zip(ids, rows)}

    def cos(a, b):
        return float(row[vocab[a]] @ row[vocab[b]])

    assert cos(".4567", ".4568") > 0.99
    assert cos(".4567", ".4600") > cos(".4567", ".9000")
    assert cos("<1", "<2") > cos("<1", "<-40")
    assert cos(".4567", "<1") < cos(".4567", ".4568")  # families stay apart

"""Best-fit lookahead packing wastes less of each sample than first-fit (lookahead 1)."""

from __future__ import annotations

import itertools

import pytest

from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset


def _padding(fixture_data, tok, seq_len, lookahead, samples=60):
    """Padding fraction of a steady stream (several epochs; no end-of-data flush)."""
    ds = JsonlTaggedPackedDataset(fixture_data / "train", tok, seq_len, lookahead_limit=lookahead)
    for _ in itertools.islice(iter(ds), samples):
        pass
    m = ds.metrics()
    assert m["units_packed"] > 2 * m["samples"], "several units per sample"
    return m["padding_fraction"]


@pytest.mark.parametrize("seq_len", [1024, 2048])
def test_best_fit_pads_less_than_first_fit_on_the_fixture(fixture_data, compact_tokenizer, seq_len):
    first_fit = _padding(fixture_data, compact_tokenizer, seq_len, 1)
    best_fit = _padding(fixture_data, compact_tokenizer, seq_len, 100)
    assert best_fit < first_fit / 2

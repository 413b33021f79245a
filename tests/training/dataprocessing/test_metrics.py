"""Loader metrics agree with what the batches hold, with and without worker processes."""

from __future__ import annotations

import itertools
import json

import pytest

from molgen3D.tokenization.load import eot_id
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset, TitanStatefulDataLoader

from .conftest import synthetic_record

SEQ_LEN = 72


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("metrics") / "d.jsonl"
    lines = []
    for i in range(30):
        lines.append(json.dumps(synthetic_record(i, 1 + i % 5)))
        if i % 10 == 3:
            lines.append("{broken")
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("num_workers", [0, 2])
def test_metrics_match_batches_and_skips(path, compact_tokenizer, num_workers):
    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN, infinite=False, min_emb_len=0, lookahead_limit=3)
    loader = TitanStatefulDataLoader(ds, dp_rank=0, dp_world_size=1, batch_size=2, num_workers=num_workers)
    assert loader.metrics()["samples"] == 0
    eot = eot_id(compact_tokenizer)
    samples = units = padding = 0
    batches = list(loader)
    for inputs, labels in batches:
        for x, y in zip(inputs["input"], labels):
            n_real = int((y != -100).sum()) + 1
            samples += 1
            units += int((x[:n_real] == eot).sum())
            padding += SEQ_LEN - n_real
    m = loader.metrics()
    assert (m["samples"], m["units_packed"], m["padding_tokens"]) == (samples, units, padding)
    assert units == m["units_read"] == 30
    assert m["skipped/bad_json"] == m["skipped_total"] == 3
    assert m["padding_fraction"] == pytest.approx(padding / (samples * SEQ_LEN))


def test_metrics_midway_count_only_yielded_batches(path, compact_tokenizer):
    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN, min_emb_len=0, lookahead_limit=3)
    loader = TitanStatefulDataLoader(ds, dp_rank=0, dp_world_size=1, batch_size=2, num_workers=2, prefetch_factor=4)
    list(itertools.islice(iter(loader), 5))
    assert loader.metrics()["samples"] == 10


def test_loader_refuses_a_dataset_of_another_rank(path, compact_tokenizer):
    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN, dp_rank=1, dp_world_size=2)
    with pytest.raises(ValueError, match="dp_rank=1/2"):
        TitanStatefulDataLoader(ds, dp_rank=0, dp_world_size=2, batch_size=2)

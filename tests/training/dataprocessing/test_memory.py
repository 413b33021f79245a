"""Streaming: the dataset keeps one offset per line, never the text."""

from __future__ import annotations

import gc
import pickle
import tracemalloc

from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.dataprocessing.line_index import LineIndex

from .conftest import write_synthetic


def _retained_bytes(build):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    obj = build()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return obj, sum(s.size_diff for s in after.compare_to(before, "filename"))


def test_index_memory_grows_by_offsets_only_when_data_grows_tenfold(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_synthetic(small, 1_000, max_atoms=12)
    write_synthetic(large, 10_000, max_atoms=12)
    bytes_per_line = large.stat().st_size / 10_000
    index_small, small_bytes = _retained_bytes(lambda: LineIndex(small))
    index_large, large_bytes = _retained_bytes(lambda: LineIndex(large))
    assert len(index_large) == 10_000
    growth_per_line = (large_bytes - small_bytes) / 9_000
    assert growth_per_line <= 16, f"{growth_per_line:.1f} bytes per extra line"
    assert bytes_per_line > 10 * growth_per_line


def test_dataset_holds_no_unit_text_after_construction(tmp_path, compact_tokenizer):
    path = tmp_path / "d.jsonl"
    write_synthetic(path, 200)
    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, 128)
    # everything but the tokenizer (whose vocabulary holds the tags) must be text-free
    blob = pickle.dumps({k: v for k, v in vars(ds).items() if k not in ("tokenizer", "_backend")})
    assert b"CONFORMER" not in blob and b"embedded_smiles" not in blob
    assert len(blob) < 8 * 200 + 4096

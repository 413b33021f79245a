"""Layout and label rules of every packed sample, and units never split."""

from __future__ import annotations

import json

import pytest

from molgen3D.tokenization.load import eot_id
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.dataprocessing.packing import IGNORE_INDEX, assemble, pick_best_fit

from .conftest import encode, split_sample, units_of_batches


def _fixture_records(fixture_data):
    return [json.loads(line) for line in (fixture_data / "train" / "part-00000.jsonl").read_text().splitlines()]


def _check_epoch(ds, tokenizer, records, seq_len):
    """One epoch: every unit whole and exactly once, truncations exactly the counted ones."""
    table = {encode(tokenizer, r): i for i, r in enumerate(records)}
    units = units_of_batches(list(ds), seq_len, eot_id(tokenizer))
    seen, truncated = [], 0
    for unit in units:
        if unit in table:
            seen.append(table[unit])
            continue
        owners = [i for full, i in table.items() if len(full) > seq_len - 1 and full[: seq_len - 1] == unit]
        assert len(unit) == seq_len - 1 and owners, "a piece that is neither a whole unit nor a counted truncation"
        seen.append(owners[0])
        truncated += 1
    assert sorted(seen) == list(range(len(records)))
    assert truncated == ds.counters.truncated
    return truncated


def test_fixture_epoch_with_compact_tokenizer_keeps_units_whole_and_truncates_only_overlong(
    fixture_data, compact_tokenizer
):
    records = _fixture_records(fixture_data)
    lengths = sorted(len(encode(compact_tokenizer, r)) for r in records)
    seq_len = lengths[3 * len(lengths) // 4]  # about a quarter of the units must be cut
    ds = JsonlTaggedPackedDataset(fixture_data / "train", compact_tokenizer, seq_len, infinite=False, min_emb_len=0)
    truncated = _check_epoch(ds, compact_tokenizer, records, seq_len)
    assert truncated == sum(n > seq_len - 1 for n in lengths) > 0


def test_fixture_epoch_with_qwen_tokenizer_at_2048(fixture_data, qwen_custom_tokenizer):
    records = _fixture_records(fixture_data)
    ds = JsonlTaggedPackedDataset(
        fixture_data / "train", qwen_custom_tokenizer, 2048, infinite=False, min_emb_len=0, seed=5
    )
    assert _check_epoch(ds, qwen_custom_tokenizer, records, 2048) == 0
    assert ds.counters.samples < len(records), "units must be packed several to a sample"


def test_overlong_units_dropped_when_truncation_is_off(fixture_data, compact_tokenizer):
    records = _fixture_records(fixture_data)
    lengths = [len(encode(compact_tokenizer, r)) for r in records]
    seq_len = sorted(lengths)[len(lengths) // 2]
    ds = JsonlTaggedPackedDataset(
        fixture_data / "train", compact_tokenizer, seq_len, infinite=False, min_emb_len=0, truncate_overflow_units=False
    )
    units = units_of_batches(list(ds), seq_len, eot_id(compact_tokenizer))
    kept = sorted(encode(compact_tokenizer, r) for r, n in zip(records, lengths) if n <= seq_len - 1)
    assert sorted(units) == kept
    assert ds.counters.skipped["too_long"] == len(records) - len(kept) > 0
    assert ds.counters.truncated == 0


def test_assemble_labels_separator_and_padding():
    eot = 9
    ids, labels, n_real = assemble([[1, 2, 3], [4, 5]], 10, eot)
    assert ids == [1, 2, 3, 9, 4, 5, 9, 9, 9, 9]
    assert n_real == 7
    # the separator between units predicts the next unit's first token; the last unit's final
    # token predicts its separator; from the last separator on everything is ignored
    assert labels == [2, 3, 9, 4, 5, 9, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    split_sample(*map(__import__("torch").tensor, (ids, labels)), 10, eot)


def test_assemble_exact_fit_ignores_only_the_final_separator():
    ids, labels, n_real = assemble([[1, 2], [3]], 5, 0)
    assert ids == [1, 2, 0, 3, 0] and n_real == 5
    assert labels == [2, 0, 3, 0, IGNORE_INDEX]


def test_assemble_refuses_overflow():
    with pytest.raises(ValueError, match="more than seq_len"):
        assemble([[1, 2, 3]], 3, 0)


def test_best_fit_takes_the_tightest_unit_within_the_lookahead():
    assert pick_best_fit([3, 7, 5], room=6, lookahead_limit=3) == 2
    assert pick_best_fit([3, 7, 5], room=6, lookahead_limit=2) == 0
    assert pick_best_fit([4, 6, 6], room=6, lookahead_limit=3) == 1  # exact fit: the first one
    assert pick_best_fit([5, 2, 5], room=5, lookahead_limit=1) == 0
    assert pick_best_fit([7, 8], room=6, lookahead_limit=2) is None
    assert pick_best_fit([], room=6, lookahead_limit=2) is None

"""Bad lines are skipped and counted by reason with file:line; bad paths fail at construction."""

from __future__ import annotations

import json
import logging

import pytest

from molgen3D.tokenization.load import eot_id
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.dataprocessing.line_index import DataPathError

from .conftest import encode, synthetic_record, units_of_batches

SEQ_LEN = 128


def _good(i):
    return json.dumps(synthetic_record(i, 3)).encode()


BAD_LINES = {
    "blank_line": [b"", b"   \t"],
    "bad_utf8": [b'{"canonical_smiles": "C\xff", "embedded_smiles": "x"}'],
    "bad_json": [b'{"canonical_smiles": "CC", ', b"[1, 2]"],
    "missing_field": [b'{"canonical_smiles": "CC"}', b'{"canonical_smiles": "CC", "embedded_smiles": 7}'],
    "empty_field": [b'{"canonical_smiles": "", "embedded_smiles": "[C]<0.0000,0.0000,0.0000>"}'],
    "too_short": [b'{"canonical_smiles": "C", "embedded_smiles": "[C]<0,0,0>"}'],
    "contains_eot": [
        json.dumps({"canonical_smiles": "C<|endoftext|>", "embedded_smiles": "[C]<0.0000,0.0000,0.0000>"}).encode()
    ],
    "bad_smiles": [
        b'{"canonical_smiles": "C1CC(N", "embedded_smiles": "[C]<0.1,0,0>1[C]<1,0,0>[C]<2,0,0>([N]<3,0,0>"}'
    ],
    "bad_coordinates": [b'{"canonical_smiles": "CC", "embedded_smiles": "[C]<abc,,0.3>[C]<1.0,0.0,0.0>"}'],
    "coordinates_mismatch": [b'{"canonical_smiles": "CCO", "embedded_smiles": "[C]<0.0,0.0,0.0>[C]<1.5,0.0,0.0>"}'],
}


def test_bad_lines_are_counted_by_reason_with_file_and_line(tmp_path, compact_tokenizer, caplog):
    lines, where, good = [], {}, []
    for reason, bad in BAD_LINES.items():
        for raw in bad:
            good.append(len(lines))
            lines.append(_good(len(lines)))
            where.setdefault(reason, []).append(len(lines) + 1)  # 1-based line number
            lines.append(raw)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")  # CRLF endings are fine

    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN, infinite=False, min_emb_len=16)
    with caplog.at_level(logging.WARNING):
        units = units_of_batches(list(ds), SEQ_LEN, eot_id(compact_tokenizer))

    assert sorted(units) == sorted(encode(compact_tokenizer, json.loads(lines[i])) for i in good)
    c = ds.counters
    assert c.lines_read == len(lines) and c.units_read == len(good)
    for reason, numbers in where.items():
        assert c.skipped[reason] == len(numbers), reason
        assert sorted(e.split(": ")[0] for e in c.skip_examples[reason]) == sorted(f"{path}:{n}" for n in numbers)
    for reason, numbers in where.items():
        for n in numbers:
            assert f"{path}:{n}" in caplog.text and reason in caplog.text
    assert ds.metrics()["skipped_total"] == sum(map(len, BAD_LINES.values()))


def test_each_bad_line_is_logged_once_even_over_many_epochs(tmp_path, compact_tokenizer, caplog):
    path = tmp_path / "d.jsonl"
    path.write_bytes(_good(0) + b"\nnot json\n" + _good(1) + b"\n")
    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN, min_emb_len=0, lookahead_limit=2)
    with caplog.at_level(logging.WARNING):
        it = iter(ds)
        for _ in range(20):
            next(it)
    assert ds.counters.skipped["bad_json"] > 5
    assert caplog.text.count(f"{path}:2") == 1


def test_a_shard_without_any_usable_line_fails_naming_the_file(tmp_path, compact_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"canonical_smiles": "C"}\n' * 5)
    ds = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN)
    with pytest.raises(RuntimeError, match=rf"no usable unit.*{path}.*missing_field"):
        next(iter(ds))


def test_missing_paths_and_empty_data_fail_at_construction(tmp_path, compact_tokenizer):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.jsonl").write_text("\n  \n\n")
    (tmp_path / "blank" / "b.jsonl").write_text("")
    cases = {
        str(tmp_path / "nope.jsonl"): "does not exist",
        str(tmp_path / "empty_dir"): "holds no \\*.jsonl files",
        str(tmp_path / "x" / "*.jsonl"): "matches no files",
        str(tmp_path / "blank"): "data set is empty",
    }
    for path, message in cases.items():
        with pytest.raises(DataPathError, match=message) as err:
            JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN)
        assert str(tmp_path) in str(err.value)


def test_paths_may_be_lists_globs_and_directories_without_double_counting(tmp_path, compact_tokenizer):
    for name, start in (("a.jsonl", 0), ("b.jsonl", 10)):
        (tmp_path / name).write_bytes(b"\n".join(_good(start + i) for i in range(4)) + b"\n")
    (tmp_path / "notes.txt").write_text("not data")
    ds = JsonlTaggedPackedDataset(
        [tmp_path, str(tmp_path / "*.jsonl"), tmp_path / "a.jsonl"], compact_tokenizer, SEQ_LEN, infinite=False
    )
    assert [p.name for p in ds.index.files] == ["a.jsonl", "b.jsonl"]
    assert len(units_of_batches(list(ds), SEQ_LEN, eot_id(compact_tokenizer))) == 8

"""The byte-offset index returns every line exactly, across files, endings and empty files."""

from __future__ import annotations

import gc
import os
import pickle

from molgen3D.training.pretraining.dataprocessing.line_index import LineIndex


def test_every_line_of_every_file_by_global_number(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"first\r\nsecond\n\nfourth")  # CRLF, blank line, no final newline
    (tmp_path / "b.jsonl").write_bytes(b"")
    (tmp_path / "c.jsonl").write_bytes(b"x\ny\n")
    index = LineIndex(tmp_path)
    expected = [b"first", b"second", b"", b"fourth", b"x", b"y"]
    assert len(index) == len(expected)
    assert [index.read(i) for i in reversed(range(len(index)))] == expected[::-1]
    assert index.location(3) == f"{tmp_path / 'a.jsonl'}:4"
    assert index.location(4) == f"{tmp_path / 'c.jsonl'}:1"
    copy = pickle.loads(pickle.dumps(index))  # spawn-started workers get a copy without descriptors
    assert [copy.read(i) for i in range(len(copy))] == expected


def test_dropped_indexes_leave_no_file_open(tmp_path):
    for name in "abc":
        (tmp_path / f"{name}.jsonl").write_bytes(b"x\ny\n")
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        index = LineIndex(tmp_path)
        assert [index.read(i) for i in range(len(index))] == [b"x", b"y"] * 3
        del index
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == open_before

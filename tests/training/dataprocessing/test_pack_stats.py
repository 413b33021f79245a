"""`molgen3d pack-stats` reports what the packed batches hold."""

from __future__ import annotations

import json

from molgen3D.training.pretraining.dataprocessing import pack_stats as ps


def test_pack_stats_on_fixture_is_consistent(fixture_data, compact_tokenizer):
    stats = ps.pack_stats(str(fixture_data / "train"), compact_tokenizer, seq_len=1024, batch_size=2, batches=3)
    assert stats["batches"] == 3 and stats["samples"] == 6
    ups = stats["units_per_sample"]
    assert ups["min"] >= 1 and ups["min"] <= ups["mean"] <= ups["max"]
    assert ups["mean"] * stats["samples"] == stats["units"]
    # real tokens = units' tokens + one separator per unit, the rest is padding
    real = stats["units"] * (stats["tokens_per_unit"] + 1)
    assert abs(real / (stats["samples"] * 1024) - (1 - stats["padding_fraction"])) < 1e-9


def test_cli_resolves_aliases_and_prints_json(compact_tokenizer_dir, capsys):
    argv = ["--data", "data:fixture_train", "--tokenizer", str(compact_tokenizer_dir), "--seq-len", "512"]
    assert ps.cli(argv + ["--batches", "2", "--batch-size", "1", "--json-out"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 2 and stats["data"][0].endswith("tests/fixtures/conformers/train/part-00000.jsonl")
    assert ps.cli(argv + ["--batches", "1"]) == 0
    assert "padding fraction" in capsys.readouterr().out


def test_cli_reports_a_missing_path_without_a_traceback(tmp_path, compact_tokenizer_dir, capsys):
    missing = tmp_path / "nope"
    assert ps.cli(["--data", str(missing), "--tokenizer", str(compact_tokenizer_dir)]) == 2
    assert f"data path {missing} does not exist" in capsys.readouterr().err

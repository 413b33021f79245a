"""tokens_per_unit and the JSONL unit reader used by the dataloader benchmark."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from molgen3D.chem.tagged_text import format_unit
from molgen3D.datasets.skips import SkipLog
from molgen3D.tokenization.stats import heavy_atoms, read_units, tokens_per_unit


def _char_tokenizer(text: str) -> Tokenizer:
    """One token per character: token counts equal text lengths."""
    tokenizer = Tokenizer(models.WordLevel({c: i for i, c in enumerate(sorted(set(text)))}, unk_token=text[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return tokenizer


def test_counts_tokens_and_heavy_atoms():
    units = [
        format_unit("CC", "[C]<1.0000,2.0000,3.0000>[C]<-1.0000,0.0000,0.5000>"),
        format_unit("C->[Fe]", "[C]<1,2,3>->[Fe]<-4,5,6>"),
        format_unit("O", "[O]<0.1,0.2,0.3>"),
    ]
    assert [heavy_atoms(u) for u in units] == [2, 2, 1]
    stats = tokens_per_unit(_char_tokenizer("".join(units)), units)
    lengths = sorted(len(u) for u in units)
    assert stats["units"] == 3 and stats["tokens"] == sum(lengths) and stats["heavy_atoms"] == 5
    assert stats["tokens_per_unit"] == pytest.approx(sum(lengths) / 3)
    assert stats["tokens_per_unit_median"] == lengths[1] and stats["tokens_per_unit_max"] == lengths[-1]
    assert stats["tokens_per_heavy_atom"] == pytest.approx(sum(lengths) / 5)
    assert stats["chars_per_token"] == pytest.approx(1.0)


def test_path_hf_and_titan_tokenizers_give_the_same_counts(compact_tokenizer_dir, fixture_units):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    from molgen3D.tokenization.load import load_tokenizer

    units = fixture_units[:20]
    by_path = tokens_per_unit(compact_tokenizer_dir, units)
    assert tokens_per_unit(load_tokenizer(compact_tokenizer_dir), units) == by_path
    assert tokens_per_unit(HuggingFaceTokenizer(str(compact_tokenizer_dir)), units) == by_path


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="at least one unit"):
        tokens_per_unit(_char_tokenizer("ab"), [])


def test_reader_skips_bad_lines_by_reason(tmp_path):
    good = {"canonical_smiles": "C", "embedded_smiles": "[C]<0.0,0.0,0.0>"}
    lines = [
        json.dumps(good).encode(),
        b"",
        b"{not json",
        json.dumps({"canonical_smiles": "C"}).encode(),
        json.dumps({**good, "embedded_smiles": ""}).encode(),
        b'{"canonical_smiles": "\xff"}',
        json.dumps(good).encode(),
    ]
    (tmp_path / "part-00000.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    skips = SkipLog()
    units = list(read_units(tmp_path, skips))
    assert units == [format_unit(good["canonical_smiles"], good["embedded_smiles"])] * 2
    skipped = skips.as_dict()
    assert {reason: entry["count"] for reason, entry in skipped.items()} == {
        "blank line": 1,
        "not a JSON object with canonical_smiles and embedded_smiles": 2,
        "empty or non-string field": 1,
        "not UTF-8": 1,
    }
    assert skipped["blank line"]["examples"] == [f"{tmp_path / 'part-00000.jsonl'}:2"]
    assert {entry["unit"] for entry in skipped.values()} == {"line"}


def test_reader_reads_a_data_root_and_respects_limit(fixture_data):
    assert len(list(read_units(fixture_data, limit=7))) == 7
    every = sum(1 for p in fixture_data.glob("*/*.jsonl") for line in p.read_text().splitlines() if line.strip())
    assert len(list(read_units(fixture_data))) == every
    assert len(list(read_units(str(fixture_data / "*" / "*.jsonl")))) == every


def test_reader_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no JSONL files at"):
        list(read_units(tmp_path / "nope"))

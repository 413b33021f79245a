"""Loader inputs: .jsonl.gz shards, manifest warnings, config-key errors, the cheap unit check."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from molgen3D.datasets.jsonl_paths import DataPathError, expand_paths, open_jsonl
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.dataprocessing.unit_checks import check_unit
from molgen3D.training.pretraining.dataprocessing.line_index import LineIndex

from .conftest import write_synthetic

SEQ_LEN = 128


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLGEN3D_CACHE", str(tmp_path / "cache"))


def gzip_copy(src, dst):
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def test_jsonl_gz_is_read_like_jsonl_in_folders_and_by_name(tmp_path):
    plain = tmp_path / "plain"
    records = write_synthetic(plain / "part-00000.jsonl", 40)
    packed = tmp_path / "packed"
    packed.mkdir()
    gz = gzip_copy(plain / "part-00000.jsonl", packed / "part-00000.jsonl.gz")
    assert expand_paths(packed) == [gz]
    for source in (packed, gz):
        index = LineIndex(source)
        assert len(index) == 40
        assert [json.loads(index.read(i)) for i in (0, 17, 39)] == [records[0], records[17], records[39]]
        assert index.location(17) == f"{gz}:18"  # messages name the .gz, not the cached copy
    with open_jsonl(gz, "rt") as f:
        assert json.loads(next(f)) == records[0]
    assert len(list((tmp_path / "cache" / "jsonl").iterdir())) == 1  # decompressed once, then reused


def test_truncated_gz_names_the_file(tmp_path):
    write_synthetic(tmp_path / "a.jsonl", 200)
    data = gzip.compress((tmp_path / "a.jsonl").read_bytes())
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataPathError, match=r"a\.jsonl\.gz: truncated or corrupt gzip"):
        LineIndex(tmp_path / "d")
    assert not list((tmp_path / "cache" / "jsonl").glob("*.partial"))


def test_empty_folder_is_a_data_path_error_naming_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataPathError, match=r"^training\.dataset_path: data directory .*empty holds no"):
        expand_paths(tmp_path / "empty", key="training.dataset_path")


def test_folder_without_or_disagreeing_with_its_manifest_warns(tmp_path, caplog):
    split = tmp_path / "set" / "train"
    write_synthetic(split / "part-00000.jsonl", 10)
    with caplog.at_level(logging.WARNING):
        LineIndex(split)
    assert f"data folder {split} has no manifest.json" in caplog.text
    manifest = {"counts": {"train": {"molecules": 5, "conformers": 10, "files": ["part-00000.jsonl"]}}}
    (tmp_path / "set" / "manifest.json").write_text(json.dumps(manifest))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        LineIndex(split)
    assert "data folder" not in caplog.text
    manifest["counts"]["train"]["conformers"] = 12
    (tmp_path / "set" / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        LineIndex(split)
    assert f"data folder {split}: {tmp_path / 'set' / 'manifest.json'} counts 12 conformers but" in caplog.text
    write_synthetic(split / "part-00001.jsonl", 2)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        LineIndex(split)
    expected = "lists files ['part-00000.jsonl'] but the folder holds ['part-00000.jsonl', 'part-00001.jsonl']"
    assert expected in caplog.text


@pytest.mark.parametrize(
    ("canonical", "embedded", "reason"),
    [
        ("CCO", "[C]<0,0,0>[C]<1.5,0,0>[O]<2,1,0>", ""),
        ("C[NH2+]C", "[C]<0,0,0>[NH2+]<1.5,0,0>[C]<2,1,0>", ""),
        ("C1CC(N", "[C]<0,0,0>1[C]<1,0,0>[C]<2,0,0>([N]<3,0,0>", "bad_smiles"),
        ("CC", "[C]<abc,,0.3>[C]<1.0,0.0,0.0>", "bad_coordinates"),
        ("CC", "[C]<1.0,0.0>[C]<1.0,0.0,0.0>", "bad_coordinates"),
        ("CC", "[C]<1.0,0.0,0.0[C]<1.0,0.0,0.0>", "bad_coordinates"),
        ("CCO", "[C]<0,0,0>[C]<1.5,0,0>[O]", "coordinates_mismatch"),
    ],
)
def test_check_unit(canonical, embedded, reason):
    assert check_unit(canonical, embedded)[0] == reason


def test_a_prepared_gzip_data_set_trains(tmp_path, compact_tokenizer):
    from molgen3D.datasets.prepare import PrepareConfig, prepare

    smi = tmp_path / "m.smi"
    smi.write_text("CCO\nCCCN\nCCCCO\nOCCO\nCCOC\nCC(=O)O\n", encoding="utf-8")
    prepare(PrepareConfig(output=str(tmp_path / "out"), input=smi, conformers_per_molecule=2, compress=True))
    ds = JsonlTaggedPackedDataset(tmp_path / "out" / "train", compact_tokenizer, SEQ_LEN, infinite=False, min_emb_len=0)
    assert list(ds) and ds.counters.units_read == 8 and sum(ds.counters.skipped.values()) == 0


def test_gz_copies_go_under_the_projects_cache_root(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME is honoured as everywhere else (files.cache_root), when $MOLGEN3D_CACHE is unset."""
    monkeypatch.delenv("MOLGEN3D_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    write_synthetic(tmp_path / "a.jsonl", 5)
    gzip_copy(tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz")
    assert len(LineIndex(tmp_path / "a.jsonl.gz")) == 5
    assert len(list((tmp_path / "xdg" / "molgen3d" / "jsonl").iterdir())) == 1

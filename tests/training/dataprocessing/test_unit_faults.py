"""Training-data faults a user can hit: BOM and CRLF files, another molecule's coordinates, absurd
coordinates, a corrupt .jsonl.gz, a huge line. Each is read as text should be or skipped by reason."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molgen3D.chem.coordinate_format import CoordinateFormat, apply_format
from molgen3D.chem.enriched_smiles import encode
from molgen3D.datasets.jsonl_paths import DataPathError, open_jsonl
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.dataprocessing.line_index import check_gzip_shards
from molgen3D.training.pretraining.dataprocessing.unit_checks import check_unit

from .conftest import write_synthetic

SEQ_LEN = 128
BOM = b"\xef\xbb\xbf"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLGEN3D_CACHE", str(tmp_path / "cache"))


def conformer_line(smiles: str, seed: int = 1) -> tuple[str, str]:
    """(canonical SMILES, embedded text) of one ETKDG conformer, as prepare-data writes them."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert rdDistGeom.EmbedMolecule(mol, randomSeed=seed) == 0
    heavy = Chem.RemoveHs(mol)
    return Chem.MolToSmiles(heavy), encode(heavy)


def read_all(path, tokenizer) -> JsonlTaggedPackedDataset:
    ds = JsonlTaggedPackedDataset(path, tokenizer, SEQ_LEN, infinite=False, min_emb_len=0, shuffle_lines=False)
    list(ds)
    return ds


def test_a_bom_and_crlf_line_endings_read_as_text(tmp_path, compact_tokenizer):
    records = write_synthetic(tmp_path / "plain.jsonl", 12)
    text = (tmp_path / "plain.jsonl").read_bytes()
    (tmp_path / "bom.jsonl").write_bytes(BOM + text)
    (tmp_path / "crlf.jsonl").write_bytes(BOM + text.replace(b"\n", b"\r\n"))
    for name in ("bom.jsonl", "crlf.jsonl"):
        ds = read_all(tmp_path / name, compact_tokenizer)
        assert ds.counters.units_read == len(records), name
        assert sum(ds.counters.skipped.values()) == 0, ds.counters.skipped
        with open_jsonl(tmp_path / name, "rt") as f:  # tokenizer stats and evaluation read through it
            assert [json.loads(line) for line in f] == records


def test_prepare_data_reads_a_smiles_file_with_a_bom_and_crlf(tmp_path):
    from molgen3D.datasets.inputs import read_smiles

    (tmp_path / "m.smi").write_bytes(BOM + b"CCO\r\nCCN\r\n")
    (tmp_path / "m.csv").write_bytes(BOM + b"smiles,name\r\nCCO,ethanol\r\n")
    assert [r.text for r in read_smiles(tmp_path / "m.smi")] == ["CCO", "CCN"]
    assert [(r.text, r.name) for r in read_smiles(tmp_path / "m.csv")] == [("CCO", "ethanol")]


def test_coordinates_of_another_molecule_are_skipped():
    """Same heavy-atom count, other graph and elements: the count check alone trained on it."""
    theirs, text = conformer_line("c1ccc(Nc2ncnc3ccccc23)cc1")
    mine = Chem.MolToSmiles(Chem.MolFromSmiles("Brc1cccc(Nc2ncnc3sccc23)c1"))
    assert Chem.MolFromSmiles(mine).GetNumAtoms() == Chem.MolFromSmiles(theirs).GetNumAtoms()
    assert check_unit(theirs, text) == ("", "")
    reason, detail = check_unit(mine, text)
    assert reason == "smiles_mismatch" and mine[:20] in detail
    assert check_unit("CCO", "[C]<0,0,0>[C]<1.5,0,0>[N]<2,1,0>")[0] == "smiles_mismatch"  # element only
    assert check_unit("CCO", "[C]<0,0,0><1,1,1>[C]<1.5,0,0>[O]")[0] == "coordinates_mismatch"  # two blocks, one atom


@pytest.mark.parametrize("positions", ["absolute", "relative", "local"])
def test_every_coordinate_format_passes_the_text_check(positions):
    for smiles in (
        "C[NH2+]Cc1sccc1C",
        "O=C([O-])[C@@H]1CC[C@H](Cl)C1",
        "[2H]C([2H])([2H])c1ccncc1Br",
        "C=C(C)/C=C/C#N",
    ):
        canonical, text = conformer_line(smiles)
        fmt = CoordinateFormat(decimals=3, frame="canonical", positions=positions)
        assert check_unit(canonical, apply_format(text, fmt)) == ("", ""), (smiles, positions)


def test_coordinates_beyond_the_sampling_bound_are_skipped():
    big = "9" * 309
    assert check_unit("CC", f"[C]<{big}.0000,0,0>[C]<1.0,0.0,0.0>")[0] == "coordinate_out_of_range"
    assert check_unit("CC", "[C]<0,-1000.0001,0>[C]<1.0,0.0,0.0>")[0] == "coordinate_out_of_range"
    assert check_unit("CC", "[C]<0,0,00001234.5>[C]<1.0,0.0,0.0>")[0] == "coordinate_out_of_range"
    assert check_unit("CC", "[C]<1000.0000,-999.9999,0>[C]<1.0,0.0,0.0>") == ("", "")


def test_bad_units_are_counted_by_reason_and_named_on_the_console(tmp_path, compact_tokenizer, caplog):
    records = write_synthetic(tmp_path / "d.jsonl", 10)
    canonical, text = conformer_line("c1ccc(Nc2ncnc3ccccc23)cc1")
    bad = [
        {"canonical_smiles": "Brc1cccc(Nc2ncnc3sccc23)c1", "embedded_smiles": text},
        {"canonical_smiles": "CC", "embedded_smiles": f"[C]<{'1' * 309}.0,0,0>[C]<1.0,0.0,0.0>"},
    ]
    with open(tmp_path / "d.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in bad)
    with caplog.at_level(logging.WARNING):
        ds = read_all(tmp_path / "d.jsonl", compact_tokenizer)
    metrics = ds.metrics()
    assert metrics["skipped/smiles_mismatch"] == 1 and metrics["skipped/coordinate_out_of_range"] == 1
    assert metrics["units_read"] == len(records) and metrics["skipped_total"] == 2
    assert f"skipping line (smiles_mismatch) {tmp_path / 'd.jsonl'}:11" in caplog.text
    assert f"skipping line (coordinate_out_of_range) {tmp_path / 'd.jsonl'}:12" in caplog.text


def test_a_huge_line_is_skipped_unread(tmp_path, compact_tokenizer, monkeypatch):
    records = write_synthetic(tmp_path / "d.jsonl", 10)
    huge = {"canonical_smiles": "C" * 200_000, "embedded_smiles": "[C]<1.0000,2.0000,3.0000>" * 200_000}
    with open(tmp_path / "d.jsonl", "a") as f:
        f.write(json.dumps(huge) + "\n")
    assert (tmp_path / "d.jsonl").stat().st_size > 5_000_000
    ds = JsonlTaggedPackedDataset(tmp_path / "d.jsonl", compact_tokenizer, SEQ_LEN, infinite=False, min_emb_len=0)
    read = ds.index.read
    lengths = []
    monkeypatch.setattr(ds.index, "read", lambda i: lengths.append(len(read(i))) or read(i))
    list(ds)
    assert ds.counters.skipped["line_too_long"] == 1 and ds.counters.units_read == len(records)
    assert max(lengths) < 1000  # the 5 MB line was never read, parsed or tokenized
    assert "bytes > max_line_bytes" in ds.counters.skip_examples["line_too_long"][0]


def test_corrupt_gzip_shards_are_found_before_training_naming_the_file_and_the_fix(tmp_path):
    write_synthetic(tmp_path / "a.jsonl", 200)
    data = gzip.compress((tmp_path / "a.jsonl").read_bytes())
    split = tmp_path / "train"
    split.mkdir()
    (split / "part-00000.jsonl.gz").write_bytes(data)
    (split / "part-00001.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataPathError, match=r"part-00001\.jsonl\.gz: truncated or corrupt gzip .*re-create it"):
        check_gzip_shards(split)
    (split / "part-00001.jsonl.gz").write_bytes(data)
    assert check_gzip_shards(split) == sorted(split.iterdir())


def test_the_runner_pre_flight_checks_gzip_shards(tmp_path):
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
    from molgen3D.training.pretraining.torchtitan_runner import _check_data

    write_synthetic(tmp_path / "a.jsonl", 200)
    data = gzip.compress((tmp_path / "a.jsonl").read_bytes())
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-00000.jsonl.gz").write_bytes(data[:-20])
    with pytest.raises(MolGenConfigError, match=r"\[training\] dataset_path: .*part-00000\.jsonl\.gz: truncated"):
        _check_data("training.dataset_path", tmp_path / "train")

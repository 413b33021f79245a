"""A format travels with the data (manifest), the tokenizer dir and the model folder; mismatches are errors."""

from __future__ import annotations

import json

import pytest

from molgen3D.chem.coordinate_format import (
    ORIGINAL,
    CoordinateFormat,
    FormatMismatchError,
    check_data_format,
    dataset_format,
    sampling_format,
    write_format,
)
from molgen3D.datasets.reformat_data import cli as reformat_cli
from molgen3D.datasets.reformat_data import reformat_dataset
from molgen3D.scoring.references import load_jsonl_references

FMT = CoordinateFormat(decimals=2, frame="canonical", positions="relative")


def test_reformat_writes_every_split_and_records_the_format(fixture_data, tmp_path):
    out = reformat_dataset(fixture_data, tmp_path / "d2", FMT)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["coordinate_format"]["name"] == "d2-canonical-relative"
    assert dataset_format(out) == FMT and dataset_format(out / "train") == FMT
    assert dataset_format(fixture_data) == ORIGINAL and dataset_format(tmp_path / "none") is None
    src = [json.loads(x) for x in (fixture_data / "test" / "part-00000.jsonl").read_text().splitlines()]
    dst = [json.loads(x) for x in (out / "test" / "part-00000.jsonl").read_text().splitlines()]
    assert [r["canonical_smiles"] for r in src] == [r["canonical_smiles"] for r in dst]
    assert dst[0]["embedded_smiles"] != src[0]["embedded_smiles"]
    # References of a relative data set are summed back into absolute positions: same molecules, bonded geometry.
    refs, precision = load_jsonl_references(out / "test")
    orig, _ = load_jsonl_references(fixture_data / "test")
    assert precision == 2 and [r.smiles for r in refs] == [r.smiles for r in orig]
    from rdkit.Chem import rdMolAlign

    mol, ref = refs[0].conformers[0], orig[0].conformers[0]
    atom_map = [(i, i) for i in range(mol.GetNumAtoms())]
    assert rdMolAlign.AlignMol(mol, ref, atomMap=atom_map) < FMT.max_atom_error
    mtime = (out / "manifest.json").stat().st_mtime_ns
    reformat_dataset(fixture_data, out, FMT)
    assert (out / "manifest.json").stat().st_mtime_ns == mtime, "an up-to-date copy is left alone"


def test_reformat_cli_refuses_a_reformatted_source(fixture_data, tmp_path, capsys):
    out = tmp_path / "d3"
    assert reformat_cli(["--source", str(fixture_data), "--output", str(out), "--decimals", "3"]) == 0
    assert reformat_cli(["--source", str(out), "--output", str(tmp_path / "again")]) == 1
    assert "already in format d3-stored-absolute" in capsys.readouterr().err


def test_training_data_must_match_the_tokenizer_format(fixture_data, tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    check_data_format(fixture_data / "train", tok)  # a tokenizer recording no format takes absolute data
    d3 = reformat_dataset(fixture_data, tmp_path / "d3", CoordinateFormat(decimals=3, frame="canonical"))
    check_data_format(d3 / "train", tok)
    rel = reformat_dataset(fixture_data, tmp_path / "rel", CoordinateFormat(positions="relative"))
    with pytest.raises(FormatMismatchError, match="records no coordinate format"):
        check_data_format(rel / "train", tok)
    write_format(tok, FMT)
    with pytest.raises(FormatMismatchError, match="d2-canonical-relative but data .* is d4-stored-absolute"):
        check_data_format(fixture_data / "train", tok)
    data = reformat_dataset(fixture_data, tmp_path / "d2", FMT)
    check_data_format(data / "train", tok)


def test_sampling_uses_the_model_format_and_rejects_other_options():
    assert sampling_format(FMT, None, None, "m") == (2, "relative")
    assert sampling_format(FMT, 2, "relative", "m") == (2, "relative")
    with pytest.raises(FormatMismatchError, match="--precision 4 but m was trained on coordinate format d2"):
        sampling_format(FMT, 4, None, "m")
    with pytest.raises(FormatMismatchError, match="--positions absolute"):
        sampling_format(FMT, None, "absolute", "m")
    assert sampling_format(None, 3, None, "m") == (3, "absolute")  # older folders: options are free
    assert sampling_format(None, None, None, "m", default_precision=4) == (4, "absolute")


def test_relative_sample_text_is_decoded_as_absolute():
    from molgen3D.chem.coordinate_format import apply_format
    from molgen3D.chem.enriched_smiles import decode
    from molgen3D.chem.tagged_text import CONFORMER_CLOSE, CONFORMER_OPEN
    from molgen3D.generation.sampling import finish_sample

    absolute = "[C]<1.0000,2.0000,3.0000>[C]<2.5000,2.0000,3.0000>[O]<3.0000,3.0000,3.0000>"
    relative = apply_format(absolute, CoordinateFormat(positions="relative"))
    assert relative == "[C]<1.0000,2.0000,3.0000>[C]<1.5000,0.0000,0.0000>[O]<0.5000,1.0000,0.0000>"
    text = f"{CONFORMER_OPEN}{relative}{CONFORMER_CLOSE}"
    mol, failure, body = finish_sample(text, "CCO", None, "relative")
    assert failure is None and body == relative
    assert mol.GetConformer().GetPositions().tolist() == decode(absolute).GetConformer().GetPositions().tolist()
    wrong, _, _ = finish_sample(text, "CCO", None, None)
    assert wrong.GetConformer().GetPositions().tolist() != mol.GetConformer().GetPositions().tolist()


def test_training_probe_references_carry_the_data_format(fixture_data, tmp_path):
    from molgen3D.evaluation.training_probe import (
        POSITIONS_PROP,
        PRECISION_PROP,
        load_references,
    )

    data = reformat_dataset(fixture_data, tmp_path / "rel", FMT)
    refs = load_references(data / "valid", 2, seed=0)
    mol = refs[0][1][0]
    assert mol.GetIntProp(PRECISION_PROP) == 2 and mol.GetProp(POSITIONS_PROP) == "relative"
    assert load_references(fixture_data / "valid", 1, seed=0)[0][1][0].GetProp(POSITIONS_PROP) == "absolute"


def gzipped_source(fixture_data, tmp_path):
    """A copy of the fixture whose test split is one .jsonl.gz shard."""
    import gzip
    import shutil

    src = tmp_path / "src"
    shutil.copytree(fixture_data, src)
    manifest = json.loads((src / "manifest.json").read_text())
    plain = src / "test" / "part-00000.jsonl"
    with open(plain, "rb") as fin, gzip.open(plain.with_name("part-00000.jsonl.gz"), "wb") as fout:
        fout.write(fin.read())
    plain.unlink()
    manifest["counts"]["test"]["files"] = ["part-00000.jsonl.gz"]
    (src / "manifest.json").write_text(json.dumps(manifest))
    return src


def test_gzipped_shards_stay_gzipped(fixture_data, tmp_path):
    import gzip

    out = reformat_dataset(gzipped_source(fixture_data, tmp_path), tmp_path / "out", CoordinateFormat(decimals=2))
    with gzip.open(out / "test" / "part-00000.jsonl.gz", "rt") as f:
        row = json.loads(f.readline())
    assert len(row["embedded_smiles"].split(",")[1].split(".")[1]) == 2


def test_reformatted_gzip_shards_are_byte_reproducible(fixture_data, tmp_path, monkeypatch):
    """Two runs at different times write the same bytes: no timestamp in the gzip header."""
    import time

    src = gzipped_source(fixture_data, tmp_path)
    written = []
    for run, clock in enumerate((1_000_000_000.0, 1_700_000_000.0)):
        monkeypatch.setattr(time, "time", lambda clock=clock: clock)
        out = reformat_dataset(src, tmp_path / f"out{run}", CoordinateFormat(decimals=2))
        written.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert written[0] == written[1] and len(written[0]) == 4


def test_local_data_set_references_decode_to_the_stored_conformers(fixture_data, tmp_path):
    """`reformat-data --positions local` writes data whose references decode back to the stored shapes."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    out = tmp_path / "local"
    args = ["--source", str(fixture_data), "--output", str(out), "--decimals", "2", "--frame", "canonical"]
    assert reformat_cli([*args, "--positions", "local"]) == 0
    fmt = CoordinateFormat(decimals=2, frame="canonical", positions="local")
    assert dataset_format(out / "test") == fmt
    stored, _ = load_jsonl_references(fixture_data / "test")
    local, _ = load_jsonl_references(out / "test")
    assert [r.smiles for r in local] == [r.smiles for r in stored]
    for a, b in zip(stored, local):
        for conf_a, conf_b in zip(a.conformers, b.conformers):
            n = conf_a.GetNumAtoms()
            rms = rdMolAlign.AlignMol(Chem.Mol(conf_b), conf_a, atomMap=[(i, i) for i in range(n)])
            assert rms < fmt.max_atom_error

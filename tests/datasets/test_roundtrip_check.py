"""`python -m molgen3D.datasets.roundtrip_check`: bad lines are counted where they are, never crash the run."""

from __future__ import annotations

from molgen3D.datasets.roundtrip_check import FORMAT_FAILURES, RoundTripConfig, check_molecule, run


def test_blank_smiles_is_invalid_not_a_crash():
    assert check_molecule("") == ("invalid_smiles", "")


def test_failures_name_their_file_and_line(tmp_path):
    source = tmp_path / "mols.smi"
    source.write_text("CCO\n\nnot_a_smiles\nc1ccccc1\n", encoding="utf-8")
    summary = run(RoundTripConfig(input=source))
    assert summary["molecules"] == 4 and summary["round_tripped"] == 2 and summary["embedded"] == 2
    assert summary["failures"]["invalid_smiles"]["examples"] == ["mols.smi:2: ", "mols.smi:3: not_a_smiles"]
    assert summary["format_failures"] == 0 and not set(summary["failures"]) & set(FORMAT_FAILURES)


def test_limit_checks_only_the_first_records(tmp_path):
    source = tmp_path / "mols.smi"
    source.write_text("CCO\nxyz\nCCN\n", encoding="utf-8")
    summary = run(RoundTripConfig(input=source, limit=1))
    assert summary["molecules"] == 1 and summary["round_tripped"] == 1 and summary["failures"] == {}

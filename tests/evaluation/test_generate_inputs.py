"""`generate` on inputs a new user tries: salts, empty files, 2D SDFs, unseen elements, no tokenizer files."""

from __future__ import annotations

import json
import shutil

import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molgen3D.generation import generate as generate_module
from molgen3D.generation.sample_io import summary_path
from molgen3D.hf.training_elements import ELEMENTS_FILE, count_elements, record_training_elements

FAST = ["--num-samples", "1", "--max-new-tokens", "60", "--no-progress", "--threads", "1"]


def _generate(model, smiles, out, *extra):
    return generate_module.cli(["--model", str(model), "--smiles", str(smiles), "--out", str(out), *FAST, *extra])


def test_a_salt_is_sampled_as_its_largest_fragment_unless_all_are_asked(compact_model_dir, tmp_path, capsys):
    smi = tmp_path / "salt.smi"
    smi.write_text("CC(=O)[O-].[Na+] sodium_acetate\nCCO ethanol\n")
    assert _generate(compact_model_dir, smi, tmp_path / "a.jsonl") == 0
    summary = json.loads(summary_path(tmp_path / "a.jsonl").read_text())
    assert [m["smiles"] for m in summary["molecules"]] == ["CC(=O)[O-]", "CCO"]
    assert summary["fragments"]["cut"]["fragments_removed"]["count"] == 1
    assert "largest fragment sampled: 1" in capsys.readouterr().out
    assert _generate(compact_model_dir, smi, tmp_path / "b.jsonl", "--fragments", "all") == 0
    summary = json.loads(summary_path(tmp_path / "b.jsonl").read_text())
    assert summary["molecules"][0]["smiles"] == "CC(=O)[O-].[Na+]" and not summary["fragments"]["cut"]


def test_an_input_with_nothing_to_sample_is_an_error(compact_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.smi"
    empty.write_text("# no molecules here\n")
    assert _generate(compact_model_dir, empty, tmp_path / "e.sdf") == 1
    assert "nothing to sample" in capsys.readouterr().err and not (tmp_path / "e.sdf").exists()
    flat = Chem.MolFromSmiles("CCO")
    AllChem.Compute2DCoords(flat)
    sdf = tmp_path / "flat.sdf"
    with Chem.SDWriter(str(sdf)) as writer:
        writer.write(flat)
    assert _generate(compact_model_dir, sdf, tmp_path / "f.sdf") == 1
    err = capsys.readouterr().err
    assert "nothing to sample" in err and "every record was skipped" in err


def test_a_model_folder_without_tokenizer_files_names_them(compact_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(compact_model_dir, model)
    (model / "tokenizer.json").unlink()
    (model / "tokenizer_config.json").unlink()
    smi = tmp_path / "m.smi"
    smi.write_text("CCO\n")
    assert _generate(model, smi, tmp_path / "o.sdf") == 1
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "tokenizer_config.json" in err and "--tokenizer" in err
    assert "endoftext" not in err


def test_elements_outside_the_training_data_are_named(compact_model_dir, tmp_path, fixture_data, capsys):
    model = tmp_path / "model"
    shutil.copytree(compact_model_dir, model)
    meta = {"job_config": {"molgen_data": {"train_path_key": str(fixture_data / "train")}}}
    record = record_training_elements(model, meta)
    assert record == model / ELEMENTS_FILE
    counts = json.loads(record.read_text())
    assert counts["elements"]["C"] == counts["molecules"] > 0 and "Se" not in counts["elements"]
    smi = tmp_path / "m.smi"
    smi.write_text("C[Se]C dimethylselenide\nCCO ethanol\n")
    assert _generate(model, smi, tmp_path / "o.jsonl") == 0
    captured = capsys.readouterr()
    assert "never had" in captured.err and "Se (1: dimethylselenide)" in captured.err
    summary = json.loads(summary_path(tmp_path / "o.jsonl").read_text())
    assert summary["unseen_elements"] == {"checked": True, "elements": {"Se": ["dimethylselenide"]}}
    assert "Se (1: dimethylselenide)" in captured.out  # in the printed summary too


def test_element_counts_are_per_distinct_molecule(tmp_path):
    lines = [{"canonical_smiles": s, "embedded_smiles": "x"} for s in ("CCO", "CCO", "C[Se]C", "c1ccncc1")]
    path = tmp_path / "part.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert count_elements([path]) == {"molecules": 3, "elements": {"C": 3, "N": 1, "O": 1, "Se": 1}}


@pytest.mark.parametrize("meta", [{}, {"job_config": {"training": {"dataset_path": "/nowhere/train"}}}])
def test_no_record_when_the_training_data_is_not_here(tmp_path, meta):
    assert record_training_elements(tmp_path, meta) is None and not (tmp_path / ELEMENTS_FILE).exists()

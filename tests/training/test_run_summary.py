"""The end-of-run summary says what each saved step really is (checked, not guessed from file names), from
its structure and what its checksum manifest says, without hashing the weights again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

from molgen3D.hf import checkpoint_step
from molgen3D.hf.checkpoint_step import write_manifest
from molgen3D.training.pretraining.torchtitan_runner import step_kind


def _dcp(step_dir: Path, *, model_only: bool = False) -> None:
    state = {"w": torch.zeros(2)}
    if not model_only:
        state |= {"optimizer": {"exp_avg": torch.zeros(2)}, "train_state": {"step": torch.tensor(4)}}
    dcp.save(state, checkpoint_id=str(step_dir), no_dist=True)


def _hf(step_dir: Path) -> None:
    step_dir.mkdir(parents=True)
    save_file({"model.norm.weight": torch.ones(2)}, str(step_dir / "model.safetensors"))
    index = {"weight_map": {"model.norm.weight": "model.safetensors"}}
    (step_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    (step_dir / "config.json").write_text("{}")


def test_each_kind_of_step(tmp_path):
    _dcp(tmp_path / "step-10")
    write_manifest(tmp_path / "step-10")
    assert step_kind(tmp_path / "step-10") == "step-10 (resumable)"
    _dcp(tmp_path / "step-15", model_only=True)
    assert step_kind(tmp_path / "step-15") == "step-15 (model only, no checksums.json)"
    _hf(tmp_path / "step-20")
    write_manifest(tmp_path / "step-20")
    assert step_kind(tmp_path / "step-20") == "step-20 (HF model)"


def test_a_folder_that_only_looks_complete_is_called_broken(tmp_path):
    _hf(tmp_path / "step-20")
    (tmp_path / "step-20" / "model.safetensors.index.json").unlink()  # config.json alone is not a model
    assert step_kind(tmp_path / "step-20").startswith("step-20 BROKEN (no .metadata")
    _dcp(tmp_path / "step-10")
    write_manifest(tmp_path / "step-10")
    shard = next((tmp_path / "step-10").glob("*.distcp"))
    shard.write_bytes(bytes(shard.stat().st_size + 3))
    kind = step_kind(tmp_path / "step-10")
    assert kind.startswith("step-10 BROKEN (") and shard.name in kind and "the manifest says" in kind


def test_the_summary_reads_the_manifest_instead_of_hashing_again(tmp_path, monkeypatch):
    """Several GB per step at 0.6B: the trainer hashed each file when it saved; the summary only compares."""
    _dcp(tmp_path / "step-10")
    write_manifest(tmp_path / "step-10")

    def no_hashing(path):
        raise AssertionError(f"the summary hashed {path}")

    monkeypatch.setattr(checkpoint_step, "sha256_file", no_hashing)
    assert step_kind(tmp_path / "step-10") == "step-10 (resumable)"
    with pytest.raises(AssertionError, match="hashed"):
        checkpoint_step.verify_manifest(tmp_path / "step-10")  # what loading does: reads every byte

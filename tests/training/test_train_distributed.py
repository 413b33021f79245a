"""Two gloo ranks under torchrun: FSDP with the tied head trains, saves DCP + HF, validates unevenly split data.

Each rank appends a digest of every training batch it receives to its own file, so the test
can check that the ranks saw different data. The validation file has 9 lines, so rank 0 gets
5 (two batches of 4) and rank 1 gets 4 (one batch): rank 1 must keep FSDP in step with a
padding batch instead of hanging, and the loss must cover all 9 units once. Conformer sampling
runs on both ranks with the same seed, so their FSDP forwards stay paired.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.hf.checkpoint_step import structure_problem

pytestmark = pytest.mark.slow  # trains a model end to end

DRIVER = Path(__file__).with_name("batch_recorder.py")


def _valid_tokens(path: Path, tokenizer_dir: Path, seq_len: int, seed: int, world: int) -> int:
    """Label tokens of one unshuffled pass over `path`, split over `world` ranks as the validator splits it."""
    total = 0
    for rank in range(world):
        dataset = JsonlTaggedPackedDataset(
            str(path),
            str(tokenizer_dir),
            seq_len,
            shuffle_lines=False,
            infinite=False,
            seed=seed,
            dp_rank=rank,
            dp_world_size=world,
        )
        total += sum(int((labels != -100).sum()) for _, labels in dataset)
    return total


def test_two_rank_fsdp_gloo_run(tmp_path, make_tiny_toml, compact_tokenizer_dir, fixture_data):
    valid = tmp_path / "valid9.jsonl"
    valid.write_text("".join((fixture_data / "valid" / "part-00000.jsonl").read_text().splitlines(keepends=True)[:9]))
    toml = make_tiny_toml(
        "tiny-fsdp",
        training={"steps": 4, "seed": 99},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [4], "decay_frac": 0.25},
        checkpoint={
            "enable": True,
            "interval": 2,
            "keep_latest_k": 0,
            "last_save_in_hf": True,
            "save_hf_per_checkpoint": True,
        },
        validation={
            "enable": True,
            "dataset_path": str(valid),
            "freq": 4,
            "steps": -1,
            "local_batch_size": 4,
            "sample_conformers_freq": 4,
            "sample_conformers_molecules": 1,
            "sample_conformers_per_molecule": 1,
            "sample_max_new_tokens": 48,
        },
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(DRIVER),
        str(toml),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    digests = [(tmp_path / f"batches-rank{r}.txt").read_text().split() for r in (0, 1)]
    assert [len(d) for d in digests] == [4, 4], "one batch per step on each rank"
    assert not set(digests[0]) & set(digests[1]), "the two data-parallel ranks must see different batches"

    run_dir = tmp_path / "ckpts" / "tiny-fsdp" / "checkpoint"
    assert structure_problem(run_dir / "step-2") is None, "FSDP DCP at the interval"
    assert structure_problem(run_dir / "step-4") is None, "consolidated HF safetensors at the last step"
    for hf in (run_dir / "step-2" / "hf", run_dir / "step-4"):
        assert (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file(), f"{hf} is not a complete HF folder"
        assert list(hf.glob("*.safetensors")), f"no safetensors in {hf}"

    log = (tmp_path / "outputs" / "pretrain_logs" / "tiny-fsdp" / "runtime.log").read_text()
    assert "Applied FSDP to the model (tied embedding/output in one group, SUM-only reductions for gloo)" in log
    assert re.search(r"validate step:  4 .*conformer_samples: 1\b", log), (
        "both ranks sampled in step (FSDP forwards are collective)"
    )
    match = re.search(r"validate step:  4 .*batches: (\d+)  tokens: (\d+)", log)
    assert match, log[-3000:]
    assert int(match.group(1)) == 2, "rank 0 (which writes the log) has 5 of the 9 lines: 2 batches"
    assert int(match.group(2)) == _valid_tokens(valid, compact_tokenizer_dir, 256, seed=99, world=2)

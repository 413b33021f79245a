"""HSDP 2x2 (replicate 2 x shard 2) on 4 gloo CPU ranks, with document masking and the tied head.

The rehearsal of a 2-node run: the tied embedding/head in one FSDP group sharded within a "node"
and replicated across the two, block-causal attention per unit, a checkpoint and the final HF
save, and every rank reading its own batches.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from molgen3D.hf.checkpoint_step import structure_problem

pytestmark = pytest.mark.slow  # four ranks train a model end to end

DRIVER = Path(__file__).with_name("batch_recorder.py")


def test_hsdp_2x2_with_document_masking_and_the_tied_head(tmp_path, make_tiny_toml):
    toml = make_tiny_toml(
        "tiny-hsdp",
        model={"name": "molgen_qwen3", "flavor": "tiny", "document_masking": True},
        training={"steps": 3, "seed": 7, "local_batch_size": 2},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [3], "decay_frac": 0.34},
        parallelism={"data_parallel_replicate_degree": 2, "data_parallel_shard_degree": 2},
        checkpoint={"enable": True, "interval": 2, "keep_latest_k": 0, "last_save_in_hf": True},
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", str(DRIVER)]
    proc = subprocess.run([*cmd, str(toml), str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    digests = [(tmp_path / f"batches-rank{r}.txt").read_text().split() for r in range(4)]
    assert [len(d) for d in digests] == [3] * 4, "one batch per step on each rank"
    assert len({h for d in digests for h in d}) == 12, "four data-parallel ranks, four different batch streams"

    log = (tmp_path / "outputs" / "pretrain_logs" / "tiny-hsdp" / "runtime.log").read_text()
    assert "Applied HSDP to the model (tied embedding/output in one group, SUM-only reductions for gloo)" in log
    assert "Document masking: sdpa attention, block-causal per unit" in log
    losses = [float(x) for x in re.findall(r"step:\s+\d+\s+loss:\s+([0-9.]+)", log)]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses), log[-2000:]
    run_dir = tmp_path / "ckpts" / "tiny-hsdp" / "checkpoint"
    assert structure_problem(run_dir / "step-2") is None and structure_problem(run_dir / "step-3") is None
    assert list((run_dir / "step-3").glob("*.safetensors")), "the final HF save gathers the sharded, replicated model"

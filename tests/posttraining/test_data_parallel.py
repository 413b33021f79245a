"""Data parallel the way TRL/accelerate run it: `torchrun` with 2 gloo ranks on CPU, one GRPO step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_train_one_step_and_save_a_model(tmp_path, write_config):
    config = write_config(tmp_path / "ddp", extra="max_molecules = 2")
    text = config.read_text(encoding="utf-8").replace("steps = 2", "steps = 1")
    config.write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(_free_port()), "-m", "molgen3D.cli", "posttrain", "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 1 and (tmp_path / "ddp" / "final" / "config.json").is_file()
    logged = next(h for h in summary["log_history"] if "reward" in h)
    # TRL gathers the completions of both ranks: 2 ranks x 1 molecule x group of 2
    assert logged["num_tokens"] > 0 and "rewards/coverage/mean" in logged

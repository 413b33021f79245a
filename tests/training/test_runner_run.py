"""The runner end to end, in this process: what a run leaves behind, and a second run in the same interpreter.

`tiny_run` (tests/training/conftest.py) is the session's shared 30-step run through `run_pretraining`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from molgen3D.tokenization.load import load_tokenizer

pytestmark = pytest.mark.slow  # trains a model end to end

ANSI = re.compile(r"\x1b\[")


def test_run_result_points_at_the_planned_layout(tiny_run):
    result = tiny_run.result
    out_root = Path(tiny_run.config["job"]["dump_folder"]).parent
    assert result.run_name == "tiny-a"
    assert result.run_dir == out_root / "ckpts" / "tiny-a"
    assert result.checkpoint_dir == result.run_dir / "checkpoint" and result.checkpoint_dir.is_dir()
    assert result.log_path == out_root / "outputs" / "pretrain_logs" / "tiny-a" / "runtime.log"
    assert result.final_step == tiny_run.config["training"]["steps"]
    assert sorted(result.losses) == list(range(1, result.final_step + 1))  # log_freq = 1
    assert result.last_loss == result.losses[result.final_step]
    assert any(result.tb_dir.rglob("events.out.tfevents.*"))
    assert (result.run_dir / "lr_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runtime_log_has_the_banner_then_plain_metric_lines(tiny_run):
    text = tiny_run.log_text
    banner_at = text.index("MolGen3D pretraining run tiny-a")
    assert f"checkpoints   {tiny_run.result.checkpoint_dir}" in text
    assert f"runtime log   {tiny_run.result.log_path}" in text
    first_metric = re.search(r"step:\s+1\s+loss:", text)
    assert first_metric and first_metric.start() > banner_at
    assert len(re.findall(r"step:\s+\d+\s+loss:", text)) >= tiny_run.result.final_step
    assert not ANSI.search(text)


def test_run_meta_records_final_model_args_and_tokenizer(tiny_run, compact_tokenizer_dir):
    meta = json.loads(tiny_run.result.run_meta.read_text())
    assert meta["run_name"] == "tiny-a" and (meta["model_name"], meta["flavor"]) == ("molgen_qwen3", "tiny")
    assert meta["tokenizer_dir"] == str(compact_tokenizer_dir)
    tokenizer = load_tokenizer(compact_tokenizer_dir)
    vocab = meta["model_args"]["vocab_size"]
    assert vocab >= len(tokenizer) and vocab % 64 == 0 and vocab - len(tokenizer) < 64
    assert meta["model_args"]["max_seq_len"] == tiny_run.config["training"]["seq_len"]
    assert meta["job_config"]["job"]["dump_folder"] == str(tiny_run.result.run_dir)
    assert meta["job_config"]["lr_scheduler"]["wsds"]["checkpoints"] == tiny_run.config["wsds_scheduler"]["checkpoints"]


def test_a_second_run_in_the_same_process_continues_a_run_named_by_wandb_run_name(
    make_tiny_toml, train_tiny, tmp_path, monkeypatch
):
    first_toml = make_tiny_toml(
        "first",
        molgen_run={"run_name": ""},
        training={"steps": 1},
        wsds_scheduler={"warmup_steps": 0, "checkpoints": [1], "decay_frac": 1.0},
        checkpoint={"enable": True, "interval": 1, "last_save_model_only": False},
    )
    first = train_tiny(first_toml)
    assert re.match(r"^\d{6}-\d{4}-[0-9a-f]{4}-first$", first.run_name)
    assert "WANDB_RUN_NAME" not in os.environ and "RUN_NAME" not in os.environ and "RANK" not in os.environ

    monkeypatch.setenv("WANDB_RUN_NAME", first.run_name)
    second_toml = first_toml.with_name("second.toml")
    second_toml.write_text(
        first_toml.read_text().replace("steps = 1", "steps = 2").replace("checkpoints = [1]", "checkpoints = [1, 2]")
    )
    second = train_tiny(second_toml)
    assert second.run_dir == first.run_dir and second.final_step == 2
    assert sorted(second.losses) == [2]  # continued after the saved step 1
    log = second.log_path.read_text()
    assert log.count(f"MolGen3D pretraining run {first.run_name}") == 2 and "Training starts at step 2" in log


def test_wandb_offline_files_land_in_the_run_wandb_folder(make_tiny_toml, train_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb" / "wb-run"))
    toml = make_tiny_toml(
        "wb-run",
        training={"steps": 2},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [2]},
        metrics={"log_freq": 1, "enable_wandb": True, "enable_tensorboard": True},
    )
    result = train_tiny(toml)
    assert result.wandb_dir == tmp_path / "wandb" / "wb-run"
    runs = list(result.wandb_dir.rglob("offline-run-*"))
    assert runs, f"no offline WandB run under {result.wandb_dir}"
    assert not list(result.tb_dir.rglob("offline-run-*")), "WandB wrote into the TensorBoard folder"

"""Checks at config load that depend on the launch or would otherwise fail late: batch geometry, a WSDS run extended."""

from __future__ import annotations

from pathlib import Path

import pytest

from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.loading import load_job_config

REPO = Path(__file__).resolve().parents[3]
FIXTURE_TOML = REPO / "tests" / "training" / "fixture_tiny.toml"
QWEN3_06B_TOML = REPO / "src" / "molgen3D" / "config" / "pretrain" / "qwen3_06b.toml"


def test_batch_that_does_not_divide_fails_at_load_naming_the_keys(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(MolGenConfigError) as info:
        load_job_config(QWEN3_06B_TOML, ["--training.global_batch_rounding", "exact"])
    assert info.value.key == "training.global_batch_size"
    text = str(info.value)
    assert "[training] global_batch_size" in text and "where it divides: 1, 3" in text and '"up"' in text


def test_real_config_on_two_nodes_loads_with_hsdp_and_batch_64(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    cfg = load_job_config(QWEN3_06B_TOML)
    assert cfg.training.global_batch_size == 64
    assert (cfg.parallelism.data_parallel_replicate_degree, cfg.parallelism.data_parallel_shard_degree) == (2, 8)


def test_steps_past_the_last_decay_end_are_refused(tmp_path):
    """Extending a finished run by raising training.steps must not train the extension at lr 0."""
    with pytest.raises(MolGenConfigError) as info:
        load_job_config(FIXTURE_TOML, ["--training.steps", "10"])  # decay ends [3, 6]
    assert info.value.key == "wsds_scheduler.checkpoints"
    text = str(info.value)
    assert "steps 7-10 would train at lr_min = 0.0" in text and "checkpoints = [3, 6, 10]" in text
    cfg = load_job_config(FIXTURE_TOML, ["--training.steps", "10", "--wsds_scheduler.checkpoints", "3", "6", "10"])
    assert cfg.lr_scheduler.wsds.checkpoints == (3, 6, 10)

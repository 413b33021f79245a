"""Finalize works the config out once: one frozen `molgen_resolved` that every consumer reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from molgen3D.training.pretraining import run_layout
from molgen3D.training.pretraining.config import finalize, resolve_paths
from molgen3D.training.pretraining.config.finalize import MolGenResolved, resolved
from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.wsds import WSDSArgumentError, WSDSSchedule


def test_finalize_attaches_one_frozen_result(make_tiny_toml):
    cfg = load_job_config(make_tiny_toml("resolved", wsds_scheduler={"warmup_steps": 2, "checkpoints": [3, 6]}))
    result = cfg.molgen_resolved
    assert isinstance(result, MolGenResolved) and resolved(cfg) is result
    assert result.tokenizer_dir == result.paths.tokenizer_dir and result.tokenizer_dir.is_absolute()
    assert cfg.lr_scheduler.wsds is result.wsds, "the LR builder reads the very schedule finalize built"
    assert result.wsds.checkpoints == (3, 6) and result.decay_end_steps == (3, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.wsds = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.wsds.lr_max = 1.0


def test_consumers_never_resolve_paths_again(make_tiny_toml, monkeypatch):
    from molgen3D.training.pretraining.torchtitan_model import qwen3_custom
    from molgen3D.training.pretraining.torchtitan_model.dataloader_builder import build_molgen_dataloader

    cfg = load_job_config(make_tiny_toml("once"))

    def refuse(job_config):
        raise AssertionError("paths resolved a second time")

    monkeypatch.setattr(resolve_paths, "resolve_molgen_paths", refuse)
    monkeypatch.setattr(finalize, "resolve_molgen_paths", refuse)
    layout = run_layout.plan_run_layout(cfg, "once", {})
    assert layout.run_dir == cfg.molgen_resolved.paths.runs_root / "once"
    tokenizer = qwen3_custom.build_molgen_tokenizer(cfg)
    assert tokenizer.eos_id is not None
    loader = build_molgen_dataloader(1, 0, tokenizer, cfg)
    assert Path(loader.dataset.index.files[0]).parent == cfg.molgen_resolved.paths.train_data


def test_the_wsds_schedule_is_validated_once(make_tiny_toml, monkeypatch):
    import torch
    from torchtitan.components.optimizer import OptimizersContainer

    from molgen3D.training.pretraining.components.lr_scheduler import build_wsds_lr_schedulers

    built = []
    original = WSDSSchedule.__post_init__

    def counting(self):
        built.append(self)
        original(self)

    monkeypatch.setattr(WSDSSchedule, "__post_init__", counting)
    cfg = load_job_config(make_tiny_toml("wsds_once"))
    model = torch.nn.Linear(2, 2)
    optimizers = OptimizersContainer([model], torch.optim.AdamW, {"lr": cfg.optimizer.lr})
    schedulers = build_wsds_lr_schedulers(optimizers, cfg.lr_scheduler, cfg.training.steps)
    assert schedulers.schedulers[0].get_last_lr()[0] == 0.0
    assert len(built) == 1


def test_a_schedule_that_exists_is_valid():
    with pytest.raises(WSDSArgumentError) as info:
        WSDSSchedule(warmup_steps=10, checkpoints=[5, 100], lr_max=1e-3, lr_min=0.0, decay_frac=0.1)
    assert info.value.argument == "checkpoints"
    schedule = WSDSSchedule(warmup_steps=10, checkpoints=(100,), lr_max=1e-3, lr_min=0.0, decay_frac=0.1)
    assert schedule.lr(10) == 1e-3 and schedule.lr(100) == 0.0 and schedule.decay_length(100) == 10

"""The train loader reaches the metrics processor by an explicit hand-over (`attach_loader`, which
`MolGenTrainer` calls with `trainer.dataloader`), never through a module global.

tests/training/test_train_run.py checks the result through a real Trainer (units/s, padding, skipped).
"""

from __future__ import annotations

import inspect
import time
from types import SimpleNamespace

import pytest

from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.components.metrics_processor import MolGenMetricsProcessor
from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.trainer import MolGenTrainer

patches.apply_cpu_layer()


def test_the_processor_reads_the_counters_of_the_loader_handed_to_it(make_tiny_toml, monkeypatch):
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import (
        build_molgen_tokenizer,
        build_molgen_train_loader,
    )

    cfg = load_job_config(make_tiny_toml("wiring"))
    loader = build_molgen_train_loader(
        dp_world_size=1, dp_rank=0, tokenizer=build_molgen_tokenizer(cfg), job_config=cfg
    )
    dims = SimpleNamespace(dp_enabled=False, non_data_parallel_size=1, world_size=1)
    processor = MolGenMetricsProcessor(cfg, dims)
    assert loader.dataset.tokenizer is not None
    assert processor.loader_metrics is None, "a processor built after a loader must not find it by itself"
    processor.attach_loader(loader)
    assert processor.loader_metrics() == loader.metrics()

    now = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    processor.data_loading_times.append(3.0)
    batches = iter(loader)  # the Trainer starts iterating right after the checkpoint load
    assert processor.time_last_log == 100.0 and not processor.data_loading_times, "iteration starts a new window"
    next(batches)
    assert loader.metrics()["units_packed"] > 0


def test_the_trainer_hands_its_own_loader_over():
    source = inspect.getsource(MolGenTrainer.__init__)
    assert "attach_loader" in source and "self.dataloader" in source


def test_the_loader_tokenizes_with_the_tokenizer_the_trainer_hands_it(make_tiny_toml):
    """One tokenizer per run: the Trainer's (TrainSpec.build_tokenizer_fn), not a second one loaded from disk."""
    from molgen3D.training.pretraining.torchtitan_model.dataloader_builder import build_molgen_dataloader
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import build_molgen_tokenizer

    cfg = load_job_config(make_tiny_toml("one-tokenizer"))
    tokenizer = build_molgen_tokenizer(cfg)
    loader = build_molgen_dataloader(1, 0, tokenizer, cfg)
    assert loader.dataset.tokenizer is tokenizer and loader.dataset.eot_id == tokenizer.eos_id
    with pytest.raises(ValueError, match="needs the Trainer's tokenizer"):
        build_molgen_dataloader(1, 0, None, cfg)

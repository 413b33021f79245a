"""The train loader reaches the metrics processor through the train spec, not the checkpoint manager."""

from __future__ import annotations

import time
from types import SimpleNamespace

from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.components.metrics import MolGenMetricsProcessor
from molgen3D.training.pretraining.config.loading import load_job_config

patches.apply_cpu_layer()


def test_the_processor_built_after_the_train_loader_reads_its_counters(make_tiny_toml, monkeypatch):
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import build_molgen_train_loader

    cfg = load_job_config(make_tiny_toml("wiring"))
    loader = build_molgen_train_loader(dp_world_size=1, dp_rank=0, tokenizer=None, job_config=cfg)
    dims = SimpleNamespace(dp_enabled=False, non_data_parallel_size=1, world_size=1)
    processor = MolGenMetricsProcessor(cfg, dims)
    assert processor.loader_metrics is not None and processor.loader_metrics() == loader.metrics()

    now = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    processor.data_loading_times.append(3.0)
    batches = iter(loader)  # the Trainer starts iterating right after the checkpoint load
    assert processor.time_last_log == 100.0 and not processor.data_loading_times, "iteration starts a new window"
    next(batches)
    assert loader.metrics()["units_packed"] > 0

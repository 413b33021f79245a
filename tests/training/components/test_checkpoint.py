"""Which checkpoint folders count as complete, which steps are decay ends, and the loader metric windows.

No Trainer: real DCP saves and the metrics processor on a stand-in loader.
"""

from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed.checkpoint as dcp

from molgen3D.hf.checkpoint_step import DCP_METADATA, HF_INDEX, choose_step, resume_problem, structure_problem
from molgen3D.training.pretraining.components.checkpoint import disarm
from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.components.metrics_processor import (
    MolGenMetricsProcessor,
    counter_deltas,
    padding_fraction,
)
from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.config.finalize import decay_end_steps

patches.apply_cpu_layer()  # as the runner does before every Trainer


@pytest.fixture
def saved_step(tmp_path):
    """A real single-process DCP save."""
    step = tmp_path / "checkpoint" / "step-3"
    dcp.save({"w": torch.arange(1000, dtype=torch.float32), "b": torch.ones(7)}, checkpoint_id=str(step))
    return step


def _data_files(step):
    return sorted(p for p in step.iterdir() if p.suffix == ".distcp")


def test_a_finished_dcp_save_is_complete(saved_step):
    assert (saved_step / DCP_METADATA).is_file()
    assert structure_problem(saved_step) is None


@pytest.mark.parametrize(
    "tear, message",
    [
        (lambda step: (step / DCP_METADATA).unlink(), "no .metadata"),
        (lambda step: _data_files(step)[0].unlink(), "is missing"),
        (lambda step: _data_files(step)[0].write_bytes(_data_files(step)[0].read_bytes()[:100]), "bytes"),
        (lambda step: (step / DCP_METADATA).write_bytes(b"\x80\x04garbage"), "unreadable"),
    ],
    ids=["save-not-finished", "purge-interrupted", "truncated-data", "truncated-metadata"],
)
def test_torn_dcp_folders_are_detected(saved_step, tear, message):
    tear(saved_step)
    problem = structure_problem(saved_step)
    assert problem is not None and message in problem


def test_hf_folder_needs_every_indexed_shard(tmp_path):
    from safetensors.torch import save_file

    hf = tmp_path / "step-9"
    hf.mkdir()
    save_file({"a": torch.zeros(3)}, str(hf / "model-00001-of-00002.safetensors"))
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (hf / HF_INDEX).write_text(json.dumps(index))
    assert "model-00002-of-00002.safetensors" in structure_problem(hf)
    save_file({"b": torch.zeros(3)}, str(hf / "model-00002-of-00002.safetensors"))
    assert structure_problem(hf) is None


def test_the_chosen_step_skips_newer_torn_folders(saved_step):
    folder = saved_step.parent
    shutil.copytree(saved_step, folder / "step-5", ignore=shutil.ignore_patterns(DCP_METADATA))
    shutil.copytree(saved_step, folder / "step-12")
    disarm(folder / "step-12")  # a purge that was cut short after disarming
    shutil.copytree(saved_step, folder / "step-40.tmp")  # not a step folder name
    choice = choose_step(folder, resumable=False, checksums=False)
    assert choice.step == 3
    assert [check.path.name for _, check in choice.passed_over] == ["step-12", "step-5"]
    missing = choose_step(folder / "missing")
    assert (missing.step, missing.passed_over) == (-1, [])


def _config(enable=True, save=True, checkpoints=(10, 20, 30), steps=25):
    wsds = SimpleNamespace(enable=enable, save_at_decay_ends=save, checkpoints=list(checkpoints))
    return SimpleNamespace(wsds_scheduler=wsds, training=SimpleNamespace(steps=steps))


def test_decay_end_steps_within_the_run():
    assert decay_end_steps(_config()) == [10, 20]
    assert decay_end_steps(_config(enable=False)) == []
    assert decay_end_steps(_config(save=False)) == []
    assert decay_end_steps(SimpleNamespace(training=SimpleNamespace(steps=5))) == [], "a plain TorchTitan config"


def test_loader_counter_window():
    before = {"units_packed": 10, "tokens": 2000, "padding_tokens": 500, "skipped_total": 1}
    after = {"units_packed": 14, "tokens": 2800, "padding_tokens": 700, "skipped_total": 3}
    delta = counter_deltas(before, after)
    assert delta == {"units_packed": 4.0, "tokens": 800.0, "padding_tokens": 200.0}
    assert padding_fraction(delta["tokens"], delta["padding_tokens"]) == pytest.approx(0.2)
    assert padding_fraction(0, 0) == 0.0


@pytest.mark.parametrize(
    "between",
    [
        lambda p: p.log_validation(loss=1.0, step=5),
        lambda p: p.log_sampling(5, {"validation_metrics/conformer_validity": 0.5}),
    ],
    ids=["validation-loss", "conformer-sampling"],
)
def test_a_validation_between_two_logs_starts_a_new_window(make_tiny_toml, monkeypatch, between):
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    dims = SimpleNamespace(dp_enabled=False, non_data_parallel_size=1, world_size=1)
    processor = MolGenMetricsProcessor(load_job_config(make_tiny_toml("metrics")), dims)
    logged = []
    processor.logger = SimpleNamespace(log=lambda metrics, step: logged.append((step, metrics)), close=lambda: None)
    processor.num_flops_per_token = 1
    counters = {"units_packed": 0, "tokens": 0, "padding_tokens": 0}
    processor.attach_loader(SimpleNamespace(metrics=lambda: dict(counters)))

    counters["units_packed"] = 50  # training steps before the validation ...
    processor.data_loading_times.append(5.0)
    now[0] = 20.0
    between(processor)
    counters["units_packed"] = 70  # ... and after it, up to the next log at t = 30
    processor.data_loading_times.append(1.0)
    now[0] = 30.0
    processor.log(6, 1.0, 1.0, 1.0)

    step, metrics = logged[-1]
    assert step == 6
    assert metrics["throughput(units/s)"] == pytest.approx(20 / 10)
    assert metrics["time_metrics/data_loading(%)"] == pytest.approx(100 * 1 / 10)


def test_resume_skips_model_only_and_hf_steps(tmp_path):
    """A finished run's last save (model-only DCP or HF weights) is complete but not resumable."""
    from safetensors.torch import save_file

    folder = tmp_path / "checkpoint"
    weights = {"tok_embeddings.weight": torch.ones(4, 2)}
    dcp.save(
        {**weights, "optimizer": {"exp_avg": torch.zeros(4, 2)}, "train_state": {"step": torch.tensor(4)}},
        checkpoint_id=str(folder / "step-4"),
    )
    dcp.save(dict(weights), checkpoint_id=str(folder / "step-6"))
    hf = folder / "step-8"
    hf.mkdir()
    save_file({"model.embed_tokens.weight": torch.ones(4, 2)}, str(hf / "model.safetensors"))
    (hf / HF_INDEX).write_text(
        json.dumps({"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model.safetensors"}})
    )

    assert choose_step(folder, resumable=False, checksums=False).step == 8
    choice = choose_step(folder, resumable=True, checksums=False)
    assert choice.step == 4 and resume_problem(folder / "step-4") is None
    skipped = [(check.path, check.problems[0]) for _, check in choice.passed_over]
    assert [p.name for p, _ in skipped] == ["step-8", "step-6"]
    assert "Hugging Face model weights only" in skipped[0][1]
    assert "model weights only (last_save_model_only): no optimizer or train_state" in skipped[1][1]

"""Kill and resume: a run restarted from step 21 reproduces the uninterrupted run's losses exactly.

The "killed" run is the shared 30-step `tiny_run` reduced to what a crash after step 21 could
leave behind: its complete step-21 checkpoint, a step-28 whose save never finished (no
`.metadata`) and a step-29 that a purge interrupted (`.metadata` left, data files gone).
TorchTitan's own `_find_load_step` would pick step-29 and fail to load it.
"""

from __future__ import annotations

import copy
import shutil

import pytest

from molgen3D.hf.checkpoint_step import DCP_METADATA

pytestmark = pytest.mark.slow  # trains a model end to end


def test_resume_after_kill_gives_identical_losses(tiny_run, tmp_path, train_tiny, write_config):
    run_a = tiny_run.checkpoint_dir
    killed_run = tmp_path / "ckpts" / "tiny-a"
    checkpoint = killed_run / "checkpoint"
    shutil.copytree(run_a / "step-21", checkpoint / "step-21")
    shutil.copytree(run_a / "step-28", checkpoint / "step-28", ignore=shutil.ignore_patterns(DCP_METADATA))
    (checkpoint / "step-29").mkdir()
    shutil.copy2(run_a / "step-28" / DCP_METADATA, checkpoint / "step-29" / DCP_METADATA)

    config = copy.deepcopy(tiny_run.config)
    config["molgen_run"].pop("run_name")
    config["molgen_run"].update(
        init_mode="resume", resume_run_path_tag=str(killed_run), logs_root=str(tmp_path / "outputs")
    )
    config["job"]["dump_folder"] = str(tmp_path / "ckpts")
    config["metrics"]["enable_tensorboard"] = False
    resumed = train_tiny(write_config(config, tmp_path / "resume.toml"))

    log = resumed.log_path.read_text(encoding="utf-8")
    assert "Training starts at step 22" in log
    assert f"Ignoring incomplete checkpoint {checkpoint / 'step-29'}" in log
    assert f"Ignoring incomplete checkpoint {checkpoint / 'step-28'}" in log
    assert sorted(resumed.losses) == list(range(22, 31))
    uninterrupted = {step: tiny_run.result.losses[step] for step in range(22, 31)}
    assert resumed.losses == uninterrupted, "per-step losses must be bit-identical after resume"

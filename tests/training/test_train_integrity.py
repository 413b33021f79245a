"""Through the Trainer: a corrupted newest step is skipped by its checksum, a resume whose every step fails
stops naming each one, and a finished run extended with a new decay end trains at a real learning rate,
moving an existing step folder aside."""

from __future__ import annotations

import copy
import re
import shutil

import pytest

from molgen3D.hf.checkpoint_step import MANIFEST

pytestmark = pytest.mark.slow  # trains a model end to end


def _resume_config(tiny_run, killed_run, tmp_path, **training):
    config = copy.deepcopy(tiny_run.config)
    config["molgen_run"].pop("run_name")
    config["molgen_run"].update(
        init_mode="resume", resume_run_path_tag=str(killed_run), logs_root=str(tmp_path / "outputs")
    )
    config["job"]["dump_folder"] = str(tmp_path / "ckpts")
    config["metrics"]["enable_tensorboard"] = False
    config["validation"]["enable"] = False
    config["training"].update(training)
    return config


def test_a_same_size_overwrite_falls_back_to_the_previous_step(tiny_run, tmp_path, train_tiny, write_config):
    run_a = tiny_run.checkpoint_dir
    killed_run = tmp_path / "ckpts" / "tiny-a"
    checkpoint = killed_run / "checkpoint"
    for step in (21, 28):
        assert (run_a / f"step-{step}" / MANIFEST).is_file(), "every save writes its checksum manifest"
        shutil.copytree(run_a / f"step-{step}", checkpoint / f"step-{step}")
    shard = sorted((checkpoint / "step-28").glob("*.distcp"))[0]
    data = bytearray(shard.read_bytes())
    data[-4096:] = b"\x7f" * 4096  # same size: DCP's own checks pass, the loss would turn NaN
    shard.write_bytes(bytes(data))

    resumed = train_tiny(write_config(_resume_config(tiny_run, killed_run, tmp_path), tmp_path / "resume.toml"))
    log = resumed.log_path.read_text(encoding="utf-8")
    assert "Training starts at step 22" in log
    assert f"Ignoring checkpoint {checkpoint / 'step-28'}, it fails its checksums: {shard}" in log
    uninterrupted = {step: tiny_run.result.losses[step] for step in range(22, 31)}
    assert resumed.losses == uninterrupted


def _corrupt_copies(tiny_run, checkpoint, steps=(21, 28)) -> dict[int, object]:
    """Copies of saved steps, each with bytes flipped in one shard (same size, DCP would load it)."""
    shards = {}
    for step in steps:
        shutil.copytree(tiny_run.checkpoint_dir / f"step-{step}", checkpoint / f"step-{step}")
        shard = sorted((checkpoint / f"step-{step}").glob("*.distcp"))[0]
        data = bytearray(shard.read_bytes())
        data[-4096:-4088] = bytes(b ^ 0x5A for b in data[-4096:-4088])
        shard.write_bytes(bytes(data))
        shards[step] = shard
    return shards


def test_a_resume_whose_every_step_fails_stops_naming_each(tiny_run, tmp_path, train_tiny, write_config):
    """Explicit `init_mode = "resume"`: the pre-flight refuses before the Trainer starts (it used to train from
    random weights at step 1, exit 0)."""
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError

    killed_run = tmp_path / "ckpts" / "tiny-a"
    shards = _corrupt_copies(tiny_run, killed_run / "checkpoint")
    with pytest.raises(MolGenConfigError) as info:
        train_tiny(write_config(_resume_config(tiny_run, killed_run, tmp_path), tmp_path / "resume.toml"))
    message = str(info.value)
    for step, shard in shards.items():
        assert f"step-{step}: {shard} content changed" in message
    assert "to start afresh on purpose" in message


def test_a_run_name_whose_every_step_fails_stops_naming_each(tiny_run, tmp_path, train_tiny, write_config):
    """`scratch` under the name of a run whose checkpoints all fail: the checkpoint manager refuses at load."""
    from molgen3D.training.pretraining.components.checkpoint import ResumeError

    shards = _corrupt_copies(tiny_run, tmp_path / "ckpts" / "tiny-a" / "checkpoint")
    config = copy.deepcopy(tiny_run.config)
    config["job"]["dump_folder"] = str(tmp_path / "ckpts")
    config["molgen_run"]["logs_root"] = str(tmp_path / "outputs")
    config["metrics"]["enable_tensorboard"] = False
    config["validation"]["enable"] = False
    with pytest.raises(ResumeError) as info:
        train_tiny(write_config(config, tmp_path / "again.toml"))
    message = str(info.value)
    for step, shard in shards.items():
        assert f"step-{step}: {shard} content changed" in message
    assert "move" in message and "new name" in message


def test_extending_a_finished_run_with_a_new_decay_end(tiny_run, tmp_path, train_tiny, write_config):
    """The finished run's last save (step 30) is model-only: the extension resumes from step 28, and its
    own step-30 save moves the old folder aside instead of writing into it."""
    finished = tmp_path / "ckpts" / "tiny-a"
    for step in (28, 30):
        shutil.copytree(tiny_run.checkpoint_dir / f"step-{step}", finished / "checkpoint" / f"step-{step}")
    (finished / "checkpoint" / "step-35").mkdir()  # left by an earlier attempt: must not be written into
    (finished / "checkpoint" / "step-35" / "junk.bin").write_bytes(b"x")
    config = _resume_config(tiny_run, finished, tmp_path, steps=36)
    config["wsds_scheduler"]["checkpoints"] = [10, 20, 30, 36]
    resumed = train_tiny(write_config(config, tmp_path / "extend.toml"))

    log = resumed.log_path.read_text(encoding="utf-8")
    assert "Training starts at step 29" in log and sorted(resumed.losses) == list(range(29, 37))
    lrs = {int(m[1]): float(m[2]) for m in re.finditer(r"step:\s+(\d+).*?lr: ([0-9.e+-]+)", log)}
    # Train step 31 runs optimizer step 30, the old decay end itself (lr_min by the WSDS rule); from there
    # the extension is a new mini run decaying to 36, never a silent lr 0.
    assert all(lrs[s] > 0 for s in range(32, 37)), f"the extension trains at a real learning rate: {lrs}"
    checkpoint = finished / "checkpoint"
    for step, kept in ((30, None), (35, "junk.bin")):
        aside = [p for p in checkpoint.iterdir() if p.name.startswith(f"step-{step}.replaced-")]
        assert len(aside) == 1, f"the old step-{step} is kept aside"
        assert kept is None or (aside[0] / kept).is_file()
        new_step = checkpoint / f"step-{step}"
        assert (new_step / ".metadata").is_file() and (new_step / MANIFEST).is_file()

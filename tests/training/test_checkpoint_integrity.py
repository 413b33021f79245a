"""Checksum manifests, the newest intact step (`hf.checkpoint_step`), finite-weight and finite-loss guards."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

from molgen3D.hf import checkpoint_step as cs
from molgen3D.training.pretraining import checkpoint_integrity as ci


def _save_step(folder, seed: int):
    torch.manual_seed(seed)
    state = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    dcp.save(state, checkpoint_id=str(folder))
    return state


def test_manifest_round_trip_on_a_dcp_save(tmp_path):
    step = tmp_path / "step-10"
    _save_step(step, 0)
    manifest = cs.write_manifest(step)
    listed = json.loads(manifest.read_text())["files"]
    assert ".metadata" in listed and any(name.endswith(".distcp") for name in listed)
    assert cs.verify_manifest(step) == []


def test_same_size_overwrite_is_named(tmp_path):
    step = tmp_path / "step-10"
    _save_step(step, 0)
    cs.write_manifest(step)
    shard = next(step.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[-4096:] = b"\x7f" * 4096  # same size, junk content: DCP itself would load it
    shard.write_bytes(bytes(data))
    problems = cs.verify_manifest(step)
    assert len(problems) == 1 and str(shard) in problems[0] and "content changed" in problems[0]


def test_missing_resized_and_extra_files(tmp_path):
    step = tmp_path / "step-10"
    _save_step(step, 0)
    cs.write_manifest(step)
    shard = next(step.glob("*.distcp"))
    shard.write_bytes(b"\0" * 10)
    (step / "stray.bin").write_bytes(b"x")
    problems = cs.verify_manifest(step)
    assert any("has 10 bytes" in p for p in problems) and any("stray.bin is not in the manifest" in p for p in problems)
    (step / ".metadata").unlink()
    assert any(".metadata is missing" in p for p in cs.verify_manifest(step))
    bare = tmp_path / "step-20"
    bare.mkdir()
    assert cs.verify_manifest(bare) is None  # no manifest: unverified, which the callers decide about


def test_newest_intact_falls_back_with_a_warning_naming_the_file(tmp_path):
    states = {}
    for n in (10, 20, 30):
        states[n] = _save_step(tmp_path / f"step-{n}", n)
        cs.write_manifest(tmp_path / f"step-{n}")
    shard = next((tmp_path / "step-30").glob("*.distcp"))
    shard.write_bytes(bytes(shard.stat().st_size))  # zeros, same size
    warnings: list[str] = []
    choice = cs.choose_step(tmp_path, resumable=False, warn=warnings.append)
    assert choice.step == 20 and [step for step, _ in choice.passed_over] == [30]
    assert len(warnings) == 1 and "step-30, it fails its checksums" in warnings[0] and shard.name in warnings[0]
    loaded = {"w": torch.empty(64, 64), "b": torch.empty(64)}
    dcp.load(loaded, checkpoint_id=str(tmp_path / "step-20"))
    assert torch.equal(loaded["w"], states[20]["w"])


def test_no_intact_step(tmp_path):
    (tmp_path / "step-5").mkdir()
    choice = cs.choose_step(tmp_path)
    assert choice.step == -1 and choice.chosen is None and not choice.any_finished  # a crash before the first save


def test_structure_problems_are_warned_as_incomplete(tmp_path):
    for n in (10, 20):
        _save_step(tmp_path / f"step-{n}", n)
        cs.write_manifest(tmp_path / f"step-{n}")
    (tmp_path / "step-20" / ".metadata").unlink()
    warnings: list[str] = []
    choice = cs.choose_step(tmp_path, resumable=False, warn=warnings.append)
    assert choice.step == 10
    assert warnings == [
        f"Ignoring incomplete checkpoint {tmp_path / 'step-20'}: no .metadata (the save did not finish)"
    ]


def test_nonfinite_hf_folder_is_refused(tmp_path):
    good = {"model.embed_tokens.weight": torch.ones(4, 2), "model.norm.weight": torch.ones(2)}
    save_file(good, str(tmp_path / "model.safetensors"))
    ci.check_finite_hf_folder(tmp_path)
    bad = dict(good, **{"model.norm.weight": torch.tensor([1.0, math.nan])})
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ci.NonFiniteWeightsError, match=r"1 of 2 tensors contain NaN/Inf \(model.norm.weight\)"):
        ci.check_finite_hf_folder(tmp_path)
    assert ci.nonfinite_tensors({"i": torch.tensor([1, 2]), "inf": torch.tensor([math.inf])}) == ["inf"]


def test_nonfinite_loss_guard_stops_after_n_consecutive_steps():
    guard = ci.NonFiniteLossGuard(3)
    guard.update(1, math.nan)
    guard.update(2, 2.0)  # a finite loss resets the count
    guard.update(3, math.nan)
    guard.update(4, math.inf)
    expected = r"3 consecutive step\(s\) since step 3.*max_nonfinite_loss_steps = 3"
    with pytest.raises(ci.NonFiniteLossError, match=expected):
        guard.update(5, math.nan)
    off = ci.NonFiniteLossGuard(0)
    for step in range(10):
        off.update(step, math.nan)
    with pytest.raises(ValueError, match="must be >= 0"):
        ci.NonFiniteLossGuard(-1)


def test_an_older_verified_step_beats_a_newer_unverified_one(tmp_path):
    """A step without checksums.json may hold flipped bytes nobody can see: it is not taken over a verified one."""
    for n in (10, 20):
        _save_step(tmp_path / f"step-{n}", n)
        cs.write_manifest(tmp_path / f"step-{n}")
    (tmp_path / "step-20" / cs.MANIFEST).unlink()
    warnings: list[str] = []
    choice = cs.choose_step(tmp_path, resumable=False, warn=warnings.append)
    assert choice.step == 10 and choice.chosen.verified
    expected = f"Passing over {tmp_path / 'step-20'}: no checksums.json (unverified); {tmp_path / 'step-10'} verifies"
    assert warnings == [expected]


def test_an_unverified_step_is_loaded_only_with_a_warning_naming_it(tmp_path):
    _save_step(tmp_path / "step-10", 10)
    warnings: list[str] = []
    choice = cs.choose_step(tmp_path, resumable=False, warn=warnings.append)
    assert choice.step == 10 and not choice.chosen.verified
    assert len(warnings) == 1 and f"Loading {tmp_path / 'step-10'} UNVERIFIED" in warnings[0]
    assert cs.choose_step(tmp_path, resumable=False, checksums=False).step == 10  # checksums off: no question asked


def test_require_intact_names_the_bad_file(tmp_path):
    step = tmp_path / "step-10"
    _save_step(step, 0)
    cs.write_manifest(step)
    shard = next(step.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[100:108] = bytes(b ^ 0xFF for b in data[100:108])
    shard.write_bytes(bytes(data))
    with pytest.raises(cs.StepNotIntactError, match=re.escape(f"{shard} content changed")):
        cs.require_intact(step)


def test_every_failed_step_is_named_when_nothing_can_be_resumed(tmp_path):
    from molgen3D.training.pretraining.components.checkpoint import resume_refusal

    for n in (10, 20):
        _save_step(tmp_path / f"step-{n}", n)
        cs.write_manifest(tmp_path / f"step-{n}")
        shard = next((tmp_path / f"step-{n}").glob("*.distcp"))
        shard.write_bytes(bytes(shard.stat().st_size))
    choice = cs.choose_step(tmp_path, resumable=False)
    assert choice.step == -1 and choice.any_finished
    message = resume_refusal(tmp_path, choice)
    for n in (10, 20):
        shard = next((tmp_path / f"step-{n}").glob("*.distcp"))
        assert f"step-{n}: {shard} content changed" in message
    assert "To start afresh on purpose, move" in message and "new name" in message


def test_a_refused_save_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    """A full or read-only disk: DCP wraps the OSError of each rank; the run stops with our message instead."""
    import errno
    import traceback

    from torch.distributed.checkpoint.api import CheckpointException
    from torchtitan.components.checkpoint import CheckpointManager

    from molgen3D.training.pretraining.components.checkpoint import CheckpointWriteError, MolGenCheckpointManager

    def full_disk(self, curr_step, last_step=False):
        err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "step-5" / "__0_0.distcp"))
        raise CheckpointException("save failed", {0: (err, traceback.StackSummary())})

    monkeypatch.setattr(CheckpointManager, "save", full_disk)
    monkeypatch.setattr(MolGenCheckpointManager, "_should_save", lambda self, step, last_step=False: True)
    monkeypatch.setattr(MolGenCheckpointManager, "_clear_stale_step", lambda self, step: None)
    manager = object.__new__(MolGenCheckpointManager)
    manager.folder = str(tmp_path)
    expected = rf"cannot write checkpoints into {re.escape(str(tmp_path))}: No space left on device.*free space"
    with pytest.raises(CheckpointWriteError, match=expected):
        MolGenCheckpointManager.save(manager, 5)


def test_the_preflight_refuses_a_checkpoint_folder_that_takes_no_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    from molgen3D.training.pretraining.components.checkpoint import CheckpointWriteError
    from molgen3D.training.pretraining.torchtitan_runner import check_checkpoint_folder

    check_checkpoint_folder(tmp_path / "run" / "checkpoint")  # a writable folder passes (and is created)
    assert (tmp_path / "run" / "checkpoint").is_dir() and not any((tmp_path / "run" / "checkpoint").iterdir())

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "ro"))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    expected = rf"into {re.escape(str(tmp_path / 'ro'))}: Read-only file system.*chmod"
    with pytest.raises(CheckpointWriteError, match=expected):
        check_checkpoint_folder(tmp_path / "ro")


def test_one_resume_hashes_each_file_once(tmp_path, monkeypatch):
    """The runner's pre-flight (rank 0) and the checkpoint manager both check the chosen step: the second
    reuses the first verdict while no file changed, and a file changed in between is read again and caught."""
    import os
    import time
    from pathlib import Path
    from types import SimpleNamespace

    from molgen3D.training.pretraining import torchtitan_runner as runner
    from molgen3D.training.pretraining.components.checkpoint import MolGenCheckpointManager, ResumeError
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError

    folder = tmp_path / "checkpoint"
    step = folder / "step-4"
    state = {"w": torch.randn(16, 16), "optimizer": {"m": torch.zeros(16)}, "train_state": {"step": torch.tensor(4)}}
    dcp.save(state, checkpoint_id=str(step))
    cs.write_manifest(step)
    time.sleep(0.2)  # a verdict on files changed within the clock's tick is not kept (git's "racy clean")
    hashed: list[str] = []
    real = cs.sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(cs, "sha256_file", counting)
    runner._check_resume_checkpoint(folder, checksums=True)
    manager = SimpleNamespace(folder=str(folder), checksums=True)
    assert MolGenCheckpointManager._find_load_step(manager) == 4
    files = sorted(p.name for p in step.iterdir() if p.name != cs.MANIFEST)
    assert sorted(hashed) == files, "pre-flight + the manager's choice must hash each file exactly once"

    shard = next(step.glob("*.distcp"))
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    hashed.clear()
    with pytest.raises(ResumeError, match=re.escape(f"{shard} content changed")):
        MolGenCheckpointManager._find_load_step(manager)
    assert shard.name in hashed, "a file changed after the first verdict must be read again"
    with pytest.raises(MolGenConfigError, match=re.escape(f"{shard} content changed")):
        runner._check_resume_checkpoint(folder, checksums=True)


def test_a_verdict_on_files_just_written_is_not_kept(tmp_path, monkeypatch):
    """Within the file system's clock tick a rewrite can keep every timestamp, so such a verdict is re-read."""
    from pathlib import Path

    step = tmp_path / "step-2"
    _save_step(step, 2)
    cs.write_manifest(step)
    monkeypatch.setattr(cs, "_RACY_NS", 3600 * 10**9)  # "just written": within the window, however slow the test
    hashed: list[str] = []
    real = cs.sha256_file
    monkeypatch.setattr(cs, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    assert cs.check_step(step).verified and cs.check_step(step).verified
    files = sorted(p.name for p in step.iterdir() if p.name != cs.MANIFEST)
    assert sorted(hashed) == sorted(files * 2)

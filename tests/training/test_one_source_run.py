"""A real run: the Trainer's config and what it built agree with `molgen_resolved` (paths, seq_len, batch
geometry, WSDS, checkpoint load fields), for a new run and for its resume."""

from __future__ import annotations

import dataclasses
import os

import pytest

pytestmark = pytest.mark.slow  # two short in-process runs


def disagreements(trainer) -> list[str]:
    """Every TorchTitan field and built object that must equal the resolved value, where it does not."""
    c = trainer.job_config
    r = c.molgen_resolved
    load = r.initial_load
    pairs = {
        "job.dump_folder": (c.job.dump_folder, str(r.paths.dump_folder)),
        "training.dataset_path": (c.training.dataset_path, str(r.paths.train_data)),
        "validation.dataset_path": (c.validation.dataset_path, str(r.paths.valid_data)),
        "model.hf_assets_path": (c.model.hf_assets_path, r.paths.hf_assets_path),
        "training.seq_len": (c.training.seq_len, r.seq_len),
        "validation.seq_len": (c.validation.seq_len, r.valid_seq_len),
        "training.local_batch_size": (c.training.local_batch_size, r.batch.local_batch),
        "training.global_batch_size": (c.training.global_batch_size, r.batch.global_batch),
        "training.seed": (c.training.seed, r.seed),
        "debug.seed": (c.debug.seed, r.seed),
        "optimizer.lr": (c.optimizer.lr, r.lr),
        "lr_scheduler.warmup_steps": (c.lr_scheduler.warmup_steps, r.warmup_steps),
        "lr_scheduler.wsds": (c.lr_scheduler.wsds, r.wsds),
        "checkpoint.initial_load_path": (c.checkpoint.initial_load_path, load.path),
        "checkpoint.initial_load_model_only": (c.checkpoint.initial_load_model_only, load.model_only),
        "checkpoint.initial_load_in_hf": (c.checkpoint.initial_load_in_hf, load.in_hf),
        "checkpoint.load_step": (c.checkpoint.load_step, load.load_step),
        # what the Trainer built from them
        "checkpointer.folder": (trainer.checkpointer.folder, os.path.join(r.paths.dump_folder, c.checkpoint.folder)),
        "dataloader seq_len": (trainer.dataloader.dataset.seq_len, r.seq_len),
        "gradient accumulation": (trainer.gradient_accumulation_steps, r.batch.grad_accum_steps),
        "optimizer base lr": (trainer.optimizers.optimizers[0].param_groups[0]["initial_lr"], r.lr),
    }
    for name, value in dataclasses.asdict(r.loader).items():
        pairs[f"training.dataloader.{name}"] = (getattr(c.training.dataloader, name), value)
    return [f"{key}: TorchTitan {got!r} vs resolved {want!r}" for key, (got, want) in pairs.items() if got != want]


@pytest.fixture
def trainers(monkeypatch):
    """The Trainers the runner builds, each checked when its training starts."""
    from torchtitan.train import Trainer

    seen, original = [], Trainer.train

    def recording(self):
        seen.append((self, disagreements(self), self.lr_schedulers.schedulers[0].get_last_lr()[0]))
        return original(self)

    monkeypatch.setattr(Trainer, "train", recording)
    return seen


def test_a_run_and_its_resume_read_one_source(make_tiny_toml, train_tiny, trainers, tmp_path):
    first = train_tiny(
        make_tiny_toml(
            "one-source",
            training={"steps": 2},
            wsds_scheduler={"warmup_steps": 1, "checkpoints": [2], "decay_frac": 0.5},
            checkpoint={"enable": True, "interval": 1, "last_save_model_only": False},
        )
    )
    resume = make_tiny_toml(
        "one-source-resume",
        molgen_run={"init_mode": "resume", "resume_run_path_tag": str(first.run_dir), "run_name": ""},
        training={"steps": 3},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [2, 3], "decay_frac": 0.5},
        checkpoint={"enable": True, "interval": 1, "last_save_model_only": False, "load_step": 2},
    )
    second = train_tiny(resume)
    assert second.run_dir == first.run_dir and second.final_step == 3
    assert len(trainers) == 2
    for trainer, problems, _ in trainers:
        assert problems == [], "\n".join(problems)
    (new, _, _), (resumed, _, _) = trainers
    assert new.job_config.job.dump_folder == str(first.run_dir)
    assert resumed.job_config.molgen_resolved.run_name == first.run_name
    assert resumed.job_config.checkpoint.load_step == 2
    assert new.job_config.molgen_resolved.wsds.checkpoints == (2,)
    assert trainers[0][2] == new.job_config.molgen_resolved.wsds.lr(0) == 0.0, "the LambdaLR runs the resolved WSDS"

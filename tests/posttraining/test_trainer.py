"""GRPO runs end to end on a tiny model: a stopped run resumes exactly, the result loads in `generate`."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from molgen3D.generation.generate import GenerateConfig, generate
from molgen3D.training.posttraining.config import load_config
from molgen3D.training.posttraining.trainer import run_posttrain


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_a_stopped_run_resumed_equals_the_uninterrupted_one_and_loads_in_generate(tmp_path, write_config, start_model):
    whole = run_posttrain(load_config(write_config(tmp_path / "whole")))
    assert whole["steps"] == 2 and whole["resumed_from"] is None

    cfg = load_config(write_config(tmp_path / "parts"))
    first = run_posttrain(cfg, stop_after=1)
    assert first["steps"] == 1 and "final_model" not in first
    assert (tmp_path / "parts" / "checkpoint-1" / "optimizer.pt").is_file()
    second = run_posttrain(cfg)
    assert second["resumed_from"].endswith("checkpoint-1") and second["steps"] == 2

    a, b, start = _weights(tmp_path / "whole" / "final"), _weights(tmp_path / "parts" / "final"), _weights(start_model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert any(not torch.equal(a[k], start[k]) for k in start if k in a), "GRPO did not move the weights"
    logged = [h for h in whole["log_history"] if "reward" in h]
    resumed = [h for h in second["log_history"] if "reward" in h]
    assert logged[-1]["reward"] == resumed[-1]["reward"] and "kl" in logged[-1]
    assert {"rewards/coverage/mean", "rewards/quality/mean", "validity", "rollout_time_share"} <= logged[-1].keys()

    smiles = tmp_path / "one.smi"
    smiles.write_text(load_config(write_config(tmp_path / "whole")).molecules[0] + "\n", encoding="utf-8")
    summary = generate(
        GenerateConfig(
            model=str(tmp_path / "whole" / "final"),
            smiles=smiles,
            out=tmp_path / "s.sdf",
            num_samples=2,
            progress=False,
        )
    )
    assert summary["samples_requested"] == 2 and summary["model_folder"].endswith("final")
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["steps"] == 2


def test_num_iterations_reuses_each_batch_of_rollouts(tmp_path, write_config, monkeypatch):
    from molgen3D.training.posttraining.rollout import RolloutScorer

    drawn = []
    original = RolloutScorer.rollouts

    def counting(self, model, smiles, step, max_context=None):
        drawn.append(step)
        return original(self, model, smiles, step, max_context)

    monkeypatch.setattr(RolloutScorer, "rollouts", counting)
    text = write_config(tmp_path / "mu").read_text(encoding="utf-8")
    path = tmp_path / "mu.toml"
    path.write_text(
        text.replace("steps = 2\nsave_steps = 1", "steps = 4\nsave_steps = 2").replace(
            "kl_beta = 0.04", "kl_beta = 0.04\nnum_iterations = 2"
        ),
        encoding="utf-8",
    )
    summary = run_posttrain(load_config(path))
    assert summary["steps"] == 4 and drawn == [0, 2], drawn
    assert "clip_ratio/region_mean" in {k for h in summary["log_history"] for k in h}

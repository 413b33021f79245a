"""Through the Trainer on CPU: document masking trains, and a run whose loss goes non-finite stops
before its weights do (the NaN steps are skipped, no later checkpoint is written)."""

from __future__ import annotations

import math

import pytest
import torch

from molgen3D.training.pretraining.checkpoint_integrity import NonFiniteLossError
from molgen3D.training.pretraining.torchtitan_model.model import MolGenQwen3Model

pytestmark = pytest.mark.slow  # trains a model end to end


def test_document_masking_trains_on_cpu(make_tiny_toml, train_tiny):
    toml = make_tiny_toml(
        "masked",
        model={"flavor": "tiny", "document_masking": True},
        training={"steps": 3},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [3], "decay_frac": 0.3},
    )
    result = train_tiny(toml)
    log = result.log_path.read_text(encoding="utf-8")
    assert "Document masking: sdpa attention, block-causal per unit" in log
    assert sorted(result.losses) == [1, 2, 3] and all(math.isfinite(v) for v in result.losses.values())


def test_nonfinite_loss_stops_the_run(make_tiny_toml, train_tiny, monkeypatch, tmp_path):
    original = MolGenQwen3Model.forward
    calls = {"n": 0}

    def poisoned(self, tokens, attention_masks=None, positions=None):
        logits = original(self, tokens, attention_masks, positions)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= 3:  # from train step 3 on
                return logits * math.nan
        return logits

    monkeypatch.setattr(MolGenQwen3Model, "forward", poisoned)
    toml = make_tiny_toml(
        "nan",
        training={"steps": 8, "max_nonfinite_loss_steps": 2},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [8], "decay_frac": 0.2},
        checkpoint={"enable": True, "interval": 2, "keep_latest_k": 0},
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite for 2 consecutive step\(s\) since step 3"):
        train_tiny(toml)
    checkpoint = tmp_path / "ckpts" / "nan" / "checkpoint"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["step-2"], "nothing is saved once the loss is NaN"

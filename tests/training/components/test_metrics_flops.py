"""MFU's FLOPs per token follow the real unit lengths of a block-causal model's window."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from molgen3D.training.pretraining import flops
from molgen3D.training.pretraining.components.metrics_processor import MolGenMetricsProcessor


class MaskedStandIn:
    model_args = SimpleNamespace(n_layers=28, n_heads=16, head_dim=128)

    def __init__(self, attention_len):
        self.attention_len = attention_len

    def pop_attention_len(self):
        value, self.attention_len = self.attention_len, None
        return value


def _processor(parts):
    processor = MolGenMetricsProcessor.__new__(MolGenMetricsProcessor)  # only the FLOP bookkeeping is used
    processor.job_config = SimpleNamespace(training=SimpleNamespace(seq_len=4096))
    processor.num_flops_per_token = 6_394_871_808  # 0.6B at seq 4096, LM head included
    processor.model_parts = parts
    return processor


def test_masked_window_counts_attention_over_the_units():
    processor = _processor([MaskedStandIn(560.0)])
    per_token, attention_len = processor.window_flops_per_token()
    full = flops.attention_flops_per_token(28, 16, 128, 4096)
    assert attention_len == 560.0
    assert per_token == pytest.approx(6_394_871_808 - full + flops.attention_flops_per_token(28, 16, 128, 560))
    assert per_token / 1e9 == pytest.approx(3.961, abs=1e-3)
    assert processor.window_flops_per_token() == (6_394_871_808, None), "nothing seen since: the full-length figure"


def test_unmasked_model_keeps_the_trainers_figure():
    assert _processor([]).window_flops_per_token() == (6_394_871_808, None)

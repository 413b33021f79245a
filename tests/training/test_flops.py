"""Parameter count and FLOPs per token of the tied-head flavors, on the meta device (no memory, no GPU)."""

from __future__ import annotations

import math

import pytest
import torch
from torchtitan.models.qwen3 import Qwen3Model, Qwen3ModelArgs

from molgen3D.training.pretraining import flops
from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS


@pytest.fixture(scope="module")
def meta_06b():
    args = MOLGEN_FLAVORS["0.6B"]
    with torch.device("meta"):
        model = Qwen3Model(args)
    return args, model


def test_06b_parameter_count_counts_the_tied_head_once(meta_06b):
    args, model = meta_06b
    assert model.output.weight is model.tok_embeddings.weight
    params = flops.count_params(model)
    assert params.total == 596_049_920
    assert params.embedding == 151_936 * 1024
    assert params.non_embedding == 440_467_456


def test_06b_flops_per_token_by_hand(meta_06b):
    args, model = meta_06b
    _, per_token = flops.model_flops_per_token(args, model, 4096)
    dense = 6 * 440_467_456
    head = 6 * 1024 * 151_936
    attention = 6 * 28 * 16 * (2 * 128) * 4096
    assert per_token == dense + head + attention
    assert round(per_token / 1e9, 3) == 6.395
    # TorchTitan's own figure leaves the head out (and logs 440M parameters): ~15% lower.
    titan_params, titan_flops = Qwen3ModelArgs.get_nparams_and_flops(args, model, 4096)
    assert titan_params == 440_467_456 and titan_flops == dense + attention
    assert 0.14 < per_token / titan_flops - 1 < 0.18
    # The molgen_qwen3 args hand the Trainer (and so the MFU) the corrected figures.
    assert args.get_nparams_and_flops(model, 4096) == (596_049_920, dense + head + attention)


def test_untied_head_is_not_counted_twice():
    params = flops.ParamCounts(total=100 + 2 * 40, embedding=40)  # head (40) is among non-embedding
    tied = flops.flops_per_token(params, dim=4, vocab_size=10, n_layers=1, n_heads=1, head_dim=1, seq_len=0)
    untied = flops.flops_per_token(
        params, dim=4, vocab_size=10, n_layers=1, n_heads=1, head_dim=1, seq_len=0, tied_head=False
    )
    assert tied == 6 * 140 + 6 * 40 and untied == 6 * 140


def test_masked_attention_flops_follow_the_unit_lengths():
    """The model's unit-length sums (document_masking.unit_length_stats, cut like TorchTitan's document mask)
    give the attention length of block-diagonal attention: sum(l^2) / sum(l)."""
    from molgen3D.training.pretraining.document_masking import unit_length_stats

    eos = 0
    row = [5] * 99 + [eos] + [5] * 299 + [eos] + [eos] * 112  # units of 100 and 300, 112 pads of 1
    squares, total = unit_length_stats(torch.tensor([row]), eos).tolist()
    assert math.isclose(squares / total, (100**2 + 300**2 + 112) / 512)
    full = flops.attention_flops_per_token(2, 4, 8, 512)
    assert math.isclose(flops.attention_flops_per_token(2, 4, 8, squares / total), full * squares / total / 512)


def test_log_line_states_the_convention(meta_06b):
    args, model = meta_06b
    params, per_token = flops.model_flops_per_token(args, model, 4096)
    line = flops.describe(params, per_token, 4096)
    assert "596,049,920 parameters" in line and "6.395 GFLOP/token" in line and "full T^2" in line

"""Block-causal attention per unit: the CPU path (SDPA + explicit mask) proves a unit ignores the units before it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.attention.flex_attention import and_masks
from torchtitan.models.attention import get_causal_mask_mod, get_document_mask_mod
from torchtitan.models.qwen3 import Qwen3Model

from molgen3D.training.pretraining import document_masking as dm
from molgen3D.training.pretraining.torchtitan_model.model import MolGenQwen3Model
from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS

EOS = 0


def _args(masking: bool):
    args = copy.deepcopy(MOLGEN_FLAVORS["tiny"])
    args.vocab_size, args.eos_id, args.max_seq_len = 64, EOS, 64
    args.attn_type, args.attn_mask_type = dm.resolve_attention(masking, "auto", cuda=False)
    return args


def _model(masking: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MolGenQwen3Model(_args(masking))
    with torch.no_grad():
        model.init_weights(buffer_device=torch.device("cpu"))
    return model.eval()


def _unit(length: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 64, (length - 1,), generator=g).tolist() + [EOS]


def test_resolve_attention():
    assert dm.resolve_attention(False) == ("sdpa", "causal")
    assert dm.resolve_attention(True, "auto", cuda=True) == ("flex", "block_causal")
    assert dm.resolve_attention(True, "auto", cuda=False) == ("sdpa", "block_causal")
    assert dm.resolve_attention(True, "varlen", cuda=True) == ("varlen", "block_causal")
    with pytest.raises(ValueError, match="attention_backend = 'flex' needs CUDA"):
        dm.resolve_attention(True, "flex", cuda=False)
    with pytest.raises(ValueError, match="only serves document masking"):
        dm.resolve_attention(False, "flex", cuda=True)
    with pytest.raises(ValueError, match="not one of"):
        dm.resolve_attention(True, "xformers")


def test_mask_matches_torchtitans_document_mask():
    tokens = torch.tensor([[5, 6, EOS, 7, EOS, EOS, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
    ours = dm.block_causal_mask(tokens, EOS)[:, 0]
    mod = and_masks(get_causal_mask_mod(), get_document_mask_mod(tokens.clone(), EOS))
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(8), torch.arange(8), indexing="ij")
    theirs = mod(b, torch.zeros_like(b), q, k)
    assert torch.equal(ours, theirs)
    assert ours[0, 3, 2].item() is False and ours[0, 2, 0].item() is True  # eos closes the unit before it


def test_logits_of_a_unit_ignore_the_units_before_it():
    model = _model(masking=True)
    target = _unit(20, seed=1)
    same_len = torch.tensor([_unit(12, seed=2) + target + [EOS] * 8])
    other_content = torch.tensor([_unit(12, seed=3) + target + [EOS] * 8])
    other_length = torch.tensor([_unit(5, seed=4) + _unit(7, seed=5) + _unit(9, seed=6) + target])
    with torch.no_grad():
        a = model(same_len)[0, 12:32]
        b = model(other_content)[0, 12:32]
        c = model(other_length)[0, 21:41]
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)  # shifted RoPE positions: equal up to rounding


def test_without_masking_the_units_before_leak_in():
    model = _model(masking=False)
    assert type(model.layers["0"].attention.inner_attention).__name__ == "ScaledDotProductAttentionWrapper"
    target = _unit(20, seed=1)
    with torch.no_grad():
        a = model(torch.tensor([_unit(12, seed=2) + target]))[0, 12:]
        b = model(torch.tensor([_unit(12, seed=3) + target]))[0, 12:]
    assert not torch.allclose(a, b, atol=1e-3)


def test_masked_model_equals_plain_qwen3_on_a_single_unit():
    """One unit per row: block-causal is plain causal, so the same weights give the same logits."""
    masked = _model(masking=True)
    plain = Qwen3Model(_args(masking=False))
    plain.load_state_dict(masked.state_dict())
    tokens = torch.tensor([_unit(24, seed=7)[:-1] + [9]])
    with torch.no_grad():
        torch.testing.assert_close(masked(tokens), plain.eval()(tokens), atol=1e-5, rtol=1e-5)


def test_gradients_flow_and_labels_are_not_touched():
    model = _model(masking=True).train()
    tokens = torch.tensor([_unit(10, seed=8) + _unit(14, seed=9)])
    labels = torch.cat([tokens[:, 1:], torch.full((1, 1), -100)], dim=1)
    before = labels.clone()
    logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    assert torch.equal(labels, before) and model.tok_embeddings.weight.grad is not None
    assert dm.model_inputs(model, tokens, tokenizer=None) == {}  # sdpa path: the model builds its own mask


def test_unit_length_stats_feed_the_masked_flops():
    tokens = torch.tensor([[5, 6, EOS, 7, EOS, EOS, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
    squares, total = dm.unit_length_stats(tokens, EOS).tolist()
    assert (total, squares) == (16, 3**2 + 2**2 + 1**2 + 2**2 + 8**2)  # units cut after each eos, per row
    model = _model(masking=True).train()
    model(tokens)
    model(tokens)
    assert model.pop_attention_len() == pytest.approx(squares / total)
    assert model.pop_attention_len() is None  # reset after reading
    with torch.no_grad():
        model(tokens)  # validation forwards are not training FLOPs
    assert model.pop_attention_len() is None


def test_toml_option_selects_block_causal_sdpa_on_cpu(make_tiny_toml):
    from torchtitan.protocols.train_spec import get_train_spec

    from molgen3D.training.pretraining.config.loading import load_job_config

    spec = get_train_spec("molgen_qwen3")
    on = spec.model_args["tiny"]
    on.update_from_config(load_job_config(make_tiny_toml("mask", model={"flavor": "tiny", "document_masking": True})))
    assert (on.attn_type, on.attn_mask_type) == ("sdpa", "block_causal")
    model = spec.model_cls(on)
    assert isinstance(model.layers["0"].attention.inner_attention, dm.MaskedSdpa)
    off = spec.model_args["tiny"]
    off.update_from_config(load_job_config(make_tiny_toml("nomask", model={"flavor": "tiny"})))
    assert (off.attn_type, off.attn_mask_type) == ("sdpa", "causal")
    flex = spec.model_args["tiny"]
    toml = make_tiny_toml("flex", model={"flavor": "tiny", "document_masking": True, "attention_backend": "flex"})
    with pytest.raises(ValueError, match="attention_backend = 'flex' needs CUDA"):
        flex.update_from_config(load_job_config(toml))

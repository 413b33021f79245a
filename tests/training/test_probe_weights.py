"""The probe's transformers copy of the TorchTitan model: same logits; KV-cache sampling gives the probe's result."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from molgen3D.evaluation.training_probe import load_references, sample_and_score
from molgen3D.training.pretraining.probe_weights import full_state_dict, hf_model_for_probe
from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS


@pytest.fixture(scope="module")
def models(compact_tokenizer):
    from torchtitan.models.qwen3 import Qwen3Model

    args = copy.deepcopy(MOLGEN_FLAVORS["tiny"])
    args.vocab_size = 64 * math.ceil(len(compact_tokenizer) / 64)
    args.max_seq_len = 1024
    eot = compact_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    args.eos_id = eot
    torch.manual_seed(3)
    titan = Qwen3Model(args)
    with torch.no_grad():
        titan.init_weights()
    titan.eval()
    hf = hf_model_for_probe(full_state_dict(titan), args, eot, device="cpu")
    return titan, hf


def test_same_logits(models):
    titan, hf = models
    ids = torch.randint(0, titan.model_args.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, titan(ids), atol=1e-4, rtol=1e-4)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_kv_cache_probe_samples_what_the_full_forward_probe_samples(models, fixture_data, compact_tokenizer):
    """Constrained decoding makes every sample valid whatever the weights, so validity cannot tell a wrong copy:
    the conformers sampled (their best RMSD to the references) must be the same, and a copy whose gather
    mixed up two layers must sample other ones."""
    titan, hf = models
    refs = load_references(fixture_data / "valid", num_molecules=1, seed=0)
    kwargs = dict(samples_per_molecule=2, max_new_tokens=300, temperature=1.0, seed=0)
    with torch.no_grad():
        plain = sample_and_score(lambda ids: titan(ids), compact_tokenizer, refs, **kwargs)
        cached = sample_and_score(None, compact_tokenizer, refs, hf_model=hf, **kwargs)
    assert cached["conformer_samples"] == plain["conformer_samples"] == 2
    assert math.isfinite(plain["conformer_mean_best_rmsd"])
    assert cached["conformer_mean_best_rmsd"] == pytest.approx(plain["conformer_mean_best_rmsd"], abs=1e-6)

    state = full_state_dict(titan)
    swapped = dict(state)
    for key in [k for k in state if k.startswith("layers.0.")]:
        swapped[key], swapped[key.replace("layers.0.", "layers.1.", 1)] = (
            state[key.replace("layers.0.", "layers.1.", 1)],
            state[key],
        )
    wrong = hf_model_for_probe(swapped, titan.model_args, titan.model_args.eos_id, device="cpu")
    with torch.no_grad():
        other = sample_and_score(None, compact_tokenizer, refs, hf_model=wrong, **kwargs)
    assert other["conformer_mean_best_rmsd"] != pytest.approx(plain["conformer_mean_best_rmsd"], abs=1e-6)


def test_full_state_dict_has_plain_names_under_compile_and_recompute(models):
    """The GPU run compiles each block (and may wrap it for recompute): keys must still map to HF names."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    titan, _ = models
    wrapped = copy.deepcopy(titan)
    for name, block in list(wrapped.layers.named_children()):
        wrapped.layers.register_module(name, torch.compile(checkpoint_wrapper(block)))
    assert any("_orig_mod" in k for k in wrapped.state_dict())
    state = full_state_dict(wrapped)
    assert sorted(state) == sorted(titan.state_dict())
    assert full_state_dict(wrapped, keep=False) == {}

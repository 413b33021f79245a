"""Document-masked attention backends on CPU against the explicit-mask path (MolGenQwen3Model's SDPA).

- varlen with grouped-query attention: torch 2.13's `varlen_attn` checks head counts before any
  kernel, so TorchTitan 0.2.2's error reproduces here, and patches.varlen_forward_with_gqa removes
  it. The flash kernel has no CPU build; this test registers a reference CPU kernel for the
  `torch_attn::_varlen_attn` op (causal SDPA per document) so the patched wrapper's packing,
  document boundaries and GQA flag give logits to compare. Training refuses varlen without CUDA
  at config load (document_masking.resolve_attention), which stays the user-facing rule.
- flex forward (TorchTitan's compiled flex_attention; its backward has no CPU implementation);
- per-block torch.compile (TorchTitan's apply_compile, as the 0.6B TOML trains) against eager,
  forward and gradients.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import varlen as torch_varlen
from torchtitan.models.attention import VarlenAttentionWrapper

from molgen3D.training.pretraining import document_masking as dm
from molgen3D.training.pretraining.torchtitan_model.model import MolGenQwen3Model
from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS

EOS = 0
TOKENIZER = SimpleNamespace(eos_id=EOS)


def _model(attn_type: str, seed: int = 0) -> MolGenQwen3Model:
    """The tiny flavor (4 query / 2 KV heads: grouped-query like 0.6B's 16 / 8), block-causal."""
    args = copy.deepcopy(MOLGEN_FLAVORS["tiny"])
    args.vocab_size, args.eos_id, args.max_seq_len = 64, EOS, 64
    args.attn_type, args.attn_mask_type = attn_type, dm.BLOCK_CAUSAL
    assert args.n_kv_heads < args.n_heads
    torch.manual_seed(seed)
    model = MolGenQwen3Model(args)
    with torch.no_grad():
        model.init_weights(buffer_device=torch.device("cpu"))
    return model.eval()


def _same_weights(attn_type: str) -> tuple[MolGenQwen3Model, MolGenQwen3Model]:
    reference = _model("sdpa")
    other = _model(attn_type, seed=1)
    other.load_state_dict(reference.state_dict())
    return reference, other


def _tokens() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, 64, (2, 48), generator=g)
    tokens[0, [9, 20, 21, 40]] = EOS  # units of 10, 11, 1, 19 and an unfinished tail
    tokens[1, [30]] = EOS
    return tokens


def _logits(model: MolGenQwen3Model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, **dm.model_inputs(model, tokens, TOKENIZER))


def _cpu_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None, *rest):
    """Reference `torch_attn::_varlen_attn`: SDPA over each document of the packed batch."""
    enable_gqa = rest[1] if len(rest) > 1 else False
    out = torch.empty_like(query)
    bounds = cu_seq_q.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k, v = (t[start:end].transpose(0, 1)[None] for t in (query, key, value))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        out[start:end] = o[0].transpose(0, 1)
    lse = torch.zeros(query.shape[1], query.shape[0], dtype=torch.float32)
    return out, lse, torch.zeros(2, dtype=torch.uint64)


_CPU_KERNEL: dict = {"fn": None}


def _dispatch(*args, **kwargs):
    if _CPU_KERNEL["fn"] is None:
        raise NotImplementedError("torch_attn::_varlen_attn has no CPU kernel")
    return _CPU_KERNEL["fn"](*args, **kwargs)


@pytest.fixture()
def reference_varlen_kernel(monkeypatch):
    """The reference CPU kernel while the test runs (outside it the op has none, as in torch); eager varlen_attn."""
    op = torch_varlen._varlen_attn
    if "cpu" not in op._backend_fns:
        op.register_kernel("cpu", _dispatch)
    monkeypatch.setitem(_CPU_KERNEL, "fn", _cpu_varlen)
    # TorchTitan compiles varlen_attn once per process (max-autotune); eager keeps this test fast.
    monkeypatch.setattr(VarlenAttentionWrapper, "_compiled_varlen_attn", torch_varlen.varlen_attn)


def test_torchtitans_varlen_wrapper_fails_on_grouped_query_attention(reference_varlen_kernel, monkeypatch):
    """The error Qwen3-0.6B hits on its first varlen forward, reproduced before any kernel runs."""
    patches.install_varlen_gqa()
    monkeypatch.setattr(VarlenAttentionWrapper, "forward", patches.ORIGINALS[patches.VARLEN_FORWARD])
    model = _model("varlen")
    with pytest.raises(ValueError, match=r"same number of heads but got Hq=4 and Hkv=2.*enable_gqa=True"):
        _logits(model, _tokens())


def test_patched_varlen_equals_the_explicit_mask(reference_varlen_kernel):
    patches.install_varlen_gqa()
    reference, varlen = _same_weights("varlen")
    tokens = _tokens()
    expected, got = _logits(reference, tokens), _logits(varlen, tokens)
    assert got.shape == expected.shape == (2, 48, 64)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    # The documents are really cut: the unit after an eos ignores what came before it.
    changed = tokens.clone()
    changed[0, :9] = (changed[0, :9] % 63) + 1
    assert torch.allclose(_logits(varlen, changed)[0, 10:20], got[0, 10:20], atol=1e-5)


@pytest.mark.slow  # compiles flex_attention for the CPU
def test_flex_forward_equals_the_explicit_mask():
    reference, flex = _same_weights("flex")
    tokens = _tokens()
    expected, got = _logits(reference, tokens), _logits(flex, tokens)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.slow  # compiles every block
def test_per_block_compile_equals_eager():
    from torchtitan.config.job_config import Compile
    from torchtitan.models.llama4.infra.parallelize import apply_compile

    eager, compiled = _same_weights("sdpa")
    apply_compile(compiled, Compile(enable=True, components=["model"]), ep_enabled=False)
    assert all(type(block).__name__ == "OptimizedModule" for block in compiled.layers.values())
    tokens = _tokens()
    eager.train(), compiled.train()
    losses = []
    for model in (eager, compiled):
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5), losses
    grads = {name: p.grad for name, p in eager.named_parameters()}
    for name, p in compiled.named_parameters():
        name = name.replace("._orig_mod", "")
        assert torch.allclose(p.grad, grads[name], atol=1e-4, rtol=1e-3), name

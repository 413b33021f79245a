"""Parameter count, training FLOPs per token and MFU for the tied-head Qwen3 flavors.

TorchTitan 0.2.2 counts the tied weight as embedding only: it subtracts it from the
parameter count (440M logged for a 596M model) and leaves the LM head's matmul out of the
FLOPs, so MFU reads ~15% low. Here:
- parameters: every distinct tensor once (the tied embedding/head counted once);
- FLOPs/token = 6 x non-embedding parameters + 6 x dim x vocab (the head's forward and
  backward matmuls, tied or not: the lookup is free, the head is not) + attention;
- attention convention (TorchTitan's): QK^T and AV over the FULL T x T square,
  12 x layers x heads x head_dim x T per token, i.e. the causal half is not discounted.
  With document masking each unit only attends within itself, so a sequence of units of
  lengths l_i costs 12 x layers x heads x head_dim x sum(l_i^2) / sum(l_i) per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

ATTENTION_CONVENTION = "full T^2 (causal half not discounted)"


@dataclass(frozen=True)
class ParamCounts:
    total: int
    """Distinct parameters (a tied embedding/head once)."""
    embedding: int
    """The token embedding (= the tied head)."""

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_params(model: nn.Module) -> ParamCounts:
    """Distinct parameters of `model` (works on the meta device); the embedding is `tok_embeddings`."""
    seen: set[int] = set()
    total = embedding = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if name.split(".")[0] == "tok_embeddings":
            embedding += param.numel()
    return ParamCounts(total=total, embedding=embedding)


def attention_flops_per_token(n_layers: int, n_heads: int, head_dim: int, seq_len: float) -> float:
    """QK^T + AV, forward and backward, over a full `seq_len` square (see the module docstring)."""
    return 12.0 * n_layers * n_heads * head_dim * seq_len


def flops_per_token(
    params: ParamCounts,
    *,
    dim: int,
    vocab_size: int,
    n_layers: int,
    n_heads: int,
    head_dim: int,
    seq_len: float,
    tied_head: bool = True,
) -> float:
    """Training FLOPs per token: dense matmuls + LM head + attention at `seq_len` (full-square convention)."""
    head = 6.0 * dim * vocab_size
    # An untied head is already among the non-embedding parameters.
    dense = 6.0 * params.non_embedding + (head if tied_head else 0.0)
    return dense + attention_flops_per_token(n_layers, n_heads, head_dim, seq_len)


def model_flops_per_token(model_args, model: nn.Module, seq_len: float) -> tuple[ParamCounts, float]:
    """`count_params` and `flops_per_token` from a TorchTitan Qwen3ModelArgs and its model."""
    params = count_params(model)
    flops = flops_per_token(
        params,
        dim=model_args.dim,
        vocab_size=model_args.vocab_size,
        n_layers=model_args.n_layers,
        n_heads=model_args.n_heads,
        head_dim=model_args.head_dim,
        seq_len=seq_len,
        tied_head=bool(getattr(model_args, "enable_weight_tying", False)),
    )
    return params, flops


def describe(params: ParamCounts, flops: float, seq_len: float) -> str:
    """The startup log line: what is counted and under which attention convention."""
    return (
        f"Model: {params.total:,} parameters ({params.non_embedding:,} non-embedding + {params.embedding:,} "
        f"tied embedding/head); {flops / 1e9:.3f} GFLOP/token at seq {seq_len:.0f}, LM head included, "
        f"attention convention {ATTENTION_CONVENTION} (with document masking, MFU uses the units' real lengths)"
    )

"""Block-causal attention per packed unit: each unit attends only to itself.

Packed sequences hold several `[SMILES]...[/CONFORMER]<|endoftext|>` units; with plain causal
attention a unit's tokens see the units before it. TorchTitan 0.2.2's Qwen3 cuts attention at
the tokenizer's eos with `attn_mask_type = "block_causal"`, but only for `attn_type = "flex"`
or `"varlen"` (CUDA kernels). This module:
- `resolve_attention(document_masking, backend, cuda)` -> the model args' (attn_type,
  attn_mask_type); backend "auto" is flex on CUDA and the explicit-mask SDPA below elsewhere;
- `block_causal_mask(tokens, eos_id)`: the dense [B, 1, L, L] mask, cut exactly like
  TorchTitan's document mask (an eos closes the unit before it; a padding eos is a unit of one);
- `MaskedSdpa`: SDPA fed that mask through a `MaskSlot` (the model class that fills the slot per
  batch, the CPU path that lets tests prove the masking, is `torchtitan_model/model.py`);
- `unit_length_stats(tokens, eos_id)`: sum(l^2) and sum(l) of a batch's units (masked attention FLOPs);
- `model_inputs(model, tokens, tokenizer)`: the forward kwargs the model needs (flex/varlen
  masks), for callers outside the Trainer (validation, the sampling probe).
Labels are untouched: the separator after a unit is still trained to predict the next unit's
first token (always `[SMILES]`), now from its own unit alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "sdpa", "flex", "varlen")
BLOCK_CAUSAL = "block_causal"


def resolve_attention(document_masking: bool, backend: str = "auto", cuda: bool = False) -> tuple[str, str]:
    """(attn_type, attn_mask_type) for the model args; `ValueError` names `[model] attention_backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"[model] attention_backend = {backend!r} is not one of {', '.join(BACKENDS)}")
    if not document_masking:
        if backend in ("flex", "varlen"):
            raise ValueError(
                f"[model] attention_backend = {backend!r} only serves document masking; set "
                '[model] document_masking = true or attention_backend = "auto"'
            )
        return "sdpa", "causal"
    if backend == "auto":
        backend = "flex" if cuda else "sdpa"
    if backend in ("flex", "varlen") and not cuda:
        raise ValueError(
            f'[model] attention_backend = {backend!r} needs CUDA kernels; on this machine use "sdpa" or "auto"'
        )
    return backend, BLOCK_CAUSAL


def segment_ids(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[B, L] unit index of each position: it increments after every eos."""
    is_eos = (tokens == eos_id).to(torch.int32)
    return torch.cumsum(is_eos, dim=1) - is_eos


def block_causal_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[B, 1, L, L] bool, True where query q may attend key k: k <= q and both in one unit."""
    seg = segment_ids(tokens, eos_id)
    length = tokens.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
    same_unit = seg[:, :, None] == seg[:, None, :]
    return (same_unit & causal)[:, None]


class MaskSlot:
    """The current batch's mask, shared by every layer's attention (set by the model's forward)."""

    mask: torch.Tensor | None = None


class MaskedSdpa(nn.Module):
    """SDPA with the explicit block-causal mask; call-compatible with TorchTitan's SDPA wrapper."""

    def __init__(self, slot: MaskSlot):
        super().__init__()
        self._slot = slot

    def forward(self, q, k, v, *, scale: float | None = None, enable_gqa: bool = False, is_causal: bool = True):
        del is_causal  # the mask is causal already
        mask = self._slot.mask
        if mask is None:
            raise RuntimeError(
                "MaskedSdpa called before the model set its block-causal mask (MolGenQwen3Model.forward)"
            )
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa)


def unit_length_stats(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[sum of squared unit lengths, sum of lengths] of a [B, L] batch (float64, on its device, no sync)."""
    batch, length = tokens.shape
    seg = segment_ids(tokens, eos_id).to(torch.int64)
    rows = torch.arange(batch, device=tokens.device, dtype=torch.int64)[:, None] * length
    lengths = torch.bincount((seg + rows).flatten(), minlength=batch * length).to(torch.float64)
    return torch.stack([(lengths * lengths).sum(), lengths.sum()])


def model_inputs(model: nn.Module, tokens: torch.Tensor, tokenizer: Any) -> dict[str, Any]:
    """Forward kwargs beyond the tokens: flex/varlen masks from the model, none otherwise."""
    args = getattr(model, "model_args", None)
    if getattr(args, "attn_type", "sdpa") in ("flex", "varlen"):
        return {"attention_masks": model.get_attention_masks(input_batch=tokens, tokenizer=tokenizer)}
    return {}

"""Block-causal attention per packed unit: each unit attends only to itself.

Packed sequences hold several `[SMILES]...[/CONFORMER]<|endoftext|>` units; with plain causal
attention a unit's tokens see the units before it. TorchTitan 0.2.2's Qwen3 cuts attention at
the tokenizer's eos with `attn_mask_type = "block_causal"`, but only for `attn_type = "flex"`
or `"varlen"` (CUDA kernels). This module:
- `resolve_attention(document_masking, backend, cuda)` -> the model args' (attn_type,
  attn_mask_type); backend "auto" is flex on CUDA and the explicit-mask SDPA below elsewhere;
- `block_causal_mask(tokens, eos_id)`: the dense [B, 1, L, L] mask, cut exactly like
  TorchTitan's document mask (an eos closes the unit before it; a padding eos is a unit of one);
- `MolGenQwen3Model`: Qwen3 whose "sdpa" + "block_causal" builds that mask from the tokens in
  `forward` and hands it to SDPA (the CPU path, so tests prove the masking here);
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
from torchtitan.models.qwen3 import Qwen3Model

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


class _MaskSlot:
    """The current batch's mask, shared by every layer's attention (set by the model's forward)."""

    mask: torch.Tensor | None = None


class MaskedSdpa(nn.Module):
    """SDPA with the explicit block-causal mask; call-compatible with TorchTitan's SDPA wrapper."""

    def __init__(self, slot: _MaskSlot):
        super().__init__()
        self._slot = slot

    def forward(self, q, k, v, *, scale: float | None = None, enable_gqa: bool = False, is_causal: bool = True):
        del is_causal  # the mask is causal already
        mask = self._slot.mask
        if mask is None:
            raise RuntimeError("MaskedSdpa called outside MolGenQwen3Model.forward: no block-causal mask was set")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa)


def unit_length_stats(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[sum of squared unit lengths, sum of lengths] of a [B, L] batch (float64, on its device, no sync)."""
    batch, length = tokens.shape
    seg = segment_ids(tokens, eos_id).to(torch.int64)
    rows = torch.arange(batch, device=tokens.device, dtype=torch.int64)[:, None] * length
    lengths = torch.bincount((seg + rows).flatten(), minlength=batch * length).to(torch.float64)
    return torch.stack([(lengths * lengths).sum(), lengths.sum()])


class MolGenQwen3Model(Qwen3Model):
    """TorchTitan's Qwen3, plus "sdpa" with a block-causal mask built from the input tokens.

    With block-causal attention it also sums the unit lengths it sees (`pop_attention_len`),
    so MFU counts the attention FLOPs the masked batches really cost.
    """

    def __init__(self, model_args):
        super().__init__(model_args)
        self.block_causal = model_args.attn_mask_type == BLOCK_CAUSAL
        self.explicit_block_mask = model_args.attn_type == "sdpa" and self.block_causal
        self._mask_slot = _MaskSlot()
        self._unit_stats: torch.Tensor | None = None
        if self.explicit_block_mask:
            for layer in self.layers.values():
                layer.attention.inner_attention = MaskedSdpa(self._mask_slot)

    def _count_units(self, tokens: torch.Tensor) -> None:
        stats = unit_length_stats(tokens, self.model_args.eos_id)
        self._unit_stats = stats if self._unit_stats is None else self._unit_stats + stats

    def pop_attention_len(self) -> float | None:
        """sum(l^2) / sum(l) over the units seen since the last call (None: no masking, or nothing seen)."""
        if self._unit_stats is None:
            return None
        squares, tokens = self._unit_stats.tolist()
        self._unit_stats = None
        return squares / tokens if tokens else None

    def get_attention_masks(self, input_batch: torch.Tensor, tokenizer: Any, extra_inputs: Any = None):
        if self.block_causal and torch.is_grad_enabled():
            self._count_units(input_batch)
        return super().get_attention_masks(input_batch, tokenizer, extra_inputs)

    def forward(self, tokens: torch.Tensor, attention_masks: Any = None, positions: torch.Tensor | None = None):
        if self.explicit_block_mask:
            # Kept until the next forward: activation recompute in backward reads it again.
            self._mask_slot.mask = block_causal_mask(tokens, self.model_args.eos_id)
            if torch.is_grad_enabled():
                self._count_units(tokens)
        return super().forward(tokens, attention_masks, positions)


def model_inputs(model: nn.Module, tokens: torch.Tensor, tokenizer: Any) -> dict[str, Any]:
    """Forward kwargs beyond the tokens: flex/varlen masks from the model, none otherwise."""
    args = getattr(model, "model_args", None)
    if getattr(args, "attn_type", "sdpa") in ("flex", "varlen"):
        return {"attention_masks": model.get_attention_masks(input_batch=tokens, tokenizer=tokenizer)}
    return {}

"""`MolGenQwen3Model`, the `molgen_qwen3` spec's model class: TorchTitan's Qwen3 plus per-unit attention.

With `attn_type = "sdpa"` and `attn_mask_type = "block_causal"` (document masking on a machine
without flex/varlen kernels) it builds the block-causal mask from the input tokens in `forward`
and hands it to every layer's SDPA (`document_masking.MaskedSdpa`). With block-causal attention
of any backend it also sums the unit lengths it trains on (`pop_attention_len`), so the metrics
processor counts the attention FLOPs the masked batches really cost.
"""

from __future__ import annotations

from typing import Any

import torch
from torchtitan.models.qwen3 import Qwen3Model

from molgen3D.training.pretraining.document_masking import (
    BLOCK_CAUSAL,
    MaskedSdpa,
    MaskSlot,
    block_causal_mask,
    unit_length_stats,
)


class MolGenQwen3Model(Qwen3Model):
    """TorchTitan's Qwen3, plus "sdpa" with a block-causal mask built from the input tokens.

    With block-causal attention it also sums the unit lengths it sees (`pop_attention_len`),
    so MFU counts the attention FLOPs the masked batches really cost.
    """

    def __init__(self, model_args):
        super().__init__(model_args)
        self.block_causal = model_args.attn_mask_type == BLOCK_CAUSAL
        self.explicit_block_mask = model_args.attn_type == "sdpa" and self.block_causal
        self._mask_slot = MaskSlot()
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

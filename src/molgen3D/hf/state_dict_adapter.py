"""TorchTitan <-> Hugging Face state dicts for our tied-embedding Qwen3, and tag-row re-initialisation.

Qwen3-0.6B ties the LM head to the embedding and its checkpoints carry no `lm_head.weight`.
TorchTitan's loader asks the checkpoint for exactly the keys `to_hf` names, so a tied model must
neither ask for nor write `lm_head.weight`; `from_hf` then rebuilds the head from the embedding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchtitan.models.qwen3.model.state_dict_adapter import Qwen3StateDictAdapter

EMBED_KEY = "model.embed_tokens.weight"
HEAD_KEY = "lm_head.weight"


class MolGenQwen3StateDictAdapter(Qwen3StateDictAdapter):
    """Qwen3StateDictAdapter that always treats the head of a tied model as the embedding.

    - `to_hf` of a tied model omits `lm_head.weight`, as transformers' Qwen3ForCausalLM with
      `tie_word_embeddings=true` (and the Qwen3-0.6B checkpoints) expect.
    - `from_hf` of a tied model takes the head from `model.embed_tokens.weight`, also when the
      checkpoint carries an `lm_head.weight` (the two share one parameter, so only one can win,
      and the embedding is what the tied model trains). Buffers HF may store (`rotary_emb.inv_freq`)
      are dropped. The caller's dict is not modified.
    """

    def from_hf(self, hf_state_dict: dict[str, Any]) -> dict[str, Any]:
        hf_state_dict = {k: v for k, v in hf_state_dict.items() if not self._is_ignored_hf_key(k)}
        if self.model_args.enable_weight_tying:
            if EMBED_KEY not in hf_state_dict:
                raise KeyError(
                    f"HF state dict has no {EMBED_KEY!r}, needed for the tied embedding/LM head; "
                    f"keys start with {sorted(hf_state_dict)[:5]}"
                )
            hf_state_dict[HEAD_KEY] = hf_state_dict[EMBED_KEY]
        elif HEAD_KEY not in hf_state_dict:
            raise KeyError(
                f"HF state dict has no {HEAD_KEY!r} and the model is not tied (enable_weight_tying=False): "
                "tie the model, or load a checkpoint with an LM head"
            )
        return super().from_hf(hf_state_dict)

    def _is_ignored_hf_key(self, key: str) -> bool:
        abstract = re.sub(r"(\d+)", "{}", key, count=1)
        return abstract in self.from_hf_map and self.from_hf_map[abstract] is None


def reinit_token_rows(
    model: nn.Module,
    token_ids: Sequence[int],
    std: float,
    *,
    seed: int | None = None,
) -> None:
    """Redraw the embedding rows of `token_ids` from N(0, std); a tied LM head changes with them.

    Works on plain and DTensor (FSDP/TP-sharded) embeddings: every rank draws the same full
    [len(token_ids), dim] block from `seed` (default `torch.initial_seed()`, equal on all ranks
    once TorchTitan has seeded them) and writes the part its local shard holds.
    """
    weight = model.tok_embeddings.weight
    vocab, dim = weight.shape
    ids = [int(t) for t in token_ids]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token ids {bad} are outside the embedding's {vocab} rows")
    if len(set(ids)) != len(ids):
        raise ValueError(f"token ids must be distinct, got {ids}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    if not ids:
        return
    generator = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)
    rows = torch.randn(len(ids), dim, generator=generator, dtype=torch.float32) * std

    with torch.no_grad():
        local, row_offset, col_offset = _local_view(weight)
        local_rows, local_cols = local.shape
        for row_value, token in zip(rows, ids):
            r = token - row_offset
            if 0 <= r < local_rows:
                local[r].copy_(row_value[col_offset : col_offset + local_cols].to(local.dtype))


def _local_view(weight: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(this rank's block of a 2-D weight, its first global row, its first global column)."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    if not isinstance(weight, DTensor):
        return weight, 0, 0
    for placement in weight.placements:
        if type(placement) not in (Shard, Replicate):
            raise NotImplementedError(
                f"reinit_token_rows handles Shard/Replicate placements, not {placement!r} of {weight.placements}"
            )
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, weight.placements)
    return weight.to_local(), int(offset[0]), int(offset[1])

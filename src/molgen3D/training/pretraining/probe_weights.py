"""The conformer probe's model: full weights gathered once, decoded on one rank with a KV cache.

A probe through the FSDP model runs a full forward (28 all-gathers for 0.6B) per generated
token, on every rank, each doing the same work. Instead every rank takes part in gathering
the full weights once (`full_state_dict`: DTensor.full_tensor is a collective), and rank 0
builds a transformers Qwen3ForCausalLM from them (the export's key mapping and config),
which decodes with its KV cache; the other ranks wait. Prompts are single units, so
block-causal and causal attention agree there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def full_state_dict(model: nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """The model's unsharded state under its plain names (collective under FSDP: call it on every rank;
    `keep` it only where it is used). torch's state-dict API strips the `_orig_mod.` of compiled blocks
    and the activation-checkpoint wrapper's prefix, which `model.state_dict()` would keep."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return dict(state) if keep else {}


def hf_model_for_probe(
    titan_state: dict[str, torch.Tensor],
    model_args: Any,
    eot_id: int,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A transformers Qwen3ForCausalLM with the TorchTitan weights, in eval mode on `device`."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from molgen3D.hf.export import hf_config
    from molgen3D.hf.state_dict_adapter import MolGenQwen3StateDictAdapter

    config = hf_config(model_args, eot_id=eot_id, torch_dtype=str(dtype).removeprefix("torch."))
    config.pop("torch_dtype", None)
    hf_state = MolGenQwen3StateDictAdapter(model_args, None).to_hf(titan_state)
    with torch.device(device):
        model = Qwen3ForCausalLM(Qwen3Config(**config))
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"probe model: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    model.tie_weights()
    return model.to(device=device, dtype=dtype).eval()

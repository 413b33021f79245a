"""The `molgen_qwen3` TrainSpec: TorchTitan's Qwen3 on conformer text (`[experimental] custom_import`).

Importing this module (the Trainer does it first thing) registers the spec once per process;
it changes nothing in TorchTitan (the runner applies `patches.py` itself, before it builds the
Trainer). What the spec changes against TorchTitan's `qwen3`:
- flavors "tiny"/"small" that train in minutes on 2 CPU cores, and "0.6B" (Qwen3-0.6B);
  all tie the LM head to the embedding;
- `[model] document_masking` makes attention block-causal per unit (flex/varlen on CUDA, SDPA
  with an explicit mask on CPU: model.py, document_masking.py);
- parameter count and FLOPs/token count the tied head (flops.py), so MFU is not ~15% low;
- hf_pretrain checks the base folder's config.json against the flavor (hf/base_model.py);
- the vocabulary follows the tokenizer (`molgen_run.tokenizer_tag`, resolved once by finalize):
  len(tokenizer) rounded up to a multiple of 64, except that a flavor with Qwen3's padded
  151,936 rows keeps them when they cover the tokenizer (so Qwen3 HF weights load as is);
  eos_id is `<|endoftext|>` (separator and pad);
- data, validation, metrics, LR schedule (WSDS), tied-aware FSDP and HF adapter are ours.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from torchtitan.components.loss import build_cross_entropy_loss
from torchtitan.components.optimizer import build_optimizers
from torchtitan.components.tokenizer import HuggingFaceTokenizer
from torchtitan.models.qwen3 import Qwen3ModelArgs
from torchtitan.protocols.train_spec import TrainSpec, get_train_spec, register_train_spec
from torchtitan.tools.logging import logger

from molgen3D.hf.state_dict_adapter import MolGenQwen3StateDictAdapter
from molgen3D.tokenization.load import load_titan_tokenizer
from molgen3D.hf import base_model
from molgen3D.training.pretraining import flops, patches
from molgen3D.training.pretraining.components.lr_scheduler import build_wsds_lr_schedulers
from molgen3D.training.pretraining.components.metrics_processor import build_molgen_metrics_processor
from molgen3D.training.pretraining.components.validate import build_molgen_validator
from molgen3D.training.pretraining.config.custom_job_config import TRAIN_SPEC_NAME
from molgen3D.training.pretraining.config.finalize import resolved
from molgen3D.training.pretraining.document_masking import resolve_attention
from molgen3D.training.pretraining.torchtitan_model.dataloader_builder import build_molgen_dataloader
from molgen3D.training.pretraining.torchtitan_model.model import MolGenQwen3Model
from molgen3D.training.pretraining.torchtitan_model.parallelize import parallelize_molgen_qwen3

QWEN3_PADDED_VOCAB = 151_936
VOCAB_MULTIPLE = 64

__all__ = [
    "MOLGEN_FLAVORS",
    "MolGenQwen3ModelArgs",
    "build_molgen_dataloader",
    "build_molgen_train_loader",
    "build_molgen_tokenizer",
    "build_molgen_train_spec",
    "register",
    "resolve_vocab_size",
]


def resolve_vocab_size(n_tokens: int, flavor_vocab: int) -> int:
    """Embedding rows for a tokenizer of `n_tokens` ids (its largest id + 1)."""
    if n_tokens < 1:
        raise ValueError(f"a tokenizer needs at least one token, got {n_tokens}")
    if flavor_vocab == QWEN3_PADDED_VOCAB and n_tokens <= QWEN3_PADDED_VOCAB:
        return QWEN3_PADDED_VOCAB
    return -(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def tokenizer_size(tokenizer: HuggingFaceTokenizer) -> int:
    """Largest token id + 1 (added tokens included)."""
    return max(tokenizer.get_vocab().values()) + 1


def build_molgen_train_loader(dp_world_size: int, dp_rank: int, tokenizer, job_config):
    """TrainSpec.build_dataloader_fn: the training split's loader, on the Trainer's tokenizer (the Trainer
    keeps it as `trainer.dataloader`; `MolGenTrainer` hands it to the metrics processor)."""
    return build_molgen_dataloader(dp_world_size, dp_rank, tokenizer, job_config)


def build_molgen_tokenizer(job_config) -> HuggingFaceTokenizer:
    """TrainSpec.build_tokenizer_fn: the tokenizer named by `[molgen_run] tokenizer_tag`."""
    return load_titan_tokenizer(resolved(job_config).tokenizer_dir)


@dataclass
class MolGenQwen3ModelArgs(Qwen3ModelArgs):
    """Qwen3ModelArgs whose vocabulary and eos follow the run's tokenizer."""

    def update_from_config(self, job_config, **kwargs) -> None:
        super().update_from_config(job_config, **kwargs)
        tokenizer = build_molgen_tokenizer(job_config)
        n_tokens = tokenizer_size(tokenizer)
        self.vocab_size = resolve_vocab_size(n_tokens, self.vocab_size)
        self.eos_id = int(tokenizer.eos_id)
        logger.info(f"Vocabulary: {n_tokens} tokenizer ids -> {self.vocab_size} embedding rows; eos_id {self.eos_id}")
        model = job_config.model
        try:
            self.attn_type, self.attn_mask_type = resolve_attention(
                bool(getattr(model, "document_masking", False)),
                getattr(model, "attention_backend", "auto"),
                cuda=patches.accelerator_available(),
            )
        except ValueError as err:
            raise ValueError(f"{err} (model.document_masking = {getattr(model, 'document_masking', False)})") from None
        if self.attn_mask_type != "causal":
            logger.info(
                f"Document masking: {self.attn_type} attention, block-causal per unit (cut after eos {self.eos_id})"
            )
        self._check_hf_base(job_config)

    def _check_hf_base(self, job_config) -> None:
        """hf_pretrain from a local folder: its config.json must describe this flavor and vocabulary."""
        if job_config.molgen_run.init_mode != "hf_pretrain":
            return
        base = resolved(job_config).paths.base_model
        if not base or not os.path.isdir(base):
            return  # a hub id: the runner's pre-flight check says it must be a local folder
        config = base_model.read_base_config(base)
        base_model.check_base_matches(
            config, job_config.model.flavor, self, MOLGEN_FLAVORS, os.path.join(base, "config.json")
        )

    def get_nparams_and_flops(self, model, seq_len: int) -> tuple[int, int]:
        """Distinct parameters and FLOPs/token with the tied LM head counted (TorchTitan's leave it out)."""
        params, per_token = flops.model_flops_per_token(self, model, seq_len)
        logger.info(flops.describe(params, per_token, seq_len))
        return params.total, int(per_token)


def _flavor(**overrides) -> MolGenQwen3ModelArgs:
    shape = dict(qk_norm=True, rope_theta=1_000_000, enable_weight_tying=True, max_seq_len=4096)
    shape.update(overrides)
    return MolGenQwen3ModelArgs(**shape)


# vocab_size here is the flavor's own: only QWEN3_PADDED_VOCAB has a meaning (keep Qwen3's rows);
# update_from_config replaces it with the tokenizer's.
MOLGEN_FLAVORS: dict[str, MolGenQwen3ModelArgs] = {
    "tiny": _flavor(
        dim=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, hidden_dim=384, vocab_size=VOCAB_MULTIPLE
    ),
    "small": _flavor(
        dim=256, n_layers=6, n_heads=8, n_kv_heads=4, head_dim=32, hidden_dim=768, vocab_size=VOCAB_MULTIPLE
    ),
    "0.6B": _flavor(
        dim=1024, n_layers=28, n_heads=16, n_kv_heads=8, head_dim=128, hidden_dim=3072, vocab_size=QWEN3_PADDED_VOCAB
    ),
}


class FreshFlavors(Mapping):
    """The flavor table, handing out a copy per lookup.

    The Trainer mutates the args it gets (`update_from_config`); copies keep one run's
    tokenizer-derived vocabulary out of the next run in the same process.
    """

    def __init__(self, flavors: Mapping[str, MolGenQwen3ModelArgs]):
        self._flavors = dict(flavors)

    def __getitem__(self, name: str) -> MolGenQwen3ModelArgs:
        if name not in self._flavors:
            raise KeyError(
                f"[model] flavor = {name!r} is not a molgen_qwen3 flavor; choose one of {', '.join(self._flavors)}"
            )
        return copy.deepcopy(self._flavors[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._flavors)

    def __len__(self) -> int:
        return len(self._flavors)


def build_molgen_train_spec() -> TrainSpec:
    return TrainSpec(
        model_cls=MolGenQwen3Model,
        model_args=FreshFlavors(MOLGEN_FLAVORS),
        parallelize_fn=parallelize_molgen_qwen3,
        pipelining_fn=None,
        build_optimizers_fn=build_optimizers,
        build_lr_schedulers_fn=build_wsds_lr_schedulers,
        build_dataloader_fn=build_molgen_train_loader,
        build_tokenizer_fn=build_molgen_tokenizer,
        build_loss_fn=build_cross_entropy_loss,
        build_validator_fn=build_molgen_validator,
        build_metrics_processor_fn=build_molgen_metrics_processor,
        state_dict_adapter=MolGenQwen3StateDictAdapter,
    )


def register() -> None:
    """Register `molgen_qwen3` (idempotent); what TorchTitan's custom_import expects of this module."""
    try:
        get_train_spec(TRAIN_SPEC_NAME)
    except ValueError:
        register_train_spec(TRAIN_SPEC_NAME, build_molgen_train_spec())


register()

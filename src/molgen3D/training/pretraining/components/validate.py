"""Validation for `molgen_qwen3`: loss on `[validation] dataset_path`, optional conformer sampling.

TorchTitan's own Validator reads HF text datasets and, with `steps = -1`, hangs when ranks run
out of data at different times. Here every pass starts from the beginning of the split (no
shuffling, one finite epoch: the same batches at every validation, so losses are comparable),
and the ranks agree before each batch with an all-reduce: while any rank still has data, the
others feed a batch that is all padding (labels -100), keeping FSDP's collectives in step and
adding nothing to the loss. The loss is the token-weighted mean over everything evaluated.

A block-causal model (`[model] document_masking`) gets its flex/varlen masks here as the
Trainer gives them (`document_masking.model_inputs`); labels are the loader's, unchanged.

With `validation.sample_conformers_freq > 0`, every that-many steps the model also samples
conformers for a few validation molecules and scores them with
`molgen3D.evaluation.training_probe.sample_and_score` (validity, mean best RMSD). Every rank
takes part in gathering the full weights once; rank 0 alone decodes them as a transformers
Qwen3 with a KV cache (probe_weights.py) while the others go on: one gather instead of a full
FSDP forward per generated token on every rank. The probe (and the sampler and scorer behind it) is
imported only when a run samples, so a run without it never loads generation or scoring.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn as nn

from torchtitan.components.loss import IGNORE_INDEX
from torchtitan.components.validate import BaseValidator
from torchtitan.tools import utils
from torchtitan.tools.logging import logger

from molgen3D.chem.tagged_text import format_prompt
from molgen3D.tokenization.load import load_tokenizer
from molgen3D.training.pretraining.config.finalize import resolved
from molgen3D.training.pretraining.document_masking import model_inputs
from molgen3D.training.pretraining.probe_weights import full_state_dict, hf_model_for_probe
from molgen3D.training.pretraining.torchtitan_model.dataloader_builder import build_molgen_dataloader


class MolGenValidator(BaseValidator):
    """Validation loss (and conformer sampling) with the packed conformer loader."""

    def __init__(
        self,
        job_config: Any,
        dp_world_size: int,
        dp_rank: int,
        tokenizer: Any,
        parallel_dims: Any,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        validation_context: Callable[[], contextlib.AbstractContextManager],
        maybe_enable_amp: contextlib.AbstractContextManager,
        metrics_processor: Any,
        pp_schedule: Any = None,
        pp_has_first_stage: bool | None = None,
        pp_has_last_stage: bool | None = None,
    ):
        super().__init__(job_config)
        if pp_schedule is not None:
            raise NotImplementedError("molgen_qwen3 validation does not support pipeline parallelism")
        v = job_config.validation
        self.parallel_dims = parallel_dims
        self.titan_tokenizer = tokenizer
        self.loss_fn = loss_fn
        self.validation_context = validation_context
        self.maybe_enable_amp = maybe_enable_amp
        self.metrics_processor = metrics_processor
        self.max_batches = None if v.steps == -1 else v.steps
        self.settled = resolved(job_config)
        self.seq_len = self.settled.valid_seq_len
        self.batch_size = v.local_batch_size
        self.paths = self.settled.paths
        self.loader = build_molgen_dataloader(
            dp_world_size,
            dp_rank,
            tokenizer,
            job_config,
            data_path=self.paths.valid_data,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            infinite=False,
            shuffle_lines=False,
            num_workers=0,
        )
        self._start_state = self.loader.dataset.state_dict()
        self.pad_id = self.loader.dataset.eot_id
        self.sample_freq = int(getattr(v, "sample_conformers_freq", 0) or 0)
        self._references: list | None = None
        self._sampling_tokenizer: Any = None

    # --- scheduling ----------------------------------------------------------------------

    def loss_due(self, step: int) -> bool:
        return super().should_validate(step)

    def sampling_due(self, step: int) -> bool:
        return self.sample_freq > 0 and step % self.sample_freq == 0

    def should_validate(self, step: int) -> bool:
        return self.loss_due(step) or self.sampling_due(step)

    # --- loss ----------------------------------------------------------------------------

    def _any_rank(self, flag: bool, device: torch.device) -> bool:
        if not self.parallel_dims.dp_enabled:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        torch.distributed.all_reduce(
            value, op=torch.distributed.ReduceOp.MAX, group=self.parallel_dims.get_mesh("batch").get_group()
        )
        return bool(value.item())

    def _padding_batch(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        shape = (self.batch_size, self.seq_len)
        return {"input": torch.full(shape, self.pad_id, dtype=torch.long)}, torch.full(
            shape, IGNORE_INDEX, dtype=torch.long
        )

    @torch.no_grad()
    def validation_loss(self, model: nn.Module) -> tuple[float, int, int]:
        """(token-weighted mean loss over all ranks, batches this rank evaluated, valid tokens overall)."""
        device = torch.device(utils.device_type)
        self.loader.dataset.load_state_dict(self._start_state)
        batches = iter(self.loader)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        tokens = torch.zeros((), dtype=torch.float64, device=device)
        done = mine = 0
        while self.max_batches is None or done < self.max_batches:
            batch = next(batches, None)
            if not self._any_rank(batch is not None, device):
                break
            if batch is None:
                batch = self._padding_batch()
            else:
                mine += 1
                self.metrics_processor.ntokens_since_last_log += batch[1].numel()
            inputs, labels = batch[0]["input"].to(device), batch[1].to(device)
            with self.validation_context(), self.maybe_enable_amp:
                logits = model(inputs, **model_inputs(model, inputs, self.titan_tokenizer))
                loss_sum += self.loss_fn(logits, labels).double()
            tokens += (labels != IGNORE_INDEX).sum()
            done += 1
        if self.parallel_dims.dp_enabled:
            both = torch.stack([loss_sum, tokens])
            torch.distributed.all_reduce(both, group=self.parallel_dims.get_mesh("batch").get_group())
            loss_sum, tokens = both[0], both[1]
        if tokens.item() == 0:
            logger.warning(f"validation data {self.paths.valid_data} produced no tokens")
            return float("nan"), mine, 0
        return (loss_sum / tokens).item(), mine, int(tokens.item())

    # --- conformer sampling --------------------------------------------------------------

    @torch.no_grad()
    def sample_conformers(self, model: nn.Module) -> dict[str, float]:
        """The training probe on a few validation molecules: validity and mean best RMSD.

        Prompt plus sample must fit the model's rotary table (training.seq_len), so the token
        budget is cut to what the longest prompt leaves.
        """
        from molgen3D.evaluation import training_probe

        v = self.job_config.validation
        seed = self.settled.data_seed
        if self._references is None:
            self._references = training_probe.load_references(
                self.paths.valid_data, v.sample_conformers_molecules, seed
            )
            self._sampling_tokenizer = load_tokenizer(self.paths.tokenizer_dir)
        tokenizer = self._sampling_tokenizer
        longest_prompt = max(
            (len(tokenizer.encode(format_prompt(smiles), add_special_tokens=False)) for smiles, _ in self._references),
            default=0,
        )
        budget = min(v.sample_max_new_tokens, self.settled.seq_len - longest_prompt)
        if budget < 1:
            logger.warning(f"conformer sampling skipped: a prompt of {longest_prompt} tokens fills training.seq_len")
            return {}
        device = torch.device(utils.device_type)
        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        state = full_state_dict(model, keep=rank0)  # a collective: every rank gathers, rank 0 keeps
        if not rank0:
            return {}
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        hf_model = hf_model_for_probe(state, model.model_args, self.pad_id, device=device, dtype=dtype)
        del state
        result = training_probe.sample_and_score(
            None,
            tokenizer,
            self._references,
            samples_per_molecule=v.sample_conformers_per_molecule,
            max_new_tokens=budget,
            temperature=v.sample_temperature,
            seed=seed,
            device=device,
            hf_model=hf_model,
        )
        del hf_model
        return {f"validation_metrics/{name}": value for name, value in result.items()}

    # --- the Trainer's entry point -------------------------------------------------------

    def validate(self, model_parts: list[nn.Module], step: int) -> None:
        assert len(model_parts) == 1, "molgen_qwen3 has one model part (no pipeline parallelism)"
        model = model_parts[0]
        model.eval()
        try:
            extra = self.sample_conformers(model) if self.sampling_due(step) else {}
            if self.loss_due(step):
                loss, batches, tokens = self.validation_loss(model)
                extra["validation_metrics/batches"] = batches
                extra["validation_metrics/tokens"] = tokens
                self.metrics_processor.log_validation(loss=loss, step=step, extra_metrics=extra)
            else:
                self.metrics_processor.log_sampling(step, extra)
        finally:
            model.train()


def build_molgen_validator(**kwargs: Any) -> MolGenValidator:
    """TrainSpec.build_validator_fn (the Trainer passes everything by keyword)."""
    return MolGenValidator(**kwargs)

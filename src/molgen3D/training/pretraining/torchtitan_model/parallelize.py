"""Data parallelism for `molgen_qwen3`: FSDP that copes with the tied LM head (and with gloo).

TorchTitan's `parallelize_qwen3` shards `tok_embeddings` and `[norm, output]` in separate
FSDP groups. With the LM head tied to the embedding (every MolGen flavor), torch 2.13's
`fully_shard` rejects that on any device ("Parameter ... is shared with a parameter already
managed by another FSDP group"), so the tied pair goes into ONE group here. On gloo (CPU),
which has no `ReduceOp.PREMUL_SUM`, every FSDP module is also told to reduce with plain
SUM; the gradient divide factor is 1 anyway (the loss is already divided by the global
token count), so the result is the same.

Supported: FSDP, HSDP, DDP, or none; activation checkpointing; torch.compile. Tensor,
context, expert and pipeline parallelism are rejected with the option to change.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

from torchtitan.config import TORCH_DTYPE_MAP, JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.activation_checkpoint import apply_ac
from torchtitan.models.llama3.infra.parallelize import apply_ddp
from torchtitan.models.llama4.infra.parallelize import apply_compile
from torchtitan.models.qwen3.infra.parallelize import _op_sac_save_list
from torchtitan.tools.logging import logger

from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.device_check import check_device

_UNSUPPORTED = (
    ("tp_enabled", "parallelism.tensor_parallel_degree"),
    ("cp_enabled", "parallelism.context_parallel_degree"),
    ("ep_enabled", "parallelism.expert_parallel_degree"),
    ("pp_enabled", "parallelism.pipeline_parallel_degree"),
)


def _reshard_after_forward(policy: str, pp_enabled: bool) -> bool:
    if policy == "always":
        return True
    if policy == "never":
        return False
    if policy == "default":
        return not pp_enabled
    raise ValueError(f'parallelism.fsdp_reshard_after_forward = {policy!r}: expected "default", "always" or "never"')


def uses_gloo() -> bool:
    """True when the default process group runs on gloo (the CPU backend)."""
    return dist.is_initialized() and dist.get_backend() == "gloo"


def apply_fsdp_tied(
    model: nn.Module,
    dp_mesh,
    *,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    reshard_after_forward_policy: str = "default",
    cpu_offload: bool = False,
    force_sum_reduction: bool = False,
) -> None:
    """FSDP2 per transformer block; embedding, final norm and (tied) output share one group."""
    config = {"mesh": dp_mesh, "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)}
    if cpu_offload:
        config["offload_policy"] = CPUOffloadPolicy()
    reshard = _reshard_after_forward(reshard_after_forward_policy, pp_enabled=False)
    for block in model.layers.values():
        fully_shard(block, **config, reshard_after_forward=reshard)
    ends = [model.tok_embeddings, model.norm, model.output]
    if getattr(model.model_args, "enable_weight_tying", False):
        # The embedding runs first and the tied output last: the group stays gathered
        # through the forward either way, so keep it gathered for the backward too.
        fully_shard(ends, **config, reshard_after_forward=reshard_after_forward_policy == "always")
    else:
        fully_shard(model.tok_embeddings, **config, reshard_after_forward=reshard)
        fully_shard(ends[1:], **config, reshard_after_forward=reshard_after_forward_policy == "always")
    fully_shard(model, **config)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # TorchTitan divides the loss by the global number of valid tokens itself.
            module.set_gradient_divide_factor(1.0)
            if force_sum_reduction:
                module.set_force_sum_reduction_for_comms(True)


def parallelize_molgen_qwen3(model: nn.Module, parallel_dims: ParallelDims, job_config: JobConfig) -> nn.Module:
    """TrainSpec.parallelize_fn: AC, compile, then FSDP/HSDP (tied-aware) or DDP."""
    for flag, option in _UNSUPPORTED:
        if getattr(parallel_dims, flag):
            raise NotImplementedError(f"molgen_qwen3 supports data parallelism only (FSDP/HSDP/DDP); set {option} = 1")
    # The runner checks this before anything is built; TorchTitan's own entry point reaches only here.
    run = getattr(job_config, "molgen_run", None)
    check_device(job_config.model.flavor, bool(getattr(run, "allow_cpu", False)), not patches.is_cpu_run())
    compile_model = job_config.compile.enable and "model" in job_config.compile.components
    if job_config.activation_checkpoint.mode != "none":
        apply_ac(
            model,
            job_config.activation_checkpoint,
            model_compile_enabled=compile_model,
            op_sac_save_list=_op_sac_save_list,
            base_folder=job_config.job.dump_folder,
        )
    if compile_model:
        apply_compile(model, job_config.compile, ep_enabled=False)

    if parallel_dims.fsdp_enabled:
        names = ["dp_replicate", "fsdp"] if parallel_dims.dp_replicate_enabled else ["fsdp"]
        param_dtype = TORCH_DTYPE_MAP[job_config.training.mixed_precision_param]
        if patches.is_cpu_run():
            param_dtype = torch.float32  # the CPU layer warns once when bf16 was asked for
        force_sum = uses_gloo()
        apply_fsdp_tied(
            model,
            parallel_dims.get_mesh(names),
            param_dtype=param_dtype,
            reduce_dtype=TORCH_DTYPE_MAP[job_config.training.mixed_precision_reduce],
            reshard_after_forward_policy=job_config.parallelism.fsdp_reshard_after_forward,
            cpu_offload=job_config.training.enable_cpu_offload,
            force_sum_reduction=force_sum,
        )
        logger.info(
            f"Applied {'HSDP' if parallel_dims.dp_replicate_enabled else 'FSDP'} to the model "
            f"(tied embedding/output in one group{', SUM-only reductions for gloo' if force_sum else ''})"
        )
    elif parallel_dims.dp_replicate_enabled:
        apply_ddp(model, parallel_dims.get_mesh("dp_replicate"), enable_compile=compile_model)
    return model

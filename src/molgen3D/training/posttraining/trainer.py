"""GRPO post-training with TRL's `GRPOTrainer`, its rollouts drawn by the project's constrained sampler.

TRL 1.16's `rollout_func` hook hands each process its prompts (each molecule's prompt repeated
group_size times, whole groups per process) and takes back prompt ids, completion ids and extra
per-rollout fields; `env_mask` limits the loss to the tokens the model chose (coordinates). The
sampler and the scorer run inside that hook; each reward term is a reward function reading its
field, weighted by TRL (`reward_weights`), so TRL logs every term. TRL computes the group-relative
advantages, the clipped policy loss and the KL to the start model (`beta`); transformers' Trainer
(on accelerate) runs data parallel, checkpoints (model, optimizer, scheduler, RNG, step), resumes,
shows the progress bar and reports to TensorBoard and WandB.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from molgen3D.chem.tagged_text import format_prompt
from molgen3D.generation.generate import with_model_format
from molgen3D.generation.model_io import model_context, model_directory, resolve_device
from molgen3D.scoring.rmsd import RmsdPool
from molgen3D.generation.sampling import DEFAULT_PRECISION, SamplingConfig
from molgen3D.files import write_json_atomic
from molgen3D.training.posttraining.checkpoint import (
    CompleteCheckpoints,
    StopAfter,
    complete_model_folder,
    resume_checkpoint,
)
from molgen3D.training.posttraining.config import PosttrainConfig
from molgen3D.training.posttraining.references import training_references
from molgen3D.training.posttraining.rollout import RolloutScorer, smiles_of_prompt, term_weights

FINAL = "final"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _reward_function(name: str, scorer: RolloutScorer, log_stats: bool):
    """TRL reward function for one term: reads the rollout's precomputed value (and logs the step's stats once)."""

    def reward(prompts, completions, **kwargs):
        if log_stats and "log_metric" in kwargs:
            for key, value in scorer.last_stats.items():
                if math.isfinite(value):  # stereo_ok is NaN when no prompt of the step specifies stereo
                    kwargs["log_metric"](key, value)
        return kwargs[f"reward_{name}"]

    reward.__name__ = name
    return reward


def grpo_args(cfg: PosttrainConfig, device) -> "GRPOConfig":  # noqa: F821
    """TRL's GRPOConfig from the TOML config (one generation per optimizer step)."""
    from trl import GRPOConfig

    rollouts = cfg.rollout.group_size * cfg.rollout.molecules_per_step
    micro = cfg.optimizer.micro_batch or rollouts
    weights = term_weights(cfg.reward)
    cpu = device.type == "cpu"
    return GRPOConfig(
        output_dir=str(cfg.out),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=rollouts // micro,
        steps_per_generation=rollouts // micro,
        num_generations=cfg.rollout.group_size,
        max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_steps=cfg.steps,
        learning_rate=cfg.optimizer.lr,
        lr_scheduler_type=cfg.optimizer.schedule,
        warmup_steps=cfg.optimizer.warmup_steps,
        weight_decay=cfg.optimizer.weight_decay,
        max_grad_norm=cfg.optimizer.max_grad_norm,
        beta=cfg.optimizer.kl_beta,
        epsilon=cfg.optimizer.epsilon,
        num_iterations=cfg.optimizer.num_iterations,
        loss_type=cfg.optimizer.loss_type,
        scale_rewards=cfg.optimizer.scale_rewards,
        reward_weights=list(weights.values()),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=list(cfg.report_to) or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=cpu,
        bf16=not cpu,
        ddp_backend="gloo" if cpu and _world_size() > 1 else None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        log_completions=False,
        disable_dropout=True,
    )


def build_trainer(cfg: PosttrainConfig, pool: RmsdPool, *, stop_after: int | None = None):
    """(GRPOTrainer, RolloutScorer, start model folder) for `cfg`."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_DIR"] = str(Path(cfg.out))  # each run logs into its own folder
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(cfg.out) / "tb")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = model_directory(cfg.model)
    device = resolve_device(cfg.device)
    references = training_references(cfg.dataset, cfg.molecules, cfg.max_molecules, cfg.reward.max_references)
    per_step = cfg.rollout.molecules_per_step * _world_size()
    if len(references) < per_step:
        raise ValueError(
            f"[posttrain] {len(references)} training molecules, fewer than molecules_per_step x processes = "
            f"{per_step}; lower [posttrain.rollout] molecules_per_step"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(start), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(start), dtype=torch.float32, local_files_only=True)
    sampling = with_model_format(
        SamplingConfig(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            batch_size=cfg.rollout.batch_size,
            seed=cfg.rollout.seed,
            stereo=cfg.rollout.stereo,
            geometry=cfg.rollout.geometry,
        ),
        start,
        DEFAULT_PRECISION,
    )
    scorer = RolloutScorer(tokenizer, references, sampling, cfg.reward, pool)
    context = model_context(model)

    def rollout_func(prompts, trainer):
        smiles = [smiles_of_prompt(p) for p in prompts]
        split = {s: n for s, n in Counter(smiles).items() if n % cfg.rollout.group_size}
        if split:  # the coverage term scores a molecule's whole group together
            raise RuntimeError(f"a rollout group was split across processes: {split}")
        policy = trainer.accelerator.unwrap_model(trainer.model)
        batch = scorer.rollouts(policy, smiles, trainer.state.global_step, context)
        fields = {f"reward_{name}": values for name, values in batch.terms.items()}
        return {
            "prompt_ids": batch.prompt_ids,
            "completion_ids": batch.completion_ids,
            "logprobs": None,
            "env_mask": batch.mask,
            **fields,
        }

    dataset = Dataset.from_dict({"prompt": [format_prompt(r.smiles) for r in references]})
    callbacks = [CompleteCheckpoints(start)]
    if stop_after or cfg.max_minutes:
        callbacks.append(StopAfter(stop_after, cfg.max_minutes))
    names = list(term_weights(cfg.reward))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[_reward_function(n, scorer, log_stats=(i == 0)) for i, n in enumerate(names)],
        args=grpo_args(cfg, device),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        rollout_func=rollout_func,
    )
    return trainer, scorer, start


def run_posttrain(cfg: PosttrainConfig, *, stop_after: int | None = None) -> dict:
    """Train (resuming from the newest checkpoint when `cfg.resume`), save `out/final`, return a summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    with RmsdPool(workers=cfg.rmsd_workers, pair_timeout_s=cfg.reward.rmsd_timeout) as pool:
        trainer, scorer, start = build_trainer(cfg, pool, stop_after=stop_after)
        resume = resume_checkpoint(out) if cfg.resume else None
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    summary = {
        "start_model": str(start),
        "resumed_from": str(resume) if resume else None,
        "steps": trainer.state.global_step,
        "seconds": round(time.perf_counter() - begin, 1),
        "config": asdict(replace(cfg)),
        "log_history": trainer.state.log_history,
    }
    if trainer.state.global_step >= cfg.steps or (cfg.max_minutes and not stop_after):
        final = out / FINAL
        trainer.save_model(str(final))  # every rank calls it; rank 0 writes
        if trainer.is_world_process_zero():
            complete_model_folder(final, start)
        summary["final_model"] = str(final)
    if trainer.is_world_process_zero():
        write_json_atomic(out / "summary.json", summary)
    return summary

"""The post-training TOML: `[posttrain]` and its sub-tables, each a dataclass with typed defaults.

Read with `load_config(path)`: unknown keys (closest valid key named) and wrong types are errors
naming `[section] key (file:line)` and the fix, as in the pretraining TOML (the same checks).
Every option is documented in docs/CONFIG.md.
"""

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.toml_checks import check_toml_keys, locate


@dataclass
class RolloutSettings:
    """`[posttrain.rollout]`: how rollouts are drawn with the project's constrained sampler."""

    group_size: int = 8
    """Rollouts per molecule (GRPO's group: advantages are relative to the group's mean)."""
    molecules_per_step: int = 4
    """Molecules per optimizer step on each process; rollouts per step = this x group_size x processes."""
    temperature: float = 1.0
    """Sampling temperature (also the temperature of the log-probabilities the loss uses)."""
    top_p: float = 1.0
    """Nucleus mass of the sampler (1.0 = off)."""
    max_new_tokens: int = 1500
    """Cap on generated tokens per rollout; a rollout that reaches it is invalid (gets the floor)."""
    batch_size: int = 32
    """Rollouts decoded together by the sampler."""
    seed: int = 0
    """Sampling seed; rollout k of a molecule at step s draws from a generator seeded by (seed, s, molecule, k)."""
    stereo: bool = True
    """Rollouts written with the prompt's stereo by construction (as `generate`; false: the model's choice)."""
    geometry: bool = False
    """Rollouts written within the molecule's distance-geometry bounds, as `generate` does by default (off here:
    rollouts cost about half as much, and the reward judges the model's own numbers)."""


@dataclass
class OptimizerSettings:
    """`[posttrain.optimizer]`: AdamW, the schedule and GRPO's loss options."""

    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    schedule: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant_with_warmup"
    """Learning-rate schedule over `steps` (transformers' schedulers)."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    kl_beta: float = 0.04
    """Weight of the KL penalty to the start model (0 = none, and no reference model is kept)."""
    epsilon: float = 0.2
    """PPO-style clipping range of the probability ratio."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    """TRL's loss normalisation (dapo: token-level mean over the whole batch)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the reward std of the group, of the batch, or not at all."""
    micro_batch: int = 0
    """Rollouts per forward/backward pass (gradient accumulation); 0 = all of a process's rollouts at once."""
    num_iterations: int = 1
    """Optimizer steps on each batch of rollouts before new ones are drawn (GRPO's mu; the clipped ratio keeps the
    later steps near the policy that sampled). Rollouts are the costly part on a CPU; `save_steps` must be a
    multiple, so a resumed run restarts at a fresh batch."""


@dataclass
class RewardSettings:
    """`[posttrain.reward]`: the terms of the reward and their weights."""

    floor: float = -1.0
    """Reward of an invalid rollout (failed sample, no finite RMSD, PoseBusters failure when gated)."""
    quality_weight: float = 1.0
    """Weight of exp(-d / sigma), d = RMSD to the nearest reference."""
    sigma: float = 1.0
    """Length scale of the quality term (A)."""
    coverage_weight: float = 1.0
    """Weight of the marginal soft-coverage credit."""
    delta: float = 0.75
    """Coverage threshold of the soft hit kernel (A)."""
    rho: float = 0.1
    """Softness of the hit kernel sigmoid((delta - D) / rho) (A)."""
    coverage_credit: Literal["marginal", "shapley"] = "marginal"
    """marginal: K_ij prod_(l != i)(1 - K_lj); shapley: Shapley shares, which sum to the soft coverage exactly."""
    depth_weight: float = 0.0
    """w of the depth multiplier 1 + w clip(1 - D / delta, 0, 1) on the coverage credit (0 = off)."""
    precision_weight: float = 0.0
    """Weight of sigmoid((delta - d) / rho) (0 = off)."""
    matching_weight: float = 0.0
    """Weight of the matching credit: a rollout's lead in exp(-D / sigma) over the second-nearest rollout of each
    reference it is nearest to, averaged over references (aimed at MAT-R; 0 = off)."""
    stereo_weight: float = 0.5
    """Weight of stereo correctness (1 when the coordinates realise the prompt's stereo, else 0)."""
    posebusters_weight: float = 0.25
    """Weight of the share of `posebusters_checks` a rollout passes (0 = PoseBusters is not run)."""
    posebusters_checks: list[str] = field(
        default_factory=lambda: [
            "bond_lengths",
            "bond_angles",
            "internal_steric_clash",
            "aromatic_ring_flatness",
            "non-aromatic_ring_non-flatness",
            "double_bond_flatness",
        ]
    )
    """PoseBusters `mol_fast` checks counted (cheap geometry checks; `mol_fast` leaves out the energy check)."""
    posebusters_gate: bool = False
    """A rollout failing any of `posebusters_checks` is invalid (gets the floor)."""
    mmff_weight: float = 0.0
    """Weight of -tanh(E / (heavy atoms x mmff_scale)), E = MMFF94 energy with hydrogens placed (0 = off)."""
    mmff_scale: float = 10.0
    """kcal/mol per heavy atom at which the MMFF term reaches -tanh(1)."""
    max_references: int = 30
    """Reference conformers per molecule kept from the training split."""
    rmsd_timeout: float = 10.0
    """Seconds one RMSD pair may take before it counts as no match."""


@dataclass
class PosttrainConfig:
    """`[posttrain]`: what to start from, what to train on, how long, where to write."""

    model: str = ""
    """Start model: an HF folder from `molgen3d export-hf`, an alias, or a training step (converted as generate
    does)."""
    dataset: str = ""
    """Prepared data set root (with manifest.json); references are its train split only."""
    out: str = "outputs/posttrain"
    """Run folder: checkpoints (checkpoint-N), the final model folder (final/), logs (tb/, wandb/)."""
    molecules: list[str] = field(default_factory=list)
    """Train only on these SMILES (each must be in the train split; a valid/test molecule is refused); [] = all."""
    max_molecules: int = 0
    """Use the first N train molecules (after `molecules`); 0 = all."""
    steps: int = 100
    """Optimizer steps (the learning-rate schedule spans them)."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this many minutes of training even before `steps`; 0 = no limit."""
    seed: int = 0
    """Seed of the molecule order and of torch (model init is the start model's)."""
    save_steps: int = 50
    """Checkpoint every N steps (model + optimizer + scheduler + RNG + step); the last step is always saved."""
    save_total_limit: int = 3
    """Checkpoints kept (oldest deleted first)."""
    resume: bool = True
    """Continue from the newest checkpoint in `out` when there is one."""
    logging_steps: int = 1
    """Log metrics every N steps."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard", "wandb"])
    """Metric sinks (tensorboard, wandb; WandB runs offline unless WANDB_MODE says otherwise); [] = none."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 0
    """torch CPU threads; 0 = torch's choice."""
    rmsd_workers: int = 1
    """RMSD worker processes."""
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    """[posttrain.rollout]."""
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    """[posttrain.optimizer]."""
    reward: RewardSettings = field(default_factory=RewardSettings)
    """[posttrain.reward]."""


@dataclass
class _File:
    posttrain: PosttrainConfig = field(default_factory=PosttrainConfig)


def _positive(cfg: PosttrainConfig, path: str) -> None:
    checks = [
        ("posttrain.model", bool(cfg.model), "set it (or pass --model) to the exported model folder"),
        ("posttrain.dataset", bool(cfg.dataset), "set it to the prepared data set root"),
        ("posttrain.steps", cfg.steps >= 1, "use at least 1"),
        ("posttrain.save_steps", cfg.save_steps >= 1, "use at least 1"),
        ("posttrain.rollout.group_size", cfg.rollout.group_size >= 2, "GRPO needs at least 2 rollouts per group"),
        ("posttrain.rollout.molecules_per_step", cfg.rollout.molecules_per_step >= 1, "use at least 1"),
        ("posttrain.rollout.temperature", cfg.rollout.temperature > 0, "use a temperature > 0"),
        ("posttrain.rollout.top_p", 0 < cfg.rollout.top_p <= 1, "use a value in (0, 1]"),
        ("posttrain.optimizer.lr", cfg.optimizer.lr > 0, "use a learning rate > 0"),
        ("posttrain.optimizer.kl_beta", cfg.optimizer.kl_beta >= 0, "use 0 (off) or a positive weight"),
        ("posttrain.reward.sigma", cfg.reward.sigma > 0, "use a length > 0"),
        ("posttrain.reward.rho", cfg.reward.rho > 0, "use a softness > 0"),
        ("posttrain.reward.delta", cfg.reward.delta > 0, "use a threshold > 0"),
    ]
    rollouts = cfg.rollout.group_size * cfg.rollout.molecules_per_step
    micro = cfg.optimizer.micro_batch
    checks.append(
        (
            "posttrain.optimizer.micro_batch",
            micro >= 0 and (micro == 0 or rollouts % micro == 0),
            f"use 0 or a divisor of group_size x molecules_per_step = {rollouts}",
        )
    )
    mu = cfg.optimizer.num_iterations
    checks.append(("posttrain.optimizer.num_iterations", mu >= 1, "use at least 1"))
    checks.append(
        (
            "posttrain.save_steps",
            mu < 1 or cfg.save_steps % mu == 0,
            f"use a multiple of [posttrain.optimizer] num_iterations = {mu} (a checkpoint between two steps on "
            "the same rollouts could not resume exactly)",
        )
    )
    for key, ok, fix in checks:
        if not ok:
            value = eval_key(cfg, key)
            raise MolGenConfigError(key, f"invalid value {value!r}", fix, where=locate(path, key) if path else "")


def eval_key(cfg: PosttrainConfig, key: str):
    """The value of a dotted `posttrain.x.y` key."""
    value = cfg
    for part in key.split(".")[1:]:
        value = getattr(value, part)
    return value


def _build(cls, values: dict):
    kwargs = {}
    for name, value in values.items():
        sub = cls.__dataclass_fields__[name].default_factory if isinstance(value, dict) else None
        kwargs[name] = _build(sub, value) if sub is not None else value
    return cls(**kwargs)


def load_config(path: str | Path, overrides: dict | None = None) -> PosttrainConfig:
    """The checked `[posttrain]` config of a TOML file; `overrides` ({"steps": 3, "rollout": {...}}) win."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MolGenConfigError("posttrain", f"{path} is not valid TOML ({exc})", "fix the TOML syntax") from None
    if "posttrain" not in values:
        raise MolGenConfigError("posttrain", f"{path} has no [posttrain] section", "add one (docs/CONFIG.md)")
    section = _merge(values["posttrain"], overrides or {})
    check_toml_keys({"posttrain": section, **{k: v for k, v in values.items() if k != "posttrain"}}, _File, path)
    cfg = _build(PosttrainConfig, section)
    _positive(cfg, str(path))
    return cfg


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out

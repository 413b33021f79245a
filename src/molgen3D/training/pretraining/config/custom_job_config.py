"""MolGen3D's extension of TorchTitan 0.2.2's JobConfig: the dataclasses only.

TorchTitan's `ConfigManager` merges the `JobConfig` below into its own, section by section
(`[job] custom_config_module` names this module). Note: no `from __future__ import annotations`
here: the manager merges nested sections only when field types are real classes.

Reading a TOML is `config/loading.py`; the general key/type checks are `config/toml_checks.py`;
aliases become absolute paths in `config/resolve_paths.py`; settings stated twice have one source
(`config/twins.py`); `config/finalize.py` checks the merged config once, attaches the frozen
`MolGenResolved` every consumer reads, and writes TorchTitan's copy once (`write_titan_config`).
docs/CONFIG.md documents every option.
"""

from dataclasses import dataclass, field
from typing import Optional

import tyro

from molgen3D.training.pretraining.wsds import WSDSSchedule

THIS_MODULE = "molgen3D.training.pretraining.config.custom_job_config"
TRAIN_SPEC_NAME = "molgen_qwen3"
TRAIN_SPEC_MODULE = "molgen3D.training.pretraining.torchtitan_model.qwen3_custom"
DATASET_NAME = "molgen_jsonl"
INIT_MODES = ("scratch", "hf_pretrain", "resume")
DEFAULT_LR = 8e-4
DEFAULT_WARMUP_STEPS = 200
DEFAULT_SEED = 1234


class MolGenConfigError(ValueError):
    """A config value is missing, malformed or conflicts with another; the message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str, where: str = "") -> None:
        self.key = key
        section, _, name = key.rpartition(".")
        label = f"[{section}] {name}" if section else f"[{name}]"
        located = f" ({where})" if where else ""
        super().__init__(f"{label}{located}: {problem}. Fix: {fix}")


@dataclass
class MolGenRunConfig:
    """`[molgen_run]`: how the model is initialised and which tokenizer it uses."""

    init_mode: str = ""
    """Required. "scratch" (random init), "hf_pretrain" (HF weights from base_model_tag) or "resume" (a previous
    run's DCP)."""

    tokenizer_tag: str = ""
    """Required. The tokenizer directory: a `tokenizers:` alias or a path. The only setting that decides the
    tokenizer."""

    base_model_tag: Optional[str] = None
    """HF model folder for init_mode = "hf_pretrain": a `base_paths:`/`models:` alias or a path (scratch ignores it)."""

    resume_run_path_tag: Optional[str] = None
    """For init_mode = "resume": the run dir, its checkpoint folder, or one `step-N` in it (alias or path)."""

    run_name: Optional[str] = None
    """Force the run name (else $WANDB_RUN_NAME, else YYMMDD-HHMM-<4 hex>-<description>)."""

    logs_root: str = "base_paths:outputs_root"
    """Root of pretrain_logs/<run-name>/ (runtime.log, tb/): a base_paths key, an alias or a path."""

    allow_cpu: bool = False
    """Let a GPU-sized flavor (above "tiny"/"small") run on the CPU when no accelerator works (else an error)."""

    reinit_tag_rows: str = "auto"
    """Tag-token embedding rows after the initial load: "auto" (scratch, or a base without trained tag rows),
    "always", "never"."""


@dataclass
class MolGenDataConfig:
    """`[molgen_data]`: the packed JSONL dataloader (JsonlTaggedPackedDataset)."""

    train_path_key: Optional[str] = None
    """Derived from training.dataset_path (the source; config/twins.py): leave it out, or name the same place."""

    valid_path_key: Optional[str] = None
    """Derived from validation.dataset_path (the source): leave it out, or name the same place."""

    tokenizer_key: Optional[str] = None
    """Derived from molgen_run.tokenizer_tag (the source): leave it out, or name the same directory."""

    min_emb_len: int = 16
    """Drop units whose embedded (coordinate) text is shorter than this many characters."""

    shuffle_lines: bool = True
    """Shuffle the global line order every epoch (seeded, identical on all ranks)."""

    infinite: bool = True
    """Start a new epoch when the split is exhausted instead of ending the stream."""

    seed: Optional[int] = None
    """Dataloader seed; None -> training.seed -> 1234."""

    num_workers: Optional[int] = None
    """Dataloader worker processes (the source of training.dataloader.num_workers); None -> that (0)."""

    pin_memory: Optional[bool] = None
    """Pin batches in page-locked memory (GPU runs); None -> training.dataloader.pin_memory (false)."""

    prefetch_factor: Optional[int] = None
    """Batches prefetched per worker (needs num_workers > 0); None -> training.dataloader.prefetch_factor."""

    persistent_workers: Optional[bool] = None
    """Keep workers alive across epochs (needs num_workers > 0); None -> training.dataloader.persistent_workers."""

    lookahead_limit: int = 100
    """How many pending units the packer inspects to fill each sequence."""

    truncate_overflow_units: bool = True
    """A unit longer than seq_len - 1 tokens is truncated (true) or dropped (false); either way it is counted."""


@dataclass
class WSDSConfig:
    """`[wsds_scheduler]`: warmup, then stable/decay mini runs ending at each checkpoint (see wsds.py)."""

    enable: bool = True
    """Use WSDS; false falls back to TorchTitan's scheduler from [lr_scheduler]."""

    warmup_steps: Optional[int] = None
    """Linear warmup steps, the source of lr_scheduler.warmup_steps; None -> that one."""

    checkpoints: list[int] = field(default_factory=list)
    """Decay ends T1 < T2 < ... <= training.steps (each an annealed model); empty -> [training.steps]."""

    lr_max: Optional[float] = None
    """Derived from optimizer.lr (the source): leave it out; given alone, it sets both."""

    lr_min: float = 0.0
    """Learning rate reached exactly at each decay end."""

    decay_frac: float = 0.1
    """Decay length as a fraction of each checkpoint step T (D = max(1, int(T * decay_frac)))."""

    decay_steps: Optional[int] = None
    """Fixed decay length in steps; overrides decay_frac when set."""

    save_at_decay_ends: bool = True
    """Save a checkpoint at every decay end, whatever checkpoint.interval is."""


@dataclass
class Checkpoint:
    """MolGen3D extras of `[checkpoint]`."""

    save_hf_per_checkpoint: bool = False
    """Also write a complete Hugging Face folder next to every DCP save (not only the last)."""

    checksums: bool = True
    """Write a sha256 manifest into every saved step and verify it at load (a mismatch falls back to an older step)."""


@dataclass
class Validation:
    """MolGen3D defaults and conformer-sampling extras of `[validation]`."""

    dataset: str = DATASET_NAME
    """Validation data format; only "molgen_jsonl" is supported."""

    seq_len: Optional[int] = None
    """Validation packing length; None -> training.seq_len (it may not exceed it)."""

    sample_conformers_freq: int = 0
    """Every N steps, sample conformers and score them (0 = off)."""

    sample_conformers_molecules: int = 4
    """Validation molecules to sample conformers for."""

    sample_conformers_per_molecule: int = 2
    """Conformers sampled per molecule."""

    sample_max_new_tokens: int = 1024
    """Token budget of one sampled conformer."""

    sample_temperature: float = 1.0
    """Sampling temperature (1.0 = the model's distribution)."""


@dataclass
class Optimizer:
    """`[optimizer]` with an unset learning rate allowed."""

    lr: Optional[float] = None
    """Learning rate, the source of wsds_scheduler.lr_max; None -> wsds_scheduler.lr_max -> 8e-4."""


@dataclass
class LRScheduler:
    """`[lr_scheduler]` with an unset warmup allowed, plus the WSDS schedule finalize attaches."""

    warmup_steps: Optional[int] = None
    """Derived from wsds_scheduler.warmup_steps (the source): leave it out; None and no WSDS warmup -> 200."""

    wsds: tyro.conf.Suppress[Optional[WSDSSchedule]] = None
    """Internal: the run's WSDSSchedule when WSDS is enabled, written by write_titan_config from molgen_resolved
    (TorchTitan hands the LR scheduler builder only this section); not a TOML key."""


@dataclass
class Training:
    """MolGen3D defaults and extras of `[training]`."""

    dataset: str = DATASET_NAME
    """Training data format; only "molgen_jsonl" is supported."""

    seed: Optional[int] = None
    """Base seed, the source of debug.seed (TorchTitan's RNG seed); None -> debug.seed -> 1234."""

    global_batch_rounding: str = "exact"
    """"exact": global_batch_size must divide by local_batch_size x data-parallel ranks; "up": round it up
    to the next multiple."""

    max_nonfinite_loss_steps: int = 3
    """Consecutive steps with a non-finite loss/gradient (each skipped, weights untouched) before the run
    stops; 0 = never stop."""


@dataclass
class Model:
    """MolGen3D defaults of `[model]`."""

    name: str = TRAIN_SPEC_NAME
    """TrainSpec name; "molgen_qwen3" is registered by experimental.custom_import."""

    hf_assets_path: str = ""
    """HF assets folder (its safetensors index shards HF saves); "" -> molgen_run.base_model_tag if set (not for
    init_mode = "scratch"), else none."""

    document_masking: bool = False
    """Block-causal attention: each packed unit attends only to itself (cut after every <|endoftext|>)."""

    attention_backend: str = "auto"
    """With document_masking: "auto" (flex on CUDA, SDPA with an explicit mask on CPU), "flex", "varlen" or "sdpa"."""


@dataclass
class Parallelism:
    """MolGen3D extra of `[parallelism]`."""

    hsdp_across_nodes: bool = False
    """HSDP: shard within a node (its GPUs), replicate across nodes; sets the replicate/shard degrees at launch."""


@dataclass
class Experimental:
    """MolGen3D default of `[experimental]`."""

    custom_import: str = TRAIN_SPEC_MODULE
    """Module imported by the Trainer first; it registers the molgen_qwen3 TrainSpec."""


@dataclass
class JobConfig:
    """Merged into TorchTitan's JobConfig by config/manager.py."""

    molgen_run: MolGenRunConfig = field(default_factory=MolGenRunConfig)
    molgen_data: MolGenDataConfig = field(default_factory=MolGenDataConfig)
    wsds_scheduler: WSDSConfig = field(default_factory=WSDSConfig)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    validation: Validation = field(default_factory=Validation)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_scheduler: LRScheduler = field(default_factory=LRScheduler)
    training: Training = field(default_factory=Training)
    model: Model = field(default_factory=Model)
    parallelism: Parallelism = field(default_factory=Parallelism)
    experimental: Experimental = field(default_factory=Experimental)

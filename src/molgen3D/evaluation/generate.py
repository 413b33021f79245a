"""`molgen3d generate`: sample conformers for the molecules of a SMILES file from a trained model.

The model is a Hugging Face folder (what `molgen3d export-hf` writes) or an alias to one; a
TorchTitan DCP step directory is exported to a temporary folder first. Sampling is
structure-constrained by default (every sample has the prompt's graph); failures are counted
by reason in the printed summary and in `<out stem>.summary.json`, never dropped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tyro

from molgen3D.datasets.skips import SkipLog
from molgen3D.evaluation.sample_io import (
    MoleculeInput,
    failure_report,
    read_smiles_inputs,
    summary_path,
    write_samples,
)
from molgen3D.evaluation.sampling import (
    DEFAULT_PRECISION,
    SampleOutcome,
    SamplingConfig,
    run_with_cache,
    sample_molecules,
)


class ModelLoadError(ValueError):
    """The --model path or alias is not a loadable model; the message says what to run."""


def load_model(model: str | Path, tokenizer: str | Path | None = None):
    """(model in eval mode on CPU, tokenizer, model dir) from an HF folder, an alias, or a DCP step dir (exported)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from molgen3D.config.paths import resolve_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = resolve_path(str(model), default_section="models")
    if not directory.is_dir():
        raise ModelLoadError(f"--model {model!r} resolves to {directory}, which is not a directory")
    if not (directory / "config.json").is_file():
        if not (directory / ".metadata").is_file() and not any(directory.glob("*.safetensors")):
            raise ModelLoadError(
                f"{directory} has no config.json (not a Hugging Face folder) and is not a saved training step; "
                "pass the folder written by `molgen3d export-hf`"
            )
        from molgen3D.hf.export import export_step

        target = Path(tempfile.mkdtemp(prefix="molgen3d-export-"))
        print(f"{directory} is a training checkpoint step: exporting it to {target}", file=sys.stderr)
        directory = export_step(directory, target, overwrite=True)
    lm = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, local_files_only=True).eval()
    if tokenizer is None:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    else:
        from molgen3D.tokenization.load import load_tokenizer

        tok = load_tokenizer(tokenizer)
    if lm.config.vocab_size < len(tok):
        raise ModelLoadError(
            f"{directory}: the model has {lm.config.vocab_size} embedding rows "
            f"but the tokenizer has {len(tok)} tokens; "
            "pair the model with the tokenizer it was trained with (--tokenizer)"
        )
    return lm, tok, directory


def sample_with_model(
    model, tokenizer, smiles: Sequence[str], counts: Sequence[int], cfg: SamplingConfig, *, progress: bool = False
) -> tuple[list[list[SampleOutcome]], float]:
    """Samples from a transformers causal LM (KV cache) and the wall time spent."""
    start = time.perf_counter()
    outcomes = sample_molecules(
        functools.partial(run_with_cache, model), tokenizer, smiles, counts, cfg, progress=progress
    )
    return outcomes, time.perf_counter() - start


@dataclass
class GenerateConfig:
    """Sample conformers for the molecules of a SMILES file."""

    model: str
    """HF model folder (from `molgen3d export-hf`) or an alias (`ckpts:...`, `models:...`); a DCP step dir is
    exported first."""
    smiles: Path
    """Molecules: .smi/.txt (`SMILES [name]` per line) or .csv/.tsv with a `smiles` column (optional `name`)."""
    out: Path
    """Output file: .sdf (valid samples; failures in the sidecar summary) or .jsonl (every sample)."""
    num_samples: int = 1
    """Samples per molecule."""
    tokenizer: str | None = None
    """Tokenizer dir or alias; default: the one in the model folder."""
    threads: int | None = None
    """torch CPU threads (1 is fastest for small models on a busy machine); default: torch's choice."""
    progress: bool = True
    """Show a progress bar on stderr."""
    sampling: tyro.conf.OmitArgPrefixes[SamplingConfig] = field(default_factory=SamplingConfig)
    """Sampling options."""

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {self.num_samples}")
        if Path(self.out).suffix.lower() not in (".sdf", ".jsonl"):
            raise ValueError(f"--out {self.out}: use a .sdf or .jsonl file")


def molecule_summaries(molecules: Sequence[MoleculeInput], outcomes: Sequence[Sequence[SampleOutcome]]) -> list[dict]:
    """Per molecule: requested and valid samples, failures by reason."""
    return [
        {
            "name": m.name, "smiles": m.smiles, "requested": len(samples),
            "valid": sum(o.mol is not None for o in samples),
            "failures": dict(Counter(o.failure for o in samples if o.failure is not None)),
        }
        for m, samples in zip(molecules, outcomes)
    ]


def generate(cfg: GenerateConfig) -> dict:
    """Sample, write the samples and the summary sidecar; return the summary."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    sampling = cfg.sampling
    if sampling.precision is None:
        sampling = replace(sampling, precision=DEFAULT_PRECISION)
    skips = SkipLog()
    molecules = read_smiles_inputs(cfg.smiles, skips)
    model, tokenizer, model_dir = load_model(cfg.model, cfg.tokenizer)
    outcomes, seconds = sample_with_model(
        model, tokenizer, [m.smiles for m in molecules], [cfg.num_samples] * len(molecules), sampling,
        progress=cfg.progress,
    )
    write_samples(cfg.out, molecules, outcomes)
    requested = sum(map(len, outcomes))
    valid = sum(o.mol is not None for samples in outcomes for o in samples)
    summary = {
        "model": str(model_dir),
        "smiles_file": str(cfg.smiles),
        "out": str(cfg.out),
        "samples_requested": requested,
        "samples_valid": valid,
        "validity": valid / requested if requested else None,
        "failures": failure_report(molecules, outcomes),
        "input_skipped": skips.as_dict(),
        "seconds": round(seconds, 3),
        "samples_per_second": requested / seconds if seconds > 0 else None,
        "settings": asdict(sampling),
        "molecules": molecule_summaries(molecules, outcomes),
    }
    summary_path(cfg.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"wrote {summary['samples_valid']} valid of {summary['samples_requested']} samples to {summary['out']} "
        f"({summary['seconds']:.1f} s, {summary['samples_per_second'] or 0:.2f} samples/s)",
    ]
    for reason, entry in summary["failures"].items():
        lines.append(f"  failed {reason}: {entry['count']} (e.g. {entry['examples'][0]})")
    for reason, entry in summary["input_skipped"].items():
        lines.append(f"  input skipped {reason}: {entry['count']} (e.g. {entry['examples'][0]})")
    lines.append(f"summary: {summary_path(Path(summary['out']))}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    try:
        cfg = tyro.cli(GenerateConfig, args=argv, prog="molgen3d generate")
        summary = generate(cfg)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        print(f"molgen3d generate: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0

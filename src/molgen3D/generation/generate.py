"""`molgen3d generate`: sample conformers for the molecules of a SMILES file from a trained model.

The model is a Hugging Face folder (what `molgen3d export-hf` writes) or an alias to one; a
TorchTitan DCP step directory is converted once into the cache (`molgen3D.files.cache_root()`) and reused. Sampling is
structure-constrained by default (every sample has the prompt's graph); failures are counted
by reason in the printed summary and in `<out stem>.summary.json`, never dropped.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import tyro

from molgen3D.datasets.skips import SkipLog
from molgen3D.files import write_json_atomic
from molgen3D.generation.input_checks import keep_fragments, nothing_to_sample, unseen_elements
from molgen3D.generation.sample_io import (
    MoleculeInput,
    read_smiles_inputs,
    summary_path,
    write_samples,
)
from molgen3D.scoring.geometry import mark_stereo
from molgen3D.scoring.hydrogens import add_hydrogens
from molgen3D.generation.model_io import ModelLoadError, model_directory, tokenizer_source
from molgen3D.generation.parallel import SamplerPool
from molgen3D.generation.sampling import DEFAULT_PRECISION, SamplingConfig
from molgen3D.scoring.outcome import SampleOutcome, failure_report


def with_model_format(sampling: SamplingConfig, model_dir: Path, default_precision: int) -> SamplingConfig:
    """`sampling` with the decimals and positions the model folder records (`coordinate_format.json`)."""
    from molgen3D.chem.coordinate_format import read_format, sampling_format

    decimals, positions = sampling_format(
        read_format(model_dir), sampling.precision, sampling.positions, str(model_dir), default_precision
    )
    return replace(sampling, precision=decimals, positions=positions)


@dataclass
class GenerateConfig:
    """Sample conformers for the molecules of a SMILES, GEOM CSV or SDF file."""

    model: str
    """HF model folder (from `molgen3d export-hf`) or an alias (`ckpts:...`, `models:...`);
    a DCP step dir is converted once into the cache."""
    smiles: Path
    """Molecules: .smi/.txt (`SMILES [name]`), .csv/.tsv with a `smiles` column (the GEOM test CSV
    `smiles,n_conformers,corrected_smiles` samples corrected_smiles), or a 3D .sdf."""
    out: Path
    """Output file: .sdf (valid samples; failures in the sidecar summary) or .jsonl (every sample)."""
    num_samples: int = 1
    """Samples per molecule."""
    samples_per_reference: int | None = None
    """K = this x L per molecule when the input gives L (GEOM CSV n_conformers, SDF records); 2 = the GEOM protocol."""
    tokenizer: str | None = None
    """Tokenizer dir or alias; default: the one in the model folder."""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda or cuda:N."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: auto = bf16 on CUDA, float32 on CPU."""
    workers: int = 1
    """Sampling processes (one per GPU on CUDA); the samples do not depend on it."""
    threads: int | None = None
    """torch CPU threads per process (1 is fastest for small models on a busy machine); default: torch's choice."""
    add_hs: bool = False
    """Write samples with hydrogens (placed by RDKit from the heavy-atom geometry)."""
    mmff: bool = False
    """With --add-hs: relax each sample with MMFF94 (molecules MMFF cannot type are counted and kept unrelaxed)."""
    mmff_max_iters: int = 200
    """Maximum MMFF iterations per sample."""
    fragments: Literal["largest", "all"] = "largest"
    """Salts and mixtures of a SMILES input: `largest` samples the largest fragment, as `prepare-data` trains on
    (counted in the summary); `all` samples every fragment. SDF inputs are read as `prepare-data` reads them."""
    progress: bool = True
    """Show a progress bar on stderr."""
    stream: bool = False
    """Read and write chunk by chunk (memory flat in the library's size; .jsonl out); implied by the options below."""
    shard_index: int = 0
    """This process's shard (Slurm: $SLURM_ARRAY_TASK_ID); molecule i goes to shard i % num_shards."""
    num_shards: int = 1
    """Shards of the input (one process each; merge with `python -m molgen3D.generation.library_run merge`)."""
    resume: bool = False
    """Go on from what an interrupted run of this shard wrote (same options) instead of starting over."""
    sampling: tyro.conf.OmitArgPrefixes[SamplingConfig] = field(default_factory=SamplingConfig)
    """Sampling options."""

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.samples_per_reference is not None and self.samples_per_reference < 1:
            raise ValueError(f"--samples-per-reference must be >= 1, got {self.samples_per_reference}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.mmff and not self.add_hs:
            raise ValueError("--mmff relaxes the molecule with its hydrogens: pass --add-hs too")
        if Path(self.out).suffix.lower() not in (".sdf", ".jsonl"):
            raise ValueError(f"--out {self.out}: use a .sdf or .jsonl file")


def molecule_summaries(molecules: Sequence[MoleculeInput], outcomes: Sequence[Sequence[SampleOutcome]]) -> list[dict]:
    """Per molecule: requested and valid samples, failures by reason."""
    return [
        {
            "name": m.name,
            "smiles": m.smiles,
            "requested": len(samples),
            "valid": sum(o.mol is not None for o in samples),
            "failures": dict(Counter(o.failure for o in samples if o.failure is not None)),
        }
        for m, samples in zip(molecules, outcomes)
    ]


def sample_counts(molecules: Sequence[MoleculeInput], cfg: GenerateConfig) -> list[int]:
    """K per molecule: `samples_per_reference` x L where the input gives L, else `num_samples`."""
    if cfg.samples_per_reference is None:
        return [cfg.num_samples] * len(molecules)
    missing = [m.where for m in molecules if m.n_conformers is None]
    if missing:
        raise ValueError(
            f"--samples-per-reference needs L per molecule, which {missing[0]} does not give "
            "(use a GEOM CSV with n_conformers or an SDF, or --num-samples)"
        )
    return [cfg.samples_per_reference * m.n_conformers for m in molecules]


def generate(cfg: GenerateConfig) -> dict:
    """Sample, write the samples and the summary sidecar; return the summary."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    if cfg.stream or cfg.num_shards > 1 or cfg.resume:
        return generate_streamed(cfg)
    skips, cut = SkipLog(), SkipLog()
    molecules = keep_fragments(read_smiles_inputs(cfg.smiles, skips), cfg.fragments, cut)
    if not molecules:
        raise nothing_to_sample(cfg.smiles, skips)
    counts = sample_counts(molecules, cfg)
    directory = model_directory(cfg.model)
    tokenizer_source(directory, cfg.tokenizer)
    unseen = unseen_elements(molecules, directory)
    if unseen.get("elements"):
        print(unseen_warning(unseen), file=sys.stderr)
    sampling = with_model_format(cfg.sampling, directory, DEFAULT_PRECISION)
    with SamplerPool.from_config(cfg, directory, sampling) as pool:
        outcomes, seconds = pool.sample([m.smiles for m in molecules], counts, progress=cfg.progress)
    stereo = mark_stereo([m.smiles for m in molecules], outcomes)
    hydrogens = add_hydrogens(outcomes, mmff=cfg.mmff, max_iters=cfg.mmff_max_iters) if cfg.add_hs else None
    write_samples(cfg.out, molecules, outcomes)
    requested = sum(map(len, outcomes))
    valid = sum(o.mol is not None for samples in outcomes for o in samples)
    summary = {
        "model": str(cfg.model),
        "model_folder": str(directory),
        "smiles_file": str(cfg.smiles),
        "out": str(cfg.out),
        "samples_requested": requested,
        "samples_valid": valid,
        "validity": valid / requested if requested else None,
        "failures": failure_report(molecules, outcomes),
        "stereo": stereo,
        "input_skipped": skips.as_dict(),
        "fragments": {"mode": cfg.fragments, "cut": cut.as_dict()},
        "unseen_elements": unseen,
        "hydrogens": hydrogens,
        "seconds": round(seconds, 3),
        "samples_per_second": requested / seconds if seconds > 0 else None,
        "device": cfg.device,
        "workers": cfg.workers,
        "settings": asdict(sampling),
        "molecules": molecule_summaries(molecules, outcomes),
    }
    write_json_atomic(summary_path(cfg.out), summary)
    return summary


def unseen_warning(unseen: dict) -> str:
    """One line naming the elements outside the model's training data and molecules that hold them."""
    parts = [f"{el} ({len(names)}: {', '.join(names[:3])})" for el, names in unseen["elements"].items()]
    return (
        "warning: elements the model's training data never had, sampled anyway (coordinates untrained): "
        + "; ".join(parts)
    )


def generate_streamed(cfg: GenerateConfig) -> dict:
    """`generate` for libraries: this shard's molecules chunk by chunk (`library_run.run_shard`); its summary."""
    from molgen3D.generation.library_run import check_shards, run_shard

    check_shards(cfg.shard_index, cfg.num_shards, cfg.out)
    cut = SkipLog()
    directory = model_directory(cfg.model)
    sampling = with_model_format(cfg.sampling, directory, DEFAULT_PRECISION)
    pool = SamplerPool.from_config(cfg, directory, sampling)

    def sample(mols, counts):
        return pool.sample([m.smiles for m in mols], counts)[0]

    def finish(mols, outcomes):
        mark_stereo([m.smiles for m in mols], outcomes)
        if cfg.add_hs:
            add_hydrogens(outcomes, mmff=cfg.mmff, max_iters=cfg.mmff_max_iters)

    with pool:
        summary = run_shard(
            cfg.smiles,
            cfg.out,
            lambda m: sample_counts([m], cfg)[0],
            sample,
            finish,
            shard_index=cfg.shard_index,
            num_shards=cfg.num_shards,
            resume=cfg.resume,
            prepare=lambda m: keep_fragments([m], cfg.fragments, cut)[0],
        )
    return {**summary, "fragments": {"mode": cfg.fragments, "cut": cut.as_dict()}, "settings": asdict(sampling)}


def format_summary(summary: dict) -> str:
    lines = [
        f"wrote {summary['samples_valid']} valid of {summary['samples_requested']} samples to {summary['out']} "
        f"({summary['seconds']:.1f} s, {summary['samples_per_second'] or 0:.2f} samples/s)",
    ]
    for reason, entry in summary["failures"].items():
        lines.append(f"  failed {reason}: {entry['count']} (e.g. {entry['examples'][0]})")
    stereo = summary.get("stereo")
    if stereo and stereo["checked"]:
        lines.append(
            f"  stereo from the coordinates as the prompt says: {stereo['ok']} of {stereo['checked']} valid "
            "samples of molecules with specified stereo (wrong ones stay valid; SDF prop stereo_ok)"
        )
    hydrogens = summary.get("hydrogens")
    if hydrogens:
        lines.append("  hydrogens: " + ", ".join(f"{k} {v}" for k, v in hydrogens.items()))
    for reason, entry in summary["input_skipped"].items():
        lines.append(f"  input skipped {reason}: {entry['count']} (e.g. {entry['examples'][0]})")
    for entry in summary["fragments"]["cut"].values():
        lines.append(f"  largest fragment sampled: {entry['count']} molecules (e.g. {entry['examples'][0]})")
    if summary["unseen_elements"].get("elements"):
        lines.append("  " + unseen_warning(summary["unseen_elements"]))
    lines.append(f"summary: {summary_path(Path(summary['out']))}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    try:
        cfg = tyro.cli(GenerateConfig, args=argv, prog="molgen3d generate")
        summary = generate(cfg)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        print(f"molgen3d generate: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary) if "shard_index" not in summary else json.dumps(summary, indent=2))
    return 0

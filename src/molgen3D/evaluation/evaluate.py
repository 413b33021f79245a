"""`molgen3d evaluate`: GEOM coverage/matching of model samples, next to RDKit ETKDG on the same molecules.

For a molecule with L reference conformers, K = 2L samples are drawn (model and baseline
alike), every reference x sample pair gets a heavy-atom symmetry-aware RMSD, and
`scoring.coverage.coverage_matching` turns each matrix into COV-R/MAT-R/COV-P/MAT-P at the threshold.
Everything is kept in the output folder (`run_folder`), so a run can be inspected, resumed and rescored.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import tyro

from molgen3D.datasets.skips import SkipLog
from molgen3D.evaluation.collect import fill_samples, samples_from_file
from molgen3D.evaluation.folder_owner import owned
from molgen3D.evaluation.relax import RELAXED, relax_method
from molgen3D.evaluation.run_folder import (
    SAMPLES_DIR,
    check_earlier,
    molecule_inputs,
    samples_file,
    save_state,
    start_state,
)
from molgen3D.evaluation.score_run import score_run
from molgen3D.generation.sample_io import write_samples
from molgen3D.generation.sampling import DEFAULT_PRECISION, SamplingConfig
from molgen3D.scoring.baseline import etkdg_baseline
from molgen3D.scoring.geometry import mark_stereo
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.references import read_references
from molgen3D.scoring.report import format_table


@dataclass
class EvaluateConfig:
    """Score sampled conformers against reference conformers (COV/MAT), optionally next to ETKDG."""

    references: str
    """Reference conformers: an SDF with several conformers per molecule, or a JSONL split (file, dir, glob,
    `data:` alias)."""
    out: Path
    """Output directory (metrics.json, coverage.png)."""
    model: str | None = None
    """HF model folder or alias to sample from (see `molgen3d generate`)."""
    samples: Path | None = None
    """Already sampled conformers (.sdf + its summary sidecar, or .jsonl, from `molgen3d generate`) instead of
    --model."""
    baseline: Literal["etkdg", "none"] = "none"
    """`etkdg`: also score RDKit ETKDGv3 with the same K on the same molecules."""
    max_molecules: int | None = None
    """Score only the first N molecules of the references."""
    max_conformers: int | None = None
    """Use at most this many reference conformers per molecule (L); default all."""
    samples_per_reference: int = 2
    """K = this x L samples per molecule (2 in the GEOM protocol)."""
    tokenizer: str | None = None
    """Tokenizer dir or alias; default: the model folder's."""
    threads: int | None = None
    """torch CPU threads for sampling; default: torch's choice."""
    etkdg_seed: int = 2718
    """ETKDG random seed (> 0; differs from prepare-data's 42 so the baseline does not replay the references'
    own seeds)."""
    etkdg_threads: int = 1
    """Threads ETKDG embeds with (1 = per-core figure comparable to one sampling stream)."""
    resume: bool = False
    """Continue an interrupted evaluation in --out: molecules with all samples written are kept, the rest sampled."""
    overwrite: bool = False
    """Replace an earlier evaluation in --out (its run.json, samples, RMSDs and scores are deleted)."""
    relax: Literal["none", "mmff"] = "none"
    """`mmff`: also score every method's samples relaxed with MMFF94 (hydrogens added) as `<method>+mmff`:
    how far a force field takes what the model wrote. The unrelaxed rows stay what the model can do."""
    mmff_max_iters: int = 200
    """MMFF94 iterations per sample with --relax mmff."""
    device: str = "auto"
    """Sampling device: auto (CUDA if present), cpu, cuda or cuda:N."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Model weights dtype: auto = bf16 on CUDA, float32 on CPU."""
    workers: int = 1
    """Sampling processes (one per GPU on CUDA); the samples do not depend on it."""
    chunk_molecules: int = 64
    """Molecules sampled and written at a time (what --resume can lose at most)."""
    progress: bool = True
    """Progress bars on stderr."""
    sampling: tyro.conf.OmitArgPrefixes[SamplingConfig] = field(default_factory=SamplingConfig)
    """Sampling options (K is set by --samples-per-reference)."""
    scoring: tyro.conf.OmitArgPrefixes[ScoringOptions] = field(default_factory=ScoringOptions)
    """Scoring options (shared with `molgen3d rescore`)."""

    def __post_init__(self):
        if self.model is None and self.samples is None and self.baseline == "none":
            raise ValueError("nothing to score: pass --model, --samples, or --baseline etkdg")
        if self.model is not None and self.samples is not None:
            raise ValueError("pass either --model (sample now) or --samples (already sampled), not both")
        if self.resume and self.overwrite:
            raise ValueError("--resume finishes the evaluation in --out and --overwrite replaces it: pass one")
        for name, value in (
            ("--samples-per-reference", self.samples_per_reference),
            ("--etkdg-seed", self.etkdg_seed),
            ("--workers", self.workers),
            ("--chunk-molecules", self.chunk_molecules),
            ("--mmff-max-iters", self.mmff_max_iters),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


def run_identity(cfg: EvaluateConfig, sampling: SamplingConfig) -> dict:
    """What decides the samples: a resumed run must ask for the same."""
    return {
        "references": str(cfg.references),
        "max_molecules": cfg.max_molecules,
        "max_conformers": cfg.max_conformers,
        "samples_per_reference": cfg.samples_per_reference,
        "model": cfg.model,
        "samples": None if cfg.samples is None else str(cfg.samples),
        "baseline": cfg.baseline,
        "etkdg_seed": cfg.etkdg_seed,
        "sampling": asdict(sampling),
    }


def _model_sampler(cfg: EvaluateConfig, sampling: SamplingConfig, state: dict, pools: list):
    """A `sample_fn` that loads the model on first use (a resumed run with all samples written never loads it).

    The model is loaded once (once per worker process) for the whole run; the pool goes into
    `pools` for the caller to close.
    """
    from molgen3D.generation.model_io import model_directory
    from molgen3D.generation.parallel import SamplerPool

    def sample_fn(smiles, counts):
        if not pools:
            directory = model_directory(cfg.model)
            state["methods"]["model"]["source"] = str(cfg.model)
            state["methods"]["model"]["model_folder"] = str(directory)
            pools.append(SamplerPool.from_config(cfg, directory, sampling))
        sampled = pools[0].sample(smiles, counts, progress=cfg.progress)
        state["methods"]["model"]["sampler_counts"] = dict(pools[0].stats)
        return sampled

    return sample_fn


def evaluate(cfg: EvaluateConfig) -> dict:
    """Sample (or read samples) into --out, then score them (`score_run`): metrics.json, table.txt, coverage.png.

    The folder is this run's while it works (`owner.json`); an earlier evaluation in it is
    finished with --resume or replaced with --overwrite, never silently.
    """
    out = Path(cfg.out)
    with owned(out, "molgen3d evaluate"):
        check_earlier(out, resume=cfg.resume, overwrite=cfg.overwrite)
        return _sample_and_score(cfg, out)


def _sample_and_score(cfg: EvaluateConfig, out: Path) -> dict:
    skipped = SkipLog()
    references, precision = read_references(
        cfg.references, max_molecules=cfg.max_molecules, max_conformers=cfg.max_conformers, skips=skipped
    )
    if not references:
        raise ValueError(f"no usable reference molecules in {cfg.references}: {skipped.as_dict()}")
    counts = [cfg.samples_per_reference * len(r.conformers) for r in references]
    sampling = cfg.sampling
    if cfg.model is not None:
        from molgen3D.generation.generate import with_model_format
        from molgen3D.generation.model_io import model_directory

        default = precision if precision is not None else DEFAULT_PRECISION
        sampling = with_model_format(sampling, model_directory(cfg.model), default)
    elif sampling.precision is None:
        sampling = replace(sampling, precision=precision if precision is not None else DEFAULT_PRECISION)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    state = start_state(out, run_identity(cfg, sampling), resume=cfg.resume, overwrite=cfg.overwrite)
    state["references_skipped"] = skipped.as_dict()
    fill = dict(state=state, resume=cfg.resume, chunk=cfg.chunk_molecules, progress=cfg.progress)
    if cfg.model is not None:
        state["methods"].setdefault("model", {})
        state["methods"]["model"].update(source=str(cfg.model), settings=asdict(sampling))
        pools: list = []
        try:
            fill_samples(out, "model", references, counts, _model_sampler(cfg, sampling, state, pools), **fill)
        finally:
            for pool in pools:
                pool.close()
    elif cfg.samples is not None:
        outcomes, unused, sidecar = samples_from_file(cfg.samples, references, counts)
        mark_stereo([r.smiles for r in references], outcomes)
        write_samples(samples_file(out, "model"), molecule_inputs(references), outcomes, failures=True)
        state["methods"]["model"] = {
            "source": str(cfg.samples),
            "settings": sidecar.get("settings"),
            "complete": True,
            "samples_per_second": sidecar.get("samples_per_second"),
            "samples_unused": unused.as_dict(),
        }
    if cfg.baseline == "etkdg":

        def etkdg_fn(smiles, k):
            return etkdg_baseline(smiles, k, seed=cfg.etkdg_seed, num_threads=cfg.etkdg_threads)

        state["methods"].setdefault("etkdg", {})
        state["methods"]["etkdg"]["settings"] = {
            "seed": cfg.etkdg_seed,
            "num_threads": cfg.etkdg_threads,
            "method": "ETKDGv3",
        }
        fill_samples(out, "etkdg", references, counts, etkdg_fn, **fill)
    if cfg.relax == "mmff":
        for name in [n for n in state["methods"] if not n.endswith(RELAXED)]:
            relax_method(out, name, references, counts, state, cfg.mmff_max_iters)
    save_state(out, state)
    return score_run(out, cfg.scoring, references=references)


def cli(argv: list[str]) -> int:
    try:
        cfg = tyro.cli(EvaluateConfig, args=argv, prog="molgen3d evaluate")
        metrics = evaluate(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"molgen3d evaluate: {exc}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(
        f"samples: {Path(cfg.out) / SAMPLES_DIR}; metrics: {Path(cfg.out) / 'metrics.json'}; "
        f"table: {Path(cfg.out) / 'table.txt'}"
    )
    return 0

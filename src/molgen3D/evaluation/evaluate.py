"""`molgen3d evaluate`: GEOM coverage/matching of model samples, next to RDKit ETKDG on the same molecules.

For a molecule with L reference conformers, K = 2L samples are drawn (model and baseline
alike), every reference x sample pair gets a heavy-atom symmetry-aware RMSD, and
`metrics.coverage_matching` turns each matrix into COV-R/MAT-R/COV-P/MAT-P at the threshold.
Writes `metrics.json` (per molecule and aggregate), `coverage.png`, and prints the table.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from molgen3D.datasets.skips import SkipLog
from molgen3D.evaluation.baseline import etkdg_baseline
from molgen3D.evaluation.metrics import DEFAULT_THRESHOLDS, coverage_curves, coverage_matching, summarize
from molgen3D.evaluation.references import ReferenceMolecule, read_references
from molgen3D.evaluation.rmsd import RmsdPool
from molgen3D.evaluation.sample_io import MoleculeInput, failure_report, read_samples, summary_path
from molgen3D.evaluation.sampling import DEFAULT_PRECISION, SampleOutcome, SamplingConfig

NOT_SAMPLED = "not_in_samples_file"
METRICS = ("cov_r", "mat_r", "cov_p", "mat_p")


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
    threshold: float = 0.75
    """Coverage threshold in A (0.75 for GEOM-DRUGS, 0.5 for GEOM-QM9); coverage is RMSD < threshold."""
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
    rmsd_workers: int = 2
    """RMSD worker processes."""
    pair_timeout: float = 30.0
    """Seconds one RMSD pair may take before it is stopped and counted as a time-out (NaN)."""
    max_matches: int = 100_000
    """Cap on the symmetry mappings GetBestRMS tries per pair."""
    progress: bool = True
    """Progress bars on stderr."""
    sampling: tyro.conf.OmitArgPrefixes[SamplingConfig] = field(default_factory=SamplingConfig)
    """Sampling options (K is set by --samples-per-reference)."""

    def __post_init__(self):
        if self.model is None and self.samples is None and self.baseline == "none":
            raise ValueError("nothing to score: pass --model, --samples, or --baseline etkdg")
        if self.model is not None and self.samples is not None:
            raise ValueError("pass either --model (sample now) or --samples (already sampled), not both")
        for name, value, low in (("--threshold", self.threshold, 0), ("--pair-timeout", self.pair_timeout, 0)):
            if not value > low:
                raise ValueError(f"{name} must be > {low}, got {value}")
        for name, value in (
            ("--samples-per-reference", self.samples_per_reference),
            ("--rmsd-workers", self.rmsd_workers),
            ("--max-matches", self.max_matches),
            ("--etkdg-seed", self.etkdg_seed),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


def _clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def score_method(
    name: str,
    references: Sequence[ReferenceMolecule],
    outcomes: Sequence[Sequence[SampleOutcome]],
    pool: RmsdPool,
    threshold: float,
    samples_per_second: float | None,
) -> dict:
    """Metrics of one method: per molecule, aggregates, curves, validity, failures, RMSD stats."""
    matrices, stats = pool.matrices(
        [(ref.conformers, [o.mol for o in samples]) for ref, samples in zip(references, outcomes)]
    )
    per_molecule, curves = [], []
    for ref, samples, matrix in zip(references, outcomes, matrices):
        scores = coverage_matching(matrix, threshold)
        curves.append(coverage_curves(matrix))
        per_molecule.append({
            "name": ref.name, "smiles": ref.smiles, "references": len(ref.conformers), "samples": len(samples),
            "valid": sum(o.mol is not None for o in samples), **scores,
        })
    requested = sum(map(len, outcomes))
    valid = sum(m["valid"] for m in per_molecule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # thresholds where no molecule defines COV-P -> NaN
        curve = {
            "thresholds": DEFAULT_THRESHOLDS,
            "cov_r": np.nanmean([c["cov_r"] for c in curves], axis=0),
            "cov_p": np.nanmean([c["cov_p"] for c in curves], axis=0),
        }
    inputs = [MoleculeInput(r.name, r.smiles, "") for r in references]
    return {
        "name": name,
        "aggregate": {k: summarize([m[k] for m in per_molecule]) for k in METRICS},
        "samples_requested": requested,
        "samples_valid": valid,
        "validity": valid / requested if requested else float("nan"),
        "failures": failure_report(inputs, outcomes),
        "samples_per_second": samples_per_second,
        "rmsd": stats.as_dict(),
        "curves": curve,
        "per_molecule": per_molecule,
    }


def posebusters_report(methods: dict[str, Sequence[Sequence[SampleOutcome]]]) -> dict:
    """PoseBusters pass rate per method when the optional `posebusters` package is importable."""
    if importlib.util.find_spec("posebusters") is None:
        return {"available": False, "note": "posebusters is not installed (pip install posebusters); pass rate skipped"}
    from posebusters import PoseBusters

    buster = PoseBusters(config="mol")
    rates = {}
    for name, outcomes in methods.items():
        mols = [o.mol for samples in outcomes for o in samples if o.mol is not None]
        if not mols:
            rates[name] = None
            continue
        table = buster.bust(mols, None, None)
        rates[name] = float(table.select_dtypes(bool).all(axis=1).mean())
    return {"available": True, "pass_rate": rates}


def _samples_from_file(path: Path, references: Sequence[ReferenceMolecule], counts: Sequence[int]):
    """K samples per reference molecule from a file (matched by SMILES), what was left out, and the sidecar summary.

    A molecule is scored on exactly its K samples, as the protocol says: the first K by sample
    index; samples beyond K, and those of molecules that are not references, are counted as
    unused; a molecule with fewer than K gets `not_in_samples_file` failures for the rest.
    """
    by_smiles = read_samples(path)
    unused = SkipLog()
    outcomes = []
    for ref, k in zip(references, counts):
        samples = sorted(by_smiles.pop(ref.smiles, []), key=lambda o: o.sample_index)
        if len(samples) > k:
            unused.add("beyond_k", f"{ref.name}: {len(samples)} samples, K = {k}", unit="sample",
                       count=len(samples) - k)
        samples = samples[:k]
        outcomes.append(samples + [SampleOutcome(s, None, NOT_SAMPLED, "", 0) for s in range(len(samples), k)])
    for smiles, samples in by_smiles.items():
        unused.add("not_a_reference", f"{smiles}: {len(samples)} samples", unit="sample", count=len(samples))
    sidecar = summary_path(path)
    return outcomes, unused, json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}


def evaluate(cfg: EvaluateConfig) -> dict:
    """Sample (or read samples), score against the references, write metrics.json and coverage.png."""
    skipped = SkipLog()
    references, precision = read_references(
        cfg.references, max_molecules=cfg.max_molecules, max_conformers=cfg.max_conformers, skips=skipped
    )
    if not references:
        raise ValueError(f"no usable reference molecules in {cfg.references}: {skipped.as_dict()}")
    counts = [cfg.samples_per_reference * len(r.conformers) for r in references]
    smiles = [r.smiles for r in references]
    sampling = cfg.sampling
    if sampling.precision is None:
        sampling = replace(sampling, precision=precision if precision is not None else DEFAULT_PRECISION)

    methods: dict[str, tuple[list[list[SampleOutcome]], float | None]] = {}  # name -> (outcomes, samples/s)
    model_info: dict = {}  # what metrics.json says about the model's samples
    if cfg.model is not None:
        from molgen3D.evaluation.generate import load_model, sample_with_model

        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        model, tokenizer, model_dir = load_model(cfg.model, cfg.tokenizer)
        outcomes, seconds = sample_with_model(model, tokenizer, smiles, counts, sampling, progress=cfg.progress)
        methods["model"] = (outcomes, sum(counts) / seconds)
        model_info = {"source": str(model_dir), "settings": asdict(sampling)}
    elif cfg.samples is not None:
        outcomes, unused, sidecar = _samples_from_file(cfg.samples, references, counts)
        methods["model"] = (outcomes, sidecar.get("samples_per_second"))
        model_info = {"source": str(cfg.samples), "settings": sidecar.get("settings"),
                      "samples_unused": unused.as_dict()}
    if cfg.baseline == "etkdg":
        outcomes, seconds = etkdg_baseline(
            smiles, counts, seed=cfg.etkdg_seed, num_threads=cfg.etkdg_threads, progress=cfg.progress
        )
        methods["etkdg"] = (outcomes, sum(counts) / seconds)

    results = {}
    with RmsdPool(workers=cfg.rmsd_workers, pair_timeout_s=cfg.pair_timeout, max_matches=cfg.max_matches) as pool:
        for name, (outcomes, speed) in methods.items():
            results[name] = score_method(name, references, outcomes, pool, cfg.threshold, speed)
    if "model" in results:
        results["model"].update(model_info)
    if "etkdg" in results:
        results["etkdg"]["settings"] = {"seed": cfg.etkdg_seed, "num_threads": cfg.etkdg_threads, "method": "ETKDGv3"}

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from molgen3D.evaluation.plots import plot_coverage

    plot = plot_coverage(
        {name: r["curves"] for name, r in results.items()}, cfg.threshold, out / "coverage.png",
        f"{len(references)} molecules, {sum(len(r.conformers) for r in references)} reference conformers, K = "
        f"{cfg.samples_per_reference}L",
    )
    metrics = {
        "references": str(cfg.references),
        "threshold": cfg.threshold,
        "num_molecules": len(references),
        "reference_conformers": sum(len(r.conformers) for r in references),
        "samples_per_reference": cfg.samples_per_reference,
        "references_skipped": skipped.as_dict(),
        "nan_policy": "failed samples are NaN columns: they lower COV-R, are left out of COV-P/MAT-P; "
                      "aggregates are over molecules where the metric is defined (see 'molecules')",
        "methods": results,
        "posebusters": posebusters_report({name: o for name, (o, _) in methods.items()}),
        "plot": str(plot),
    }
    metrics = _clean(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ang(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_table(metrics: dict) -> str:
    """The side-by-side table: per method, aggregate `mean / median` over molecules, validity, samples/s."""
    t = metrics["threshold"]
    rows = [["method", "validity", "samples/s", "COV-R", "MAT-R (A)", "COV-P", "MAT-P (A)"]]
    for name, r in metrics["methods"].items():
        agg, sps = r["aggregate"], r["samples_per_second"]
        rows.append([
            name, _pct(r["validity"]), "n/a" if sps is None else f"{sps:.2f}",
            *(f"{fmt(agg[k]['mean'])} / {fmt(agg[k]['median'])}"
              for k, fmt in (("cov_r", _pct), ("mat_r", _ang), ("cov_p", _pct), ("mat_p", _ang))),
        ])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        f"{metrics['num_molecules']} molecules, {metrics['reference_conformers']} reference conformers, "
        f"K = {metrics['samples_per_reference']}L; COV at RMSD < {t} A; cells are mean / median over molecules",
    ]
    for k, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        )
        if k == 0:
            lines.append("-" * len(lines[-1]))
    for name, r in metrics["methods"].items():
        for reason, entry in r["failures"].items():
            lines.append(f"  {name} failed {reason}: {entry['count']} (e.g. {entry['examples'][0][:80]})")
        for reason, entry in r.get("samples_unused", {}).items():
            lines.append(f"  {name} samples left out ({reason}): {entry['count']} (e.g. {entry['examples'][0]})")
        if r["rmsd"]["timeouts"] or r["rmsd"]["errors"]:
            lines.append(f"  {name} RMSD: {r['rmsd']['timeouts']} time-outs, errors {r['rmsd']['errors']}")
    pb = metrics["posebusters"]
    lines.append("PoseBusters: " + (f"pass rate {pb['pass_rate']}" if pb["available"] else pb["note"]))
    lines.append(f"plot: {metrics['plot']}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    try:
        cfg = tyro.cli(EvaluateConfig, args=argv, prog="molgen3d evaluate")
        metrics = evaluate(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"molgen3d evaluate: {exc}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(f"metrics: {Path(cfg.out) / 'metrics.json'}")
    return 0

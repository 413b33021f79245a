"""`molgen3d evaluate`: GEOM coverage/matching of model samples, next to RDKit ETKDG on the same molecules.

For a molecule with L reference conformers, K = 2L samples are drawn (model and baseline
alike), every reference x sample pair gets a heavy-atom symmetry-aware RMSD, and
`metrics.coverage_matching` turns each matrix into COV-R/MAT-R/COV-P/MAT-P at the threshold.

Everything is kept in the output directory, so a run can be inspected, resumed and rescored:
- `samples/<method>.sdf`: every sample in molecule order (failures as atom-less records with
  their reason), appended molecule chunk by molecule chunk;
- `run.json`: what was asked (references, K, seeds, sampling settings) and sampling times;
- `rmsd/<method>.npz`: the RMSD matrices, reused while the samples file is unchanged;
- `metrics.json`, `table.txt`, `coverage.png`: the scores (`molgen3d rescore DIR` rewrites them).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from tqdm.auto import tqdm

from molgen3D.files import sha256_file
from molgen3D.datasets.skips import SkipLog
from molgen3D.evaluation.baseline import etkdg_baseline
from molgen3D.evaluation.chemistry import geometry_report, mark_stereo, posebusters_checks
from molgen3D.evaluation.hydrogens import add_hydrogens
from molgen3D.evaluation.metrics import DEFAULT_THRESHOLDS, coverage_curves, coverage_matching, summarize
from molgen3D.evaluation.references import ReferenceMolecule, read_references
from molgen3D.evaluation.rmsd import RmsdPool
from molgen3D.evaluation.sample_io import (
    MoleculeInput,
    SamplesMismatchError,
    failure_report,
    iter_sdf_samples,
    read_samples,
    summary_path,
    write_samples,
)
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
    resume: bool = False
    """Continue an interrupted evaluation in --out: molecules with all samples written are kept, the rest sampled."""
    posebusters: Literal["mol", "mol_fast", "none"] = "mol"
    """PoseBusters checks on every valid sample (`mol`: with the energy-ratio check; `none`: skip)."""
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
            ("--workers", self.workers),
            ("--chunk-molecules", self.chunk_molecules),
            ("--mmff-max-iters", self.mmff_max_iters),
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
    matrices: Sequence[np.ndarray],
    rmsd_stats: dict,
    threshold: float,
    samples_per_second: float | None,
) -> dict:
    """Metrics of one method: per molecule, aggregates, curves, validity, failures, RMSD stats, chemistry."""
    per_molecule, curves = [], []
    for ref, samples, matrix in zip(references, outcomes, matrices):
        scores = coverage_matching(matrix, threshold)
        curves.append(coverage_curves(matrix))
        per_molecule.append(
            {
                "name": ref.name,
                "smiles": ref.smiles,
                "references": len(ref.conformers),
                "samples": len(samples),
                "valid": sum(o.mol is not None for o in samples),
                **scores,
            }
        )
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
    chemistry = geometry_report(references, outcomes)
    return {
        "name": name,
        "aggregate": {k: summarize([m[k] for m in per_molecule]) for k in METRICS},
        "samples_requested": requested,
        "samples_valid": valid,
        "validity": valid / requested if requested else float("nan"),
        "chemistry": chemistry,
        "failures": failure_report(inputs, outcomes),
        "samples_per_second": samples_per_second,
        "rmsd": rmsd_stats,
        "curves": curve,
        "per_molecule": per_molecule,
    }


def posebusters_report(methods: dict[str, Sequence[Sequence[SampleOutcome]]], config: str) -> dict:
    """PoseBusters' per-check pass rates of every method's valid samples."""
    if config == "none":
        return {"available": False, "note": "PoseBusters skipped (--posebusters none)"}
    report = {"available": True, "config": config, "methods": {}}
    for name, outcomes in methods.items():
        report["methods"][name] = posebusters_checks([o.mol for s in outcomes for o in s if o.mol is not None], config)
    return report


def _samples_from_file(path: Path, references: Sequence[ReferenceMolecule], counts: Sequence[int]):
    """K samples per reference molecule from a file (matched by SMILES), what was left out, and the sidecar summary.

    Every reference molecule must have samples in the file, or the file was drawn for other
    molecules (`SamplesMismatchError` names them). A molecule is scored on exactly its K
    samples, as the protocol says: the first K by sample index; samples beyond K, and those of
    molecules that are not references, are counted as unused; a molecule with fewer than K
    gets `not_in_samples_file` failures for the rest.
    """
    by_smiles = read_samples(path)
    missing = [r for r in references if r.smiles not in by_smiles]
    if missing:
        wanted = {r.smiles for r in references}
        extra = [s for s in by_smiles if s not in wanted]
        raise SamplesMismatchError(
            f"{path} has no samples for {len(missing)} of the {len(references)} reference molecules "
            f"(e.g. {', '.join(r.name for r in missing[:3])}) and samples for {len(extra)} molecules that are not "
            f"references (e.g. {', '.join(extra[:3]) or 'none'}); sample the reference molecules "
            "(`molgen3d generate --smiles <the references SDF or CSV>`) "
            "or pass the references the samples were drawn for"
        )
    unused = SkipLog()
    outcomes = []
    for ref, k in zip(references, counts):
        samples = sorted(by_smiles.pop(ref.smiles, []), key=lambda o: o.sample_index)
        if len(samples) > k:
            unused.add(
                "beyond_k", f"{ref.name}: {len(samples)} samples, K = {k}", unit="sample", count=len(samples) - k
            )
        samples = samples[:k]
        taken = {o.sample_index for o in samples}
        free = [s for s in range(k + len(samples)) if s not in taken][: k - len(samples)]
        outcomes.append(samples + [SampleOutcome(s, None, NOT_SAMPLED, "", 0) for s in free])
    for smiles, samples in by_smiles.items():
        unused.add("not_a_reference", f"{smiles}: {len(samples)} samples", unit="sample", count=len(samples))
    sidecar = summary_path(path)
    return outcomes, unused, json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}


RUN_FILE = "run.json"
SAMPLES_DIR = "samples"
RMSD_DIR = "rmsd"


def samples_file(out: Path, method: str) -> Path:
    return Path(out) / SAMPLES_DIR / f"{method}.sdf"


def _inputs(references: Sequence[ReferenceMolecule]) -> list[MoleculeInput]:
    return [MoleculeInput(r.name, r.smiles, "") for r in references]


def read_stored(
    path: Path, references: Sequence[ReferenceMolecule], counts: Sequence[int], *, complete_only: bool = False
) -> list[list[SampleOutcome]]:
    """The samples of `samples/<method>.sdf` per reference molecule, for the longest prefix of complete molecules.

    A molecule is complete when its K records are all there and name its SMILES; with
    `complete_only` the file may end anywhere (an interrupted run), else every molecule must be complete.
    """
    grouped: dict[int, list[SampleOutcome]] = {}
    for outcome, smiles, index in iter_sdf_samples(path, complete_only=complete_only):
        if index is None or not 0 <= index < len(references) or smiles != references[index].smiles:
            raise ValueError(
                f"{path}: a record of molecule_index {index} ({smiles}) does not match the references; "
                "the samples were written for other references"
            )
        grouped.setdefault(index, []).append(outcome)
    done = []
    for i, (ref, k) in enumerate(zip(references, counts)):
        samples = sorted(grouped.get(i, []), key=lambda o: o.sample_index)
        if len({o.sample_index for o in samples}) != k or len(samples) != k:
            if complete_only:
                break
            raise ValueError(
                f"{path}: molecule {i} ({ref.name}) has {len(samples)} of its K = {k} samples; "
                "the evaluation was interrupted: run `molgen3d evaluate ... --resume` to finish it"
            )
        done.append(samples)
    return done


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


def _save_state(out: Path, state: dict) -> None:
    tmp = out / f"{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(_clean(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / RUN_FILE)


def _load_state(out: Path, identity: dict, resume: bool) -> dict:
    path = out / RUN_FILE
    if resume and path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        differs = [k for k in identity if state.get("identity", {}).get(k) != identity[k]]
        if differs:
            raise ValueError(
                f"--resume: {path} was written with other settings ({', '.join(differs)}); "
                "pass the same options, or a new --out"
            )
        return state
    for stale in (out / SAMPLES_DIR).glob("*.sdf") if (out / SAMPLES_DIR).is_dir() else []:
        stale.unlink()
    return {"identity": identity, "methods": {}}


def fill_samples(
    out: Path,
    name: str,
    references: Sequence[ReferenceMolecule],
    counts: Sequence[int],
    sample_fn: Callable[[list[str], list[int]], tuple[list[list[SampleOutcome]], float]],
    state: dict,
    *,
    resume: bool,
    chunk: int,
    progress: bool,
) -> None:
    """Sample every molecule not yet complete in `samples/<name>.sdf`, chunk by chunk, appending in molecule order."""
    path = samples_file(out, name)
    done = read_stored(path, references, counts, complete_only=True) if resume and path.is_file() else []
    inputs = _inputs(references)
    write_samples(path, inputs[: len(done)], done, failures=True)  # drops a torn tail
    info = state["methods"].setdefault(name, {})
    if not resume or "seconds" not in info:
        info.update(seconds=0.0, samples=0)
    info.update(resumed_at_molecule=len(done), complete=len(done) == len(references))
    _save_state(out, state)
    bar = tqdm(total=len(references), initial=len(done), desc=f"{name} molecules", unit="mol", disable=not progress)
    for start in range(len(done), len(references), chunk):
        stop = min(start + chunk, len(references))
        outcomes, seconds = sample_fn([r.smiles for r in references[start:stop]], list(counts[start:stop]))
        mark_stereo([r.smiles for r in references[start:stop]], outcomes)
        write_samples(path, inputs[start:stop], outcomes, failures=True, mode="a", first_index=start)
        info["seconds"] += seconds
        info["samples"] += sum(counts[start:stop])
        info["complete"] = stop == len(references)
        _save_state(out, state)
        bar.update(stop - start)
    bar.close()


def _model_sampler(cfg: EvaluateConfig, sampling: SamplingConfig, state: dict):
    """A `sample_fn` that loads the model on first use (a resumed run with all samples written never loads it)."""
    from molgen3D.evaluation.model_io import load_model, model_directory
    from molgen3D.evaluation.parallel import sample_parallel

    cache: dict = {}

    def sample_fn(smiles, counts):
        if "dir" not in cache:
            cache["dir"] = model_directory(cfg.model)
            state["methods"]["model"]["source"] = str(cfg.model)
            state["methods"]["model"]["model_folder"] = str(cache["dir"])
            if cfg.workers == 1:
                cache["loaded"] = load_model(cache["dir"], cfg.tokenizer, device=cfg.device, dtype=cfg.dtype)[:2]
        return sample_parallel(
            cache["dir"],
            cfg.tokenizer,
            smiles,
            counts,
            sampling,
            workers=cfg.workers,
            device=cfg.device,
            dtype=cfg.dtype,
            threads=cfg.threads,
            loaded=cache.get("loaded"),
            progress=cfg.progress,
        )

    return sample_fn


def evaluate(cfg: EvaluateConfig) -> dict:
    """Sample (or read samples) into --out, then score them (`score_run`): metrics.json, table.txt, coverage.png."""
    skipped = SkipLog()
    references, precision = read_references(
        cfg.references, max_molecules=cfg.max_molecules, max_conformers=cfg.max_conformers, skips=skipped
    )
    if not references:
        raise ValueError(f"no usable reference molecules in {cfg.references}: {skipped.as_dict()}")
    counts = [cfg.samples_per_reference * len(r.conformers) for r in references]
    sampling = cfg.sampling
    if cfg.model is not None:
        from molgen3D.evaluation.generate import with_model_format
        from molgen3D.evaluation.model_io import model_directory

        default = precision if precision is not None else DEFAULT_PRECISION
        sampling = with_model_format(sampling, model_directory(cfg.model), default)
    elif sampling.precision is None:
        sampling = replace(sampling, precision=precision if precision is not None else DEFAULT_PRECISION)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out, run_identity(cfg, sampling), cfg.resume)
    state["references_skipped"] = skipped.as_dict()
    fill = dict(state=state, resume=cfg.resume, chunk=cfg.chunk_molecules, progress=cfg.progress)
    if cfg.model is not None:
        state["methods"].setdefault("model", {})
        state["methods"]["model"].update(source=str(cfg.model), settings=asdict(sampling))
        fill_samples(out, "model", references, counts, _model_sampler(cfg, sampling, state), **fill)
    elif cfg.samples is not None:
        outcomes, unused, sidecar = _samples_from_file(cfg.samples, references, counts)
        mark_stereo([r.smiles for r in references], outcomes)
        write_samples(samples_file(out, "model"), _inputs(references), outcomes, failures=True)
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
            _relax_method(out, name, references, counts, state, cfg.mmff_max_iters)
    _save_state(out, state)
    return score_run(
        out,
        threshold=cfg.threshold,
        rmsd_workers=cfg.rmsd_workers,
        pair_timeout=cfg.pair_timeout,
        max_matches=cfg.max_matches,
        posebusters=cfg.posebusters,
        references=references,
    )


RELAXED = "+mmff"
"""Suffix of a method whose samples are another method's, relaxed with MMFF94."""


def _relax_method(out: Path, name: str, references, counts: Sequence[int], state: dict, max_iters: int) -> None:
    """`samples/<name>+mmff.sdf`: the samples of `name` with hydrogens added and MMFF94-relaxed, as a method."""
    outcomes = read_stored(samples_file(out, name), references, counts)
    relaxed = add_hydrogens(outcomes, mmff=True, max_iters=max_iters)
    mark_stereo([r.smiles for r in references], outcomes)
    write_samples(samples_file(out, name + RELAXED), _inputs(references), outcomes, failures=True)
    state["methods"][name + RELAXED] = {
        "source": f"samples/{name}.sdf relaxed with MMFF94 (hydrogens added, at most {max_iters} iterations)",
        "settings": {"mmff_max_iters": max_iters, "outcomes": relaxed},
        "complete": True,
    }


def _file_key(path: Path, max_matches: int) -> str:
    return f"{max_matches}:{sha256_file(path)}"


def _matrices(out: Path, name: str, references, outcomes, pool_args: dict) -> tuple[list[np.ndarray], dict]:
    """RMSD matrices of one method: from `rmsd/<name>.npz` when it was computed from this very samples file."""
    cache = Path(out) / RMSD_DIR / f"{name}.npz"
    key = _file_key(samples_file(out, name), pool_args["max_matches"])
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key and int(data["n"]) == len(references):
                return [data[f"m{i}"] for i in range(len(references))], json.loads(str(data["stats"]))
    with RmsdPool(**pool_args) as pool:
        matrices, stats = pool.matrices(
            [(ref.conformers, [o.mol for o in samples]) for ref, samples in zip(references, outcomes)]
        )
    stats = stats.as_dict()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, key=key, n=len(references), stats=json.dumps(stats), **{f"m{i}": m for i, m in enumerate(matrices)})
    return matrices, stats


def _run_state(out: Path) -> dict:
    """`run.json` of an evaluation directory."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out} has no {RUN_FILE}: not a directory written by `molgen3d evaluate`")
    return json.loads(path.read_text(encoding="utf-8"))


def _references_of(state: dict) -> list[ReferenceMolecule]:
    """The references a run was scored against (read again, as `evaluate` read them)."""
    ident = state["identity"]
    references, _ = read_references(
        ident["references"], max_molecules=ident["max_molecules"], max_conformers=ident["max_conformers"]
    )
    return references


def references_of_run(out: Path) -> tuple[list[ReferenceMolecule], dict]:
    """The references an evaluation directory was scored against, and its `run.json`."""
    state = _run_state(out)
    return _references_of(state), state


def score_run(
    out: Path,
    *,
    threshold: float,
    rmsd_workers: int = 2,
    pair_timeout: float = 30.0,
    max_matches: int = 100_000,
    posebusters: str = "mol",
    references=None,
) -> dict:
    """Score the samples stored in an evaluation directory: metrics.json, table.txt and coverage.png.

    `evaluate` calls it after sampling and `molgen3d rescore` on its own, so both give the same numbers.
    """
    out = Path(out)
    state = _run_state(out)
    references = references if references is not None else _references_of(state)
    ident = state["identity"]
    counts = [ident["samples_per_reference"] * len(r.conformers) for r in references]
    pool_args = dict(workers=rmsd_workers, pair_timeout_s=pair_timeout, max_matches=max_matches)
    methods, results = {}, {}
    for name, info in state["methods"].items():
        outcomes = read_stored(samples_file(out, name), references, counts)
        methods[name] = outcomes
        matrices, stats = _matrices(out, name, references, outcomes, pool_args)
        speed = info.get("samples_per_second")
        if speed is None and info.get("seconds"):
            speed = info["samples"] / info["seconds"]
        results[name] = score_method(name, references, outcomes, matrices, stats, threshold, speed)
        results[name].update(
            {k: v for k, v in info.items() if k in ("source", "settings", "samples_unused", "model_folder")}
        )
        results[name]["samples_file"] = str(samples_file(out, name))
    from molgen3D.evaluation.plots import plot_coverage

    plot = plot_coverage(
        {name: r["curves"] for name, r in results.items()},
        threshold,
        out / "coverage.png",
        f"{len(references)} molecules, {sum(len(r.conformers) for r in references)} reference conformers, K = "
        f"{ident['samples_per_reference']}L",
    )
    metrics = {
        "references": ident["references"],
        "threshold": threshold,
        "num_molecules": len(references),
        "reference_conformers": sum(len(r.conformers) for r in references),
        "samples_per_reference": ident["samples_per_reference"],
        "references_skipped": state.get("references_skipped", {}),
        "nan_policy": "failed samples are NaN columns: they lower COV-R, are left out of COV-P/MAT-P; "
        "aggregates are over molecules where the metric is defined (see 'molecules')",
        "methods": results,
        "posebusters": posebusters_report(methods, posebusters),
        "plot": str(plot),
    }
    metrics = _clean(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "table.txt").write_text(format_table(metrics) + "\n", encoding="utf-8")
    return metrics


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ang(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = (cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("-" * len(lines[-1]))
    return lines


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def format_table(metrics: dict) -> str:
    """The tables a user reads: GEOM scores, chemistry checks, PoseBusters per check, then what failed."""
    t = metrics["threshold"]
    rows = [["method", "validity", "samples/s", "COV-R", "MAT-R (A)", "COV-P", "MAT-P (A)"]]
    for name, r in metrics["methods"].items():
        agg, sps = r["aggregate"], r["samples_per_second"]
        rows.append(
            [
                name,
                _pct(r["validity"]),
                _num(sps, ".2f"),
                *(
                    f"{fmt(agg[k]['mean'])} / {fmt(agg[k]['median'])}"
                    for k, fmt in (("cov_r", _pct), ("mat_r", _ang), ("cov_p", _pct), ("mat_p", _ang))
                ),
            ]
        )
    lines = [
        f"{metrics['num_molecules']} molecules, {metrics['reference_conformers']} reference conformers, "
        f"K = {metrics['samples_per_reference']}L; COV at RMSD < {t} A; cells are mean / median over molecules",
        *_grid(rows),
        "",
        "chemistry of valid samples (heavy atoms; deviations from the mean over the molecule's references)",
    ]
    rows = [["method", "stereo OK", "bond MAE (A)", "angle MAE (deg)", "clash-free", "clashes/sample"]]
    for name, r in metrics["methods"].items():
        c = r["chemistry"]
        rows.append(
            [
                name,
                f"{_pct(c['stereo_ok'])} of {c['stereo_checked']}",
                _num(c["bond_length_mae"], ".3f"),
                _num(c["bond_angle_mae"], ".2f"),
                _pct(c["clash_free"]),
                _num(c["clashes_per_sample"], ".2f"),
            ]
        )
    lines += _grid(rows)
    pb = metrics["posebusters"]
    if pb["available"]:
        names = list(pb["methods"])
        checks = list(dict.fromkeys(k for m in pb["methods"].values() for k in m["checks"]))
        rows = [[f"PoseBusters `{pb['config']}`", *(f"{n} ({pb['methods'][n]['samples']})" for n in names)]]
        for check in checks:
            cells = []
            for n in names:
                entry = pb["methods"][n]["checks"].get(check)
                cell = "n/a" if entry is None else _pct(entry["pass_rate"])
                if entry is not None and entry["not_run"]:
                    cell += f" ({entry['not_run']} not run)"
                cells.append(cell)
            rows.append([check, *cells])
        rows.append(["all checks pass", *(_pct(pb["methods"][n]["all_pass"]) for n in names)])
        lines += ["", *_grid(rows)]
    else:
        lines.append(f"PoseBusters: {pb['note']}")
    for name, r in metrics["methods"].items():
        for reason, entry in r["failures"].items():
            lines.append(f"  {name} failed {reason}: {entry['count']} (e.g. {entry['examples'][0][:80]})")
        for reason, entry in r.get("samples_unused", {}).items():
            lines.append(f"  {name} samples left out ({reason}): {entry['count']} (e.g. {entry['examples'][0]})")
        if r["rmsd"]["timeouts"] or r["rmsd"]["errors"]:
            lines.append(f"  {name} RMSD: {r['rmsd']['timeouts']} time-outs, errors {r['rmsd']['errors']}")
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
    print(
        f"samples: {Path(cfg.out) / SAMPLES_DIR}; metrics: {Path(cfg.out) / 'metrics.json'}; "
        f"table: {Path(cfg.out) / 'table.txt'}"
    )
    return 0

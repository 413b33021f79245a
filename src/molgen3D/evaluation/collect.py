"""Each method's samples into the evaluation folder: sampled chunk by chunk (resumable), or taken from a file.

For a molecule with L reference conformers, K = 2L samples are drawn (model and baseline
alike); `samples/<method>.sdf` holds them in molecule order and `run.json` how far sampling got.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from molgen3D.datasets.skips import SkipLog
from molgen3D.evaluation.run_folder import molecule_inputs, read_stored, samples_file, save_state
from molgen3D.generation.sample_io import SamplesMismatchError, read_samples, summary_path, write_samples
from molgen3D.scoring.geometry import mark_stereo
from molgen3D.scoring.outcome import SampleOutcome
from molgen3D.scoring.references import ReferenceMolecule

NOT_SAMPLED = "not_in_samples_file"


def samples_from_file(path: Path, references: Sequence[ReferenceMolecule], counts: Sequence[int]):
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
    inputs = molecule_inputs(references)
    write_samples(path, inputs[: len(done)], done, failures=True)  # drops a torn tail
    info = state["methods"].setdefault(name, {})
    if not resume or "seconds" not in info:
        info.update(seconds=0.0, samples=0)
    info.update(resumed_at_molecule=len(done), complete=len(done) == len(references))
    save_state(out, state)
    bar = tqdm(total=len(references), initial=len(done), desc=f"{name} molecules", unit="mol", disable=not progress)
    for start in range(len(done), len(references), chunk):
        stop = min(start + chunk, len(references))
        outcomes, seconds = sample_fn([r.smiles for r in references[start:stop]], list(counts[start:stop]))
        mark_stereo([r.smiles for r in references[start:stop]], outcomes)
        write_samples(path, inputs[start:stop], outcomes, failures=True, mode="a", first_index=start)
        info["seconds"] += seconds
        info["samples"] += sum(counts[start:stop])
        info["complete"] = stop == len(references)
        save_state(out, state)
        bar.update(stop - start)
    bar.close()

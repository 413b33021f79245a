"""An evaluation folder: where each file lives, `run.json` (what was asked and how far sampling got), stored samples.

- `samples/<method>.sdf`: every sample in molecule order (failures as atom-less records with
  their reason), appended molecule chunk by molecule chunk;
- `run.json`: what was asked (references, K, seeds, sampling settings) and sampling times;
- `rmsd/<method>.npz`: the RMSD matrices, reused while the samples file is unchanged;
- `metrics.json`, `table.txt`, `coverage.png`: the scores (`molgen3d rescore DIR` rewrites them);
- `owner.json` while a command works in it (`folder_owner`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from molgen3D.files import write_json_atomic
from molgen3D.generation.sample_io import MoleculeInput, iter_sdf_samples
from molgen3D.scoring.outcome import SampleOutcome
from molgen3D.scoring.references import ReferenceMolecule, read_references
from molgen3D.scoring.report import json_safe

RUN_FILE = "run.json"
SAMPLES_DIR = "samples"
RMSD_DIR = "rmsd"
SCORE_FILES = ("metrics.json", "table.txt", "coverage.png")


def samples_file(out: Path, method: str) -> Path:
    return Path(out) / SAMPLES_DIR / f"{method}.sdf"


def molecule_inputs(references: Sequence[ReferenceMolecule]) -> list[MoleculeInput]:
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


def save_state(out: Path, state: dict) -> None:
    write_json_atomic(Path(out) / RUN_FILE, json_safe(state))


def earlier_evaluation(out: Path) -> list[str]:
    """What an earlier evaluation left in `out` (run.json, samples, RMSDs, scores), relative to `out`."""
    out = Path(out)
    found = [name for name in (RUN_FILE, *SCORE_FILES) if (out / name).is_file()]
    for sub, pattern in ((SAMPLES_DIR, "*.sdf"), (RMSD_DIR, "*.npz")):
        found += sorted(str(p.relative_to(out)) for p in (out / sub).glob(pattern))
    return found


def check_earlier(out: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """What an earlier evaluation left in `out`; an error unless the user asked to finish it or to replace it."""
    earlier = earlier_evaluation(out)
    if earlier and not resume and not overwrite:
        listed = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise ValueError(
            f"--out {out} holds an earlier evaluation ({listed}); "
            "pass --resume to finish it, --overwrite to replace it, or a new --out"
        )
    return earlier


def start_state(out: Path, identity: dict, *, resume: bool, overwrite: bool) -> dict:
    """`run.json` to continue (`resume`), or a fresh one; an earlier evaluation is replaced only with `overwrite`."""
    path = Path(out) / RUN_FILE
    if resume and path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        differs = [k for k in identity if state.get("identity", {}).get(k) != identity[k]]
        if differs:
            raise ValueError(
                f"--resume: {path} was written with other settings ({', '.join(differs)}); "
                "pass the same options, or a new --out"
            )
        return state
    earlier = check_earlier(out, resume=resume, overwrite=overwrite)
    for name in earlier:
        (Path(out) / name).unlink()
    return {"identity": identity, "methods": {}}


def run_state(out: Path) -> dict:
    """`run.json` of an evaluation directory."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out} has no {RUN_FILE}: not a directory written by `molgen3d evaluate`")
    return json.loads(path.read_text(encoding="utf-8"))


def references_of(state: dict) -> list[ReferenceMolecule]:
    """The references a run was scored against (read again, as `evaluate` read them)."""
    ident = state["identity"]
    references, _ = read_references(
        ident["references"], max_molecules=ident["max_molecules"], max_conformers=ident["max_conformers"]
    )
    return references

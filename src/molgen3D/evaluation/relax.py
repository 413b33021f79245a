"""`--relax mmff`: every method's samples again, hydrogens added and MMFF94-relaxed, scored as `<method>+mmff`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from molgen3D.evaluation.run_folder import molecule_inputs, read_stored, samples_file
from molgen3D.generation.sample_io import write_samples
from molgen3D.scoring.geometry import mark_stereo
from molgen3D.scoring.hydrogens import add_hydrogens

RELAXED = "+mmff"
"""Suffix of a method whose samples are another method's, relaxed with MMFF94."""


def relax_method(out: Path, name: str, references, counts: Sequence[int], state: dict, max_iters: int) -> None:
    """`samples/<name>+mmff.sdf`: the samples of `name` with hydrogens added and MMFF94-relaxed, as a method."""
    outcomes = read_stored(samples_file(out, name), references, counts)
    relaxed = add_hydrogens(outcomes, mmff=True, max_iters=max_iters)
    mark_stereo([r.smiles for r in references], outcomes)
    write_samples(samples_file(out, name + RELAXED), molecule_inputs(references), outcomes, failures=True)
    state["methods"][name + RELAXED] = {
        "source": f"samples/{name}.sdf relaxed with MMFF94 (hydrogens added, at most {max_iters} iterations)",
        "settings": {"mmff_max_iters": max_iters, "outcomes": relaxed},
        "complete": True,
    }

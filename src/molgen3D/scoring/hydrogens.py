"""Hydrogens for downstream use: samples are heavy-atom conformers; chemists' tools want explicit H.

RDKit places each hydrogen from its heavy neighbours' geometry; optional MMFF94 relaxation
then moves every atom. Molecules MMFF cannot type are counted and kept with placed hydrogens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers
from rdkit.rdBase import BlockLogs

from molgen3D.scoring.outcome import SampleOutcome


def add_hydrogens(
    outcomes: Sequence[Sequence[SampleOutcome]], *, mmff: bool = False, max_iters: int = 200
) -> dict[str, int]:
    """Replace every valid sample's molecule by one with hydrogens (in place); counts of what happened.

    Counts: `added`, and with `mmff`: `mmff_relaxed` (converged), `mmff_not_converged`
    (stopped at `max_iters`, kept), `mmff_untyped` (no MMFF94 parameters, kept unrelaxed).
    Each sample's `extra["mmff"]` records its own outcome.
    """
    counts: Counter = Counter()
    for samples in outcomes:
        for o in samples:
            if o.mol is None:
                continue
            with BlockLogs():
                mol = Chem.AddHs(o.mol, addCoords=True)
                counts["added"] += 1
                status = None
                if mmff:
                    status = "untyped"
                    if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
                        code = rdForceFieldHelpers.MMFFOptimizeMolecule(mol, maxIters=max_iters)
                        status = {0: "relaxed", 1: "not_converged"}.get(code, "untyped")
                    counts[f"mmff_{status}"] += 1
            o.mol = mol
            if status is not None:
                o.extra = {**(o.extra or {}), "mmff": status}
    return dict(counts)

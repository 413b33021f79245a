"""PoseBusters' checks of valid samples: pass rate per check, per method."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.scoring.checks import single_conformer
from molgen3D.scoring.geometry import heavy_atoms
from molgen3D.scoring.outcome import SampleOutcome

POSEBUSTERS_CONFIGS = ("mol", "mol_fast")


def posebusters_checks(mols: Sequence[Chem.Mol], config: str = "mol") -> dict:
    """PoseBusters' `config` checks on heavy-atom, single-conformer (id 0) molecules: pass rate per check.

    PoseBusters adds the missing hydrogens itself and places them with UFF before its energy
    check (its documented handling of implicit hydrogens), and its geometry checks ignore
    hydrogens, so heavy-atom molecules are what it expects. A check PoseBusters could not run
    on a molecule (NaN, e.g. UFF cannot type it) is counted under `not_run`, not as a pass.
    """
    from posebusters import PoseBusters

    prepared = [single_conformer(heavy_atoms(m), m.GetConformer().GetId()) for m in mols]
    if not prepared:
        return {"samples": 0, "checks": {}, "all_pass": math.nan}
    logging.getLogger("posebusters").setLevel(logging.ERROR)
    with BlockLogs():
        table = PoseBusters(config=config).bust(prepared, None, None)
    checks, passed_all = {}, np.ones(len(table), dtype=bool)
    for column in table.columns:
        values = table[column].to_numpy(dtype=object)
        ran = np.array([isinstance(v, (bool, np.bool_)) for v in values])
        passes = np.array([bool(v) if r else False for v, r in zip(values, ran)])
        passed_all &= passes
        checks[column] = {
            "pass_rate": float(passes[ran].mean()) if ran.any() else math.nan,
            "not_run": int((~ran).sum()),
        }
    return {"samples": len(table), "checks": checks, "all_pass": float(passed_all.mean())}


def posebusters_report(methods: dict[str, Sequence[Sequence[SampleOutcome]]], config: str) -> dict:
    """PoseBusters' per-check pass rates of every method's valid samples."""
    if config == "none":
        return {"available": False, "note": "PoseBusters skipped (--posebusters none)"}
    report = {"available": True, "config": config, "methods": {}}
    for name, outcomes in methods.items():
        report["methods"][name] = posebusters_checks([o.mol for s in outcomes for o in s if o.mol is not None], config)
    return report

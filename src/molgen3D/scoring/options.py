"""How a run's samples are scored: the one options value `evaluate` and `rescore` share, checked once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ScoringOptions:
    """Coverage threshold, RMSD workers and limits, PoseBusters configuration."""

    threshold: float = 0.75
    """Coverage threshold in A (0.75 for GEOM-DRUGS, 0.5 for GEOM-QM9); coverage is RMSD < threshold."""
    posebusters: Literal["mol", "mol_fast", "none"] = "mol"
    """PoseBusters checks on every valid sample (`mol`: with the energy-ratio check; `none`: skip)."""
    rmsd_workers: int = 2
    """RMSD worker processes (RMSDs are reused from rmsd/*.npz while the samples are unchanged)."""
    pair_timeout: float = 30.0
    """Seconds one RMSD pair may take before it is stopped and counted as a time-out (NaN)."""
    max_matches: int = 100_000
    """Cap on the symmetry mappings GetBestRMS tries per pair."""

    def __post_init__(self):
        """Checked here, with the option names a user typed, even when cached RMSDs would never use them."""
        for name, value in (("--threshold", self.threshold), ("--pair-timeout", self.pair_timeout)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name, value in (("--rmsd-workers", self.rmsd_workers), ("--max-matches", self.max_matches)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value}")
        if self.posebusters not in ("mol", "mol_fast", "none"):
            raise ValueError(f"--posebusters must be mol, mol_fast or none, got {self.posebusters!r}")

    def pool_args(self) -> dict:
        """Keyword arguments of `rmsd.RmsdPool`."""
        return dict(workers=self.rmsd_workers, pair_timeout_s=self.pair_timeout, max_matches=self.max_matches)

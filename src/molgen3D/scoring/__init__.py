"""Scoring conformers: references, validity checks, RMSD, coverage, geometry, PoseBusters, reports; no torch."""

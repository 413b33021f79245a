"""The RDKit ETKDGv3 baseline: K conformers per molecule, scored by the same code as the model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.rdBase import BlockLogs
from tqdm.auto import tqdm

from molgen3D.scoring.checks import single_conformer
from molgen3D.scoring.outcome import SampleOutcome

EMBED_FAILED = "embed_failed"
BAD_SMILES = "invalid_smiles"


def etkdg_samples(smiles: str, count: int, *, seed: int = 42, num_threads: int = 1) -> list[SampleOutcome]:
    """`count` ETKDGv3 conformers of `smiles` as heavy-atom molecules; missing ones are failures.

    Each sample holds one conformer with id 0, as tools that address "the" conformer expect.
    `seed` must be positive: RDKit derives each conformer's seed from it, and seed 0 gives
    `count` identical conformers.
    """
    if seed <= 0:
        raise ValueError(f"ETKDG seed must be > 0 (RDKit's seed 0 makes every conformer identical), got {seed}")
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return [SampleOutcome(k, None, BAD_SMILES, smiles, 0) for k in range(count)]
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        params.numThreads = num_threads
        conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=count, params=params))
        heavy = Chem.RemoveHs(mol)
    outcomes = [SampleOutcome(k, single_conformer(heavy, cid), None, "", 0) for k, cid in enumerate(conf_ids)]
    outcomes += [SampleOutcome(k, None, EMBED_FAILED, smiles, 0) for k in range(len(conf_ids), count)]
    return outcomes


def etkdg_baseline(
    smiles: Sequence[str], counts: Sequence[int], *, seed: int = 42, num_threads: int = 1, progress: bool = False
) -> tuple[list[list[SampleOutcome]], float]:
    """ETKDG samples for every molecule and the wall time spent embedding."""
    start = time.perf_counter()
    results = [
        etkdg_samples(s, k, seed=seed, num_threads=num_threads)
        for s, k in tqdm(list(zip(smiles, counts)), desc="ETKDG", unit="mol", disable=not progress)
    ]
    return results, time.perf_counter() - start

"""Heavy-atom symmetry-aware RMSD in worker processes, and the time limit that keeps it from hanging."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.Geometry import Point3D

from molgen3D.scoring.rmsd import NO_MATCH, RmsdPool, best_rms


def embedded(smiles: str, n: int, seed: int) -> list[Chem.Mol]:
    """n ETKDG conformers, each as its own molecule with hydrogens."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    ids = list(AllChem.EmbedMultipleConfs(mol, n, params))
    return [Chem.Mol(mol, confId=i) for i in ids]


def random_coordinates(smiles: str, seed: int) -> Chem.Mol:
    mol = Chem.MolFromSmiles(smiles)
    rng = np.random.default_rng(seed)
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i in range(mol.GetNumAtoms()):
        conf.SetAtomPosition(i, Point3D(*rng.normal(scale=3.0, size=3)))
    mol.AddConformer(conf)
    return mol


def naive_rmsd(a: Chem.Mol, b: Chem.Mol) -> float:
    """RMSD after optimal superposition with atoms paired by index (no symmetry)."""
    from rdkit.Chem import rdMolAlign

    return rdMolAlign.AlignMol(Chem.Mol(a), b, atomMap=[(i, i) for i in range(a.GetNumAtoms())])


def test_self_rmsd_is_zero():
    mol = Chem.RemoveHs(embedded("CC(=O)Oc1ccccc1C(=O)O", 1, seed=7)[0])
    value, error = best_rms(Chem.Mol(mol), mol, max_matches=1000)
    assert error is None and value == pytest.approx(0.0, abs=1e-6)


def test_symmetry_aware_on_permuted_atoms():
    # Benzoic acid conformer, then the same coordinates with the ortho/meta ring atoms swapped
    # in the atom order: the same geometry up to the ring flip symmetry.
    ref = Chem.RemoveHs(embedded("OC(=O)c1ccccc1", 1, seed=11)[0])
    ring = [a.GetIdx() for a in ref.GetAtoms() if a.GetIsAromatic()]
    ipso = next(i for i in ring if any(not n.GetIsAromatic() for n in ref.GetAtomWithIdx(i).GetNeighbors()))
    ortho = [n.GetIdx() for n in ref.GetAtomWithIdx(ipso).GetNeighbors() if n.GetIsAromatic()]
    meta = [next(n.GetIdx() for n in ref.GetAtomWithIdx(o).GetNeighbors() if n.GetIdx() not in (ipso,)) for o in ortho]
    probe = Chem.Mol(ref)
    conf = probe.GetConformer()
    # move the coordinates of ortho0 <-> ortho1 and meta0 <-> meta1 (a mirror of the ring labels)
    for a, b in ((ortho[0], ortho[1]), (meta[0], meta[1])):
        pa, pb = Point3D(*conf.GetAtomPosition(a)), Point3D(*conf.GetAtomPosition(b))
        conf.SetAtomPosition(a, pb)
        conf.SetAtomPosition(b, pa)
    assert naive_rmsd(probe, ref) > 0.3
    value, error = best_rms(Chem.Mol(probe), ref, max_matches=1000)
    assert error is None and value == pytest.approx(0.0, abs=1e-3)


def test_renumbered_molecule_scores_zero():
    ref = Chem.RemoveHs(embedded("CC(C)Cc1ccc(C(C)C(=O)O)cc1", 1, seed=3)[0])
    order = list(np.random.default_rng(0).permutation(ref.GetNumAtoms()))
    probe = Chem.RenumberAtoms(ref, [int(i) for i in order])
    assert naive_rmsd(probe, ref) > 0.5
    assert best_rms(Chem.Mol(probe), ref, 1000)[0] == pytest.approx(0.0, abs=1e-4)


def test_pool_matrices_match_in_process_values_and_mark_failures():
    refs = embedded("CC(=O)Nc1ccc(O)cc1", 2, seed=5)
    samples = [*embedded("CC(=O)Nc1ccc(O)cc1", 2, seed=6), None, random_coordinates("CCO", 0)]
    with RmsdPool(workers=2, pair_timeout_s=30.0) as pool:
        (matrix,), stats = pool.matrices([(refs, samples)])
    assert matrix.shape == (2, 4)
    for i in range(2):
        for j in range(2):
            expected = best_rms(Chem.RemoveHs(samples[j]), Chem.RemoveHs(refs[i]), 100_000)[0]
            assert matrix[i, j] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(matrix[:, 2]).all()  # a failed sample is a NaN column, never computed
    assert np.isnan(matrix[:, 3]).all()  # ethanol does not map onto paracetamol
    assert stats.pairs == 6 and stats.computed == 4 and stats.errors == {NO_MATCH: 2} and stats.timeouts == 0


# A second-generation tert-butyl dendrimer: ~10^13 symmetric mappings, far beyond any time limit.
DENDRIMER = (
    "C(C(C(C)(C)C)(C(C)(C)C)C(C)(C)C)(C(C(C)(C)C)(C(C)(C)C)C(C)(C)C)"
    "(C(C(C)(C)C)(C(C)(C)C)C(C)(C)C)C(C(C)(C)C)(C(C)(C)C)C(C)(C)C"
)


def test_time_limit_counts_timeouts_and_recovers():
    big_refs = [random_coordinates(DENDRIMER, 0)]
    big_samples = [random_coordinates(DENDRIMER, 1), random_coordinates(DENDRIMER, 2)]
    small = embedded("CCOC(=O)c1ccccc1", 2, seed=9)
    with RmsdPool(workers=1, pair_timeout_s=0.5, max_matches=1_000_000) as pool:
        (big, after), stats = pool.matrices([(big_refs, big_samples), (small[:1], small)])
    assert np.isnan(big).all()
    assert stats.timeouts == 2
    # the replacement worker finished the rest of the work
    assert np.isfinite(after).all() and after[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert stats.computed == 2


def test_worker_dying_as_its_time_runs_out_is_counted_and_replaced(monkeypatch):
    """The worker dies between the wait timing out and the deadline check: its pair is a worker_died error."""
    from molgen3D.scoring import rmsd

    real_wait, killed = rmsd.wait, []

    def wait_then_kill_busy_worker(conns, timeout=None):
        ready = real_wait(conns, timeout=timeout)
        busy = [w for w in pool._workers if w.unit is not None]
        if not ready and busy and not killed:
            busy[0].process.kill()
            busy[0].process.join()
            killed.append(busy[0])
        return ready

    monkeypatch.setattr(rmsd, "wait", wait_then_kill_busy_worker)
    big_refs = [random_coordinates(DENDRIMER, 0)]
    big_samples = [random_coordinates(DENDRIMER, 1), random_coordinates(DENDRIMER, 2)]
    small = embedded("CCOC(=O)c1ccccc1", 1, seed=9)
    with RmsdPool(workers=1, pair_timeout_s=0.5, max_matches=1_000_000) as pool:
        (big, after), stats = pool.matrices([(big_refs, big_samples), (small, small)])
    assert len(killed) == 1
    assert np.isnan(big).all()
    assert stats.errors == {rmsd.WORKER_DIED: 1} and stats.timeouts == 1  # first pair: died; second: timed out
    assert after[0, 0] == pytest.approx(0.0, abs=1e-6) and stats.computed == 1

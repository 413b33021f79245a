"""Heavy-atom, symmetry-aware RMSD matrices in worker processes, with a per-pair time limit.

`rdMolAlign.GetBestRMS` tries every atom mapping the molecular graph allows; for large
symmetric molecules that is combinatorial and a single pair can run for minutes inside C++,
where no signal or thread can stop it. So pairs run in worker processes that report after
every pair; a worker silent for longer than the limit is killed, its pair becomes NaN and is
counted as a time-out, a fresh worker takes over the rest of its work. Nothing hangs.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdMolAlign
from rdkit.rdBase import BlockLogs

NO_MATCH = "no_substructure_match"
WORKER_DIED = "worker_died"
RDKIT_ERROR = "rdkit_error"


def best_rms(probe: Chem.Mol, reference: Chem.Mol, max_matches: int) -> tuple[float, str | None]:
    """(RMSD, None) or (NaN, reason) over all atoms of two heavy-atom molecules, best over graph symmetries.

    Aligns `probe` in place. `max_matches` caps the symmetry mappings tried (RDKit's SubstructMatch).
    """
    try:
        with BlockLogs():
            return float(rdMolAlign.GetBestRMS(probe, reference, maxMatches=max_matches)), None
    except RuntimeError as exc:
        return math.nan, NO_MATCH if "match" in str(exc).lower() else RDKIT_ERROR


@dataclass
class RmsdStats:
    """What the RMSD pass did, for metrics.json."""

    pairs: int = 0
    """Pairs requested (reference x valid sample)."""
    computed: int = 0
    """Pairs with a finite RMSD."""
    timeouts: int = 0
    """Pairs stopped by the time limit (NaN)."""
    errors: Counter = field(default_factory=Counter)
    """Other NaN pairs by reason."""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "computed": self.computed,
            "timeouts": self.timeouts,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
        }


def _worker_main(conn: Connection) -> None:
    """Worker loop: receive (refs, probes, pairs, max_matches); report every pair, then done."""
    conn.send(("ready",))
    while True:
        message = conn.recv()
        if message is None:
            return
        refs, probes, pairs, max_matches = message
        refs = {i: Chem.Mol(b) for i, b in refs.items()}
        probes = {j: Chem.Mol(b) for j, b in probes.items()}
        for i, j in pairs:
            value, error = best_rms(probes[j], refs[i], max_matches)
            conn.send(("pair", i, j, value, error))
        conn.send(("done",))


def _heavy_binary(mol: Chem.Mol) -> bytes:
    return Chem.RemoveHs(mol, sanitize=False).ToBinary()


@dataclass
class _Unit:
    task: int
    pairs: deque


@dataclass
class _Worker:
    process: mp.Process
    conn: Connection
    ready: bool = False
    unit: _Unit | None = None
    deadline: float = math.inf


class RmsdPool:
    """Worker processes computing reference x sample RMSD matrices (use as a context manager)."""

    def __init__(
        self, workers: int = 2, pair_timeout_s: float = 30.0, max_matches: int = 100_000, chunk_pairs: int = 256
    ):
        if workers < 1 or pair_timeout_s <= 0 or max_matches < 1 or chunk_pairs < 1:
            raise ValueError("workers, pair_timeout_s, max_matches and chunk_pairs must be positive")
        self.n_workers, self.pair_timeout_s = workers, pair_timeout_s
        self.max_matches, self.chunk_pairs = max_matches, chunk_pairs
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._failed_starts = 0

    def __enter__(self) -> "RmsdPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self._workers = []

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _kill(self, w: _Worker) -> None:
        w.process.kill()
        w.process.join()
        w.conn.close()

    def matrices(
        self, tasks: Sequence[tuple[Sequence[Chem.Mol], Sequence[Chem.Mol | None]]]
    ) -> tuple[list[np.ndarray], RmsdStats]:
        """For each (references, samples): the len(refs) x len(samples) RMSD matrix; None samples give NaN columns.

        Hydrogens are removed from both sides first (heavy-atom RMSD).
        """
        start = time.perf_counter()
        stats = RmsdStats()
        out = [np.full((len(refs), len(samples)), np.nan) for refs, samples in tasks]
        binaries = [
            ([_heavy_binary(m) for m in refs], [None if m is None else _heavy_binary(m) for m in samples])
            for refs, samples in tasks
        ]
        pending: deque[_Unit] = deque()
        for t, (refs, samples) in enumerate(tasks):
            pairs = [(i, j) for i in range(len(refs)) for j, m in enumerate(samples) if m is not None]
            stats.pairs += len(pairs)
            for k in range(0, len(pairs), self.chunk_pairs):
                pending.append(_Unit(t, deque(pairs[k : k + self.chunk_pairs])))
        if pending:
            while len(self._workers) < self.n_workers:
                self._workers.append(self._spawn())
        while pending or any(w.unit is not None for w in self._workers):
            for w in self._workers:
                if w.ready and w.unit is None and pending:
                    self._assign(w, pending.popleft(), binaries)
            now = time.monotonic()
            timeout = max(0.0, min((w.deadline for w in self._workers), default=math.inf) - now)
            for conn in wait([w.conn for w in self._workers], timeout=None if math.isinf(timeout) else timeout):
                w = next(w for w in self._workers if w.conn is conn)
                self._receive(w, out, stats, pending)
            for k, w in enumerate(self._workers):
                if w.unit is not None and time.monotonic() > w.deadline:
                    while w.unit is not None and w.conn.poll():  # a result that arrived just in time still counts
                        self._receive(w, out, stats, pending)
                    if w.unit is not None and time.monotonic() > w.deadline:
                        self._retire(k, w, stats, pending, timed_out=True)
        stats.seconds = time.perf_counter() - start
        return out, stats

    def _assign(self, w: _Worker, unit: _Unit, binaries) -> None:
        refs_b, samples_b = binaries[unit.task]
        refs = {i: refs_b[i] for i in {i for i, _ in unit.pairs}}
        probes = {j: samples_b[j] for j in {j for _, j in unit.pairs}}
        w.conn.send((refs, probes, list(unit.pairs), self.max_matches))
        w.unit, w.deadline = unit, time.monotonic() + self.pair_timeout_s

    def _receive(self, w: _Worker, out, stats: RmsdStats, pending: deque) -> None:
        try:
            message = w.conn.recv()
        except (EOFError, OSError):
            self._retire(self._workers.index(w), w, stats, pending, timed_out=False)
            return
        kind = message[0]
        if kind == "ready":
            w.ready, self._failed_starts = True, 0
        elif kind == "pair":
            _, i, j, value, error = message
            w.unit.pairs.popleft()
            out[w.unit.task][i, j] = value
            if error is None:
                stats.computed += 1
            else:
                stats.errors[error] += 1
            w.deadline = time.monotonic() + self.pair_timeout_s
        elif kind == "done":
            w.unit, w.deadline = None, math.inf

    def _retire(self, k: int, w: _Worker, stats: RmsdStats, pending: deque, *, timed_out: bool) -> None:
        """Kill a stuck (or dead) worker: its current pair is NaN, the rest of its unit goes back first in line."""
        self._kill(w)
        unit, w.unit, w.deadline = w.unit, None, math.inf  # callers still holding `w` see it idle, its conn closed
        if not w.ready:
            self._failed_starts += 1
            if self._failed_starts >= 3:
                raise RuntimeError(
                    "RMSD worker processes die before they start (3 in a row). Workers are spawned, so a script "
                    "that scores conformers needs the `if __name__ == '__main__':` guard; otherwise run "
                    "`python -c 'import molgen3D.scoring.rmsd'` to see the import error"
                )
        if unit is not None and unit.pairs:
            unit.pairs.popleft()
            if timed_out:
                stats.timeouts += 1
            else:
                stats.errors[WORKER_DIED] += 1
            if unit.pairs:
                pending.appendleft(unit)
        self._workers[k] = self._spawn()

"""Library runs of `molgen3d generate`: streamed, split over a Slurm array, resumable.

The input is read one molecule at a time and sampled in chunks of `chunk` molecules; each
chunk's samples are appended to the output and flushed before the next chunk is read, so
memory does not grow with the library. Molecule i (counted over the usable input molecules)
belongs to shard `i % num_shards`; every shard reads the whole input and keeps its own.

Next to its samples (`out`, or `<stem>.shard-K-of-N.jsonl`) a shard writes an index,
`<file>.index.tsv`: one line `molecule_index<TAB>end byte offset` per molecule, appended
after the molecule's samples are on disk. A killed shard resumes from it (`--resume`): the
samples file is cut at the last indexed molecule and sampling goes on with the next; since
every sample draws from its own seed, the result equals an uninterrupted run. `merge_shards`
interleaves the shards' molecules back into input order: the same bytes one process writes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from molgen3D.datasets.skips import SkipLog
from molgen3D.generation.sample_io import MoleculeInput, iter_smiles_inputs, summary_path, write_samples
from molgen3D.scoring.outcome import SampleOutcome

Sampler = Callable[[Sequence[MoleculeInput], Sequence[int]], list[list[SampleOutcome]]]
"""(molecules, sample counts) -> their samples (what `sample_parallel` returns, without the time)."""
Finisher = Callable[[Sequence[MoleculeInput], list[list[SampleOutcome]]], None]
"""Per-sample work done on each chunk before it is written (stereo marks, hydrogens)."""


class ShardError(ValueError):
    """Shard files that cannot be resumed or merged; the message names the file and the fix."""


def shard_file(out: Path, shard_index: int, num_shards: int) -> Path:
    """The samples file of one shard (`out` itself for a single shard)."""
    out = Path(out)
    if num_shards == 1:
        return out
    return out.with_name(f"{out.stem}.shard-{shard_index:05d}-of-{num_shards:05d}{out.suffix}")


def index_file(samples: Path) -> Path:
    return samples.with_name(samples.name + ".index.tsv")


def check_shards(shard_index: int, num_shards: int, out: Path) -> None:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} --num-shards {num_shards}: need 0 <= shard-index < num-shards")
    if Path(out).suffix.lower() != ".jsonl":
        raise ValueError(f"--out {out}: streamed, sharded or resumed runs write .jsonl (every sample, in order)")


def _read_index(path: Path) -> list[tuple[int, int]]:
    entries = []
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # cut off by a kill: that molecule is sampled again
                index, end = line.split("\t")
                entries.append((int(index), int(end)))
    return entries


def resume_point(samples: Path) -> int:
    """Cut `samples` and its index back to the last molecule completely written; the number of molecules kept."""
    index = index_file(samples)
    entries = _read_index(index)
    size = samples.stat().st_size if samples.exists() else 0
    while entries and entries[-1][1] > size:
        entries.pop()
    end = entries[-1][1] if entries else 0
    with open(samples, "a+b") as f:
        f.truncate(end)
    with open(index, "w", encoding="utf-8") as f:
        f.writelines(f"{i}\t{e}\n" for i, e in entries)
    return len(entries)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_shard(
    smiles_file: Path,
    out: Path,
    counts: Callable[[MoleculeInput], int],
    sample: Sampler,
    finish: Finisher | None = None,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
    resume: bool = False,
    chunk: int = 256,
    prepare: Callable[[MoleculeInput], MoleculeInput] | None = None,
) -> dict:
    """Sample this shard's molecules of `smiles_file` chunk by chunk into its samples file; return its summary.

    `prepare` turns each input molecule into the one sampled (`generate` keeps the largest fragment).
    """
    check_shards(shard_index, num_shards, out)
    path = shard_file(out, shard_index, num_shards)
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        done = resume_point(path)
    else:
        done = 0
        path.write_bytes(b"")
        index_file(path).write_text("", encoding="utf-8")
    skips = SkipLog()
    keep = prepare or (lambda m: m)
    mine = ((i, keep(m)) for i, m in enumerate(iter_smiles_inputs(smiles_file, skips)) if i % num_shards == shard_index)
    failures: Counter = Counter()
    requested = valid = molecules = 0
    for k, part in enumerate(_chunks(mine, chunk)):
        if (k + 1) * chunk <= done:
            continue
        part = part[max(0, done - k * chunk) :]
        mols = [m for _, m in part]
        outcomes = sample(mols, [counts(m) for m in mols])
        if finish is not None:
            finish(mols, outcomes)
        ends = []
        for (i, m), samples in zip(part, outcomes):
            write_samples(path, [m], [samples], mode="a")
            ends.append(f"{i}\t{path.stat().st_size}\n")
        _sync(path)
        with open(index_file(path), "a", encoding="utf-8") as f:
            f.writelines(ends)
            f.flush()
            os.fsync(f.fileno())
        for samples in outcomes:
            requested += len(samples)
            valid += sum(o.mol is not None for o in samples)
            failures.update(o.failure for o in samples if o.failure is not None)
        molecules += len(mols)
    summary = {
        "shard_index": shard_index,
        "num_shards": num_shards,
        "out": str(path),
        "molecules_resumed": done,
        "molecules_sampled": molecules,
        "samples_requested": requested,
        "samples_valid": valid,
        "failures": dict(failures),
        "input_skipped": skips.as_dict(),
    }
    summary_path(path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _sync(path: Path) -> None:
    with open(path, "ab") as f:
        f.flush()
        os.fsync(f.fileno())


def merge_shards(out: Path, num_shards: int) -> dict:
    """Interleave the `num_shards` finished shards of `out` into `out` in input order; the merged summary."""
    files = [shard_file(out, k, num_shards) for k in range(num_shards)]
    for path in files:
        if not summary_path(path).exists():
            raise ShardError(f"{path}: shard not finished (no {summary_path(path).name}); rerun it with --resume")
    indexes = [iter(_read_index(index_file(p))) for p in files]
    handles = [open(p, "rb") for p in files]
    try:
        with open(out, "wb") as merged:
            molecule = 0
            while True:
                k = molecule % num_shards
                entry = next(indexes[k], None)
                if entry is None:
                    break
                if entry[0] != molecule:
                    raise ShardError(f"{index_file(files[k])}: molecule {entry[0]} where {molecule} was due")
                merged.write(handles[k].read(entry[1] - handles[k].tell()))
                molecule += 1
            leftover = [str(files[j]) for j in range(num_shards) if next(indexes[j], None) is not None]
            if leftover:
                raise ShardError(f"shards {leftover} hold molecules past molecule {molecule}, which is missing")
    finally:
        for h in handles:
            h.close()
    parts = [json.loads(summary_path(p).read_text(encoding="utf-8")) for p in files]
    summary = {
        "out": str(out),
        "num_shards": num_shards,
        "molecules": molecule,
        "samples_requested": sum(p["samples_requested"] for p in parts),
        "samples_valid": sum(p["samples_valid"] for p in parts),
        "failures": dict(sum((Counter(p["failures"]) for p in parts), Counter())),
    }
    summary_path(out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m molgen3D.generation.library_run merge OUT NUM_SHARDS`: merge a finished Slurm array's shards."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "merge" or not args[2].isdigit():
        print("usage: python -m molgen3D.generation.library_run merge OUT.jsonl NUM_SHARDS", file=sys.stderr)
        return 2
    try:
        summary = merge_shards(Path(args[1]), int(args[2]))
    except (ShardError, FileNotFoundError) as exc:
        print(f"merge: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

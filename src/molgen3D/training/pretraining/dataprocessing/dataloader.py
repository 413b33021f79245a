"""Conformer JSONL lines -> fixed-length packed next-token samples, sharded, streamed and resumable.

`JsonlTaggedPackedDataset` packs conformer units into sequences: a byte-offset index of every line,
one global permutation per epoch shared by all ranks, rank/worker striding, best-fit packing
from a window of pending units, `<|endoftext|>` separators and padding, labels shifted left
with an ignored tail. `TitanStatefulDataLoader` batches it for TorchTitan 0.2.2 and
checkpoints the per-worker dataset states through torchdata's `StatefulDataLoader`.

Resume state is small on purpose (torchdata snapshots it after every batch in every worker):
the epoch (which, with the seed, determines the permutation: it is the whole RNG state), the
cursor into this worker's share of that permutation, the line numbers of the pending window
(re-read and re-tokenized on load) and the counters. A sample is assembled completely before
it is yielded, so between samples no partly filled sequence exists to be saved.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader.incremental_state import _DATASET_STATE
from torchdata.stateful_dataloader.stateful_dataloader import _StatefulMultiProcessingDataLoaderIter
from torchtitan.components.dataloader import ParallelAwareDataloader

from molgen3D.tokenization.load import eot_id, load_tokenizer
from molgen3D.training.pretraining.dataprocessing.line_index import LineIndex
from molgen3D.training.pretraining.dataprocessing.pack_counters import (
    MAX_EXAMPLES,
    PackCounters,
    merge_counters,
    summarize,
)
from molgen3D.training.pretraining.dataprocessing.packing import assemble, pick_best_fit
from molgen3D.training.pretraining.dataprocessing.unit_checks import parse_line

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 16
"""Default `max_line_bytes` (64 KiB). A conformer line of a drug-like molecule is 1-3 KB (4 decimals); a
line past 64 KiB would tokenize to well over a 4096-token sample and, read, parsed and tokenized every
epoch, slows the loader for nothing (a 5 MB line took steps 1-10 from 5,000 to 600 tokens/s)."""

Sample = tuple[dict[str, torch.Tensor], torch.Tensor]


def _worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the calling DataLoader worker; (0, 1) outside workers."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class JsonlTaggedPackedDataset(IterableDataset):
    """Packed `[SMILES]..[/SMILES][CONFORMER]..[/CONFORMER]<|endoftext|>` samples of `seq_len` tokens.

    Yields `({"input": LongTensor[seq_len]}, labels LongTensor[seq_len])`. Each epoch draws one
    permutation of all lines from (seed, epoch), the same on every rank; rank r of W takes the
    positions p with p % W == r, and DataLoader worker w of N every N-th of those. With
    `infinite=False` one epoch is yielded (the last partial sample flushed), and a new
    iterator starts the next epoch; with `infinite=True` epochs follow each other and packing
    carries pending units across the boundary.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        tokenizer: Any,
        seq_len: int,
        *,
        min_emb_len: int = 16,
        shuffle_lines: bool = True,
        infinite: bool = True,
        seed: int = 0,
        lookahead_limit: int = 100,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        truncate_overflow_units: bool = True,
        max_line_bytes: int = MAX_LINE_BYTES,
    ):
        super().__init__()
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 (one token and its separator), got {seq_len}")
        if lookahead_limit < 1:
            raise ValueError(f"lookahead_limit must be >= 1, got {lookahead_limit}")
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        if min_emb_len < 0:
            raise ValueError(f"min_emb_len must be >= 0, got {min_emb_len}")
        if dp_world_size < 1 or not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"need 0 <= dp_rank < dp_world_size, got dp_rank={dp_rank}, dp_world_size={dp_world_size}")
        self.seq_len = seq_len
        self.min_emb_len = min_emb_len
        self.shuffle_lines = shuffle_lines
        self.infinite = infinite
        self.seed = seed
        self.lookahead_limit = lookahead_limit
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.truncate_overflow_units = truncate_overflow_units
        self.max_line_bytes = max_line_bytes
        self.index = LineIndex(paths)
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
        self.eot_id = eot_id(self.tokenizer)
        # transformers keeps the `tokenizers` object as backend_tokenizer, TorchTitan's tokenizer as .tokenizer
        backend = getattr(self.tokenizer, "backend_tokenizer", None) or getattr(self.tokenizer, "tokenizer", None)
        self._backend = backend if hasattr(backend, "encode") else None
        self._epoch = 0
        self._cursor = 0
        self._window_lines: list[int] = []
        self._window_ids: list[list[int]] = []
        self._window_costs: list[int] = []
        self.counters = PackCounters()
        self._slot: tuple[int, int] | None = None
        self._shard_cache: tuple[tuple[int, int, int], np.ndarray] | None = None

    # --- reading units -------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _skip(self, reason: str, line: int, detail: str) -> None:
        self.counters.skipped[reason] += 1
        examples = self.counters.skip_examples[reason]
        example = f"{self.index.location(line)}: {detail}"
        if len(examples) < MAX_EXAMPLES and example not in examples:
            examples.append(example)
            logger.warning("skipping line (%s) %s", reason, example)

    def _unit_ids(self, line: int) -> tuple[list[int] | None, str | None, str]:
        """Token ids of line `line` (truncated if needed), or (None, reason, detail)."""
        size = self.index.length(line)
        if size > self.max_line_bytes:
            return None, "line_too_long", f"{size:,} bytes > max_line_bytes = {self.max_line_bytes:,}"
        text, reason, detail = parse_line(self.index.read(line), self.min_emb_len)
        if reason is not None:
            return None, reason, detail
        ids = self._encode(text)
        if len(ids) > self.seq_len - 1:
            if not self.truncate_overflow_units:
                return None, "too_long", f"{len(ids)} tokens > seq_len - 1 = {self.seq_len - 1}"
            return ids[: self.seq_len - 1], "truncated", ""
        return ids, None, ""

    # --- sharding ------------------------------------------------------------------------

    def _shard(self, epoch: int) -> np.ndarray:
        """This rank's and worker's lines of `epoch`, in order."""
        worker, n_workers = _worker_slot()
        key = (epoch, worker, n_workers)
        if self._shard_cache is None or self._shard_cache[0] != key:
            n = len(self.index)
            order = np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle_lines else np.arange(n)
            start = self.dp_rank + self.dp_world_size * worker
            self._shard_cache = (key, order[start :: self.dp_world_size * n_workers].copy())
        return self._shard_cache[1]

    def _fill_window(self) -> None:
        """Read lines at the cursor until `lookahead_limit` units are pending or the shard ends."""
        shard = self._shard(self._epoch)
        scanned_without_unit = 0
        while len(self._window_ids) < self.lookahead_limit:
            if self._cursor >= len(shard):
                if not self.infinite:
                    return
                self._end_epoch()
                shard = self._shard(self._epoch)
            line = int(shard[self._cursor])
            self._cursor += 1
            self.counters.lines_read += 1
            ids, reason, detail = self._unit_ids(line)
            if ids is None:
                self._skip(reason, line, detail)
                scanned_without_unit += 1
                if scanned_without_unit > len(shard):
                    raise RuntimeError(
                        f"no usable unit in a whole epoch of {self._describe_shard()}; skipped so far: "
                        f"{ {r: n for r, n in self.counters.skipped.items() if n} }"
                    )
                continue
            scanned_without_unit = 0
            self.counters.truncated += reason == "truncated"
            self.counters.units_read += 1
            self._window_lines.append(line)
            self._window_ids.append(ids)
            self._window_costs.append(len(ids) + 1)

    def _end_epoch(self) -> None:
        logger.info("finished epoch %d of %s: %s", self._epoch, self._describe_shard(), summarize(self.counters))
        self._epoch += 1
        self._cursor = 0

    def _describe_shard(self) -> str:
        worker, n_workers = _worker_slot()
        files = ", ".join(map(str, self.index.files[:3])) + (" ..." if len(self.index.files) > 3 else "")
        return f"{files} (rank {self.dp_rank}/{self.dp_world_size}, worker {worker}/{n_workers})"

    # --- packing -------------------------------------------------------------------------

    def _next_sample(self) -> Sample | None:
        units: list[list[int]] = []
        room = self.seq_len
        while room:
            self._fill_window()
            pick = pick_best_fit(self._window_costs, room, self.lookahead_limit)
            if pick is None:
                break
            del self._window_lines[pick]
            units.append(self._window_ids.pop(pick))
            room -= self._window_costs.pop(pick)
        if not units:
            return None
        ids, labels, n_real = assemble(units, self.seq_len, self.eot_id)
        c = self.counters
        c.samples += 1
        c.units_packed += len(units)
        c.tokens += n_real
        c.padding_tokens += self.seq_len - n_real
        # via numpy: 3x faster than torch.tensor on a list of ints
        inputs = torch.from_numpy(np.array(ids, dtype=np.int64))
        return {"input": inputs}, torch.from_numpy(np.array(labels, dtype=np.int64))

    def _claim_slot(self) -> None:
        """Tie the state to the worker slot that first iterates (or loads) it.

        A state advanced as one worker would be misread by another (its cursor indexes a
        different shard), e.g. a dataset iterated in the main process and then handed to a
        DataLoader with workers.
        """
        slot = _worker_slot()
        if self._slot is None:
            self._slot = slot
        elif self._slot != slot:
            raise RuntimeError(
                f"this dataset's state belongs to worker {self._slot[0]} of {self._slot[1]}, not worker {slot[0]} of "
                f"{slot[1]}; give each DataLoader a freshly built dataset"
            )

    def __iter__(self) -> Iterator[Sample]:
        self._claim_slot()
        if len(self._shard(self._epoch)) == 0:
            message = f"{self._describe_shard()} gets no lines: the data set has {len(self.index)} lines"
            if self.infinite:
                raise RuntimeError(f"{message}; use fewer dataloader workers or ranks")
            logger.warning("%s; this worker yields nothing", message)
            return
        while (sample := self._next_sample()) is not None:
            yield sample
        self._end_epoch()

    # --- state ---------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "n_files": len(self.index.files),
            "n_lines": len(self.index),
            "seq_len": self.seq_len,
            "seed": self.seed,
            "shuffle_lines": self.shuffle_lines,
            "infinite": self.infinite,
            "lookahead_limit": self.lookahead_limit,
            "min_emb_len": self.min_emb_len,
            "truncate_overflow_units": self.truncate_overflow_units,
            "max_line_bytes": self.max_line_bytes,
            "dp_rank": self.dp_rank,
            "dp_world_size": self.dp_world_size,
            "eot_id": self.eot_id,
            "vocab_size": self._backend.get_vocab_size() if self._backend is not None else len(self.tokenizer),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly after the last yielded sample (small: ints only)."""
        return {
            "fingerprint": self._fingerprint(),
            "worker": list(self._slot or _worker_slot()),
            "epoch": self._epoch,
            "cursor": self._cursor,
            "window": list(self._window_lines),
            "counters": asdict(self.counters),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; the dataset must be built with the same arguments and data."""
        mine = self._fingerprint()
        diff = {k: (v, mine.get(k)) for k, v in state["fingerprint"].items() if mine.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(
                f"dataloader state does not match this dataset ({shown}); build it with the saved settings"
            )
        if list(state["worker"]) != list(_worker_slot()):
            raise ValueError(f"dataloader state is for worker {state['worker']}, not {list(_worker_slot())}")
        self._slot = _worker_slot()
        self._epoch = int(state["epoch"])
        self._cursor = int(state["cursor"])
        self._window_lines, self._window_ids, self._window_costs = [], [], []
        for line in state["window"]:
            ids, reason, detail = self._unit_ids(int(line))
            if ids is None:
                raise ValueError(
                    f"dataloader state names {self.index.location(int(line))}, which is no longer a unit "
                    f"({reason}: {detail}); the data changed since the state was saved"
                )
            self._window_lines.append(int(line))
            self._window_ids.append(ids)
            self._window_costs.append(len(ids) + 1)
        self.counters = merge_counters([state["counters"]])

    def metrics(self) -> dict[str, float]:
        return summarize(self.counters)


def collate_packed(samples: list[Sample]) -> Sample:
    """Stack samples into `({"input": LongTensor[B, L]}, labels LongTensor[B, L])`."""
    inputs = torch.stack([s[0]["input"] for s in samples])
    labels = torch.stack([s[1] for s in samples])
    return {"input": inputs}, labels


def dataset_states(loader_state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The dataset states inside a `StatefulDataLoader.state_dict()` (one per worker, or one)."""
    if _DATASET_STATE in loader_state:
        found = [loader_state[_DATASET_STATE]]
    else:
        snapshot = loader_state[_StatefulMultiProcessingDataLoaderIter._SNAPSHOT]
        workers = snapshot[_StatefulMultiProcessingDataLoaderIter._WORKER_SNAPSHOTS]
        found = [workers[key][_DATASET_STATE] for key in sorted(workers)]
    return [s for s in found if s is not None]


class TitanStatefulDataLoader(ParallelAwareDataloader):
    """TorchTitan 0.2.2 `BaseDataLoader` over a `JsonlTaggedPackedDataset`.

    State (checkpointed by TorchTitan's CheckpointManager per dp rank) is torchdata's
    `StatefulDataLoader` state, which holds each worker's dataset `state_dict()` as of the
    last yielded batch. `metrics()` sums the counters of those dataset states, so it is exact
    with any number of workers and costs no extra communication with them.
    """

    def __init__(
        self,
        dataset: JsonlTaggedPackedDataset,
        *,
        dp_rank: int,
        dp_world_size: int,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        persistent_workers: bool = False,
    ):
        if (dataset.dp_rank, dataset.dp_world_size) != (dp_rank, dp_world_size):
            raise ValueError(
                f"dataset was built for dp_rank={dataset.dp_rank}/{dataset.dp_world_size} but the loader "
                f"for dp_rank={dp_rank}/{dp_world_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata 0.11 on torch 2.13
            super().__init__(
                dataset,
                dp_rank=dp_rank,
                dp_world_size=dp_world_size,
                batch_size=batch_size,
                collate_fn=collate_packed,
                num_workers=num_workers,
                pin_memory=pin_memory and torch.accelerator.is_available(),
                prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers,
                snapshot_every_n_steps=1,
            )
        self._iter_listeners: list[Callable[[], None]] = []

    def add_iter_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever iteration starts (after any state was restored), before the first batch."""
        self._iter_listeners.append(listener)

    def __iter__(self):
        for listener in self._iter_listeners:
            listener()
        return super().__iter__()

    def metrics(self) -> dict[str, float]:
        """Cumulative counters of everything yielded so far (see `summarize`)."""
        if self._iterator is not None:
            states = dataset_states(self._iterator.state_dict())
        elif self.next_iter_state is not None:
            states = dataset_states(self.next_iter_state)
        else:
            states = [self.dataset.state_dict()]
        return summarize(merge_counters(s["counters"] for s in states))

"""One epoch over W ranks x N workers sees every unit exactly once (none lost, none repeated)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from molgen3D.tokenization.load import eot_id
from molgen3D.training.pretraining.dataprocessing import dataloader as dl
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset, TitanStatefulDataLoader

from .conftest import encode, units_of_batches, write_synthetic

N_LINES = 53
SEQ_LEN = 96


@pytest.fixture(scope="module")
def data(tmp_path_factory, compact_tokenizer):
    path = tmp_path_factory.mktemp("shard") / "d.jsonl"
    records = write_synthetic(path, N_LINES, seed=11)
    expected = Counter(encode(compact_tokenizer, r) for r in records)
    assert len(expected) == N_LINES and max(map(len, expected)) < SEQ_LEN, "units must be distinct and fit"
    return path, expected


def _epoch_units(path, tok, rank, world, monkeypatch=None, worker=0, n_workers=0, lookahead=5):
    """Units of one epoch of rank `rank`; n_workers > 0 poses as DataLoader worker `worker`."""
    if n_workers:
        info = SimpleNamespace(id=worker, num_workers=n_workers)
        monkeypatch.setattr(dl, "get_worker_info", lambda: info)
    ds = JsonlTaggedPackedDataset(
        path,
        tok,
        SEQ_LEN,
        infinite=False,
        min_emb_len=0,
        seed=7,
        lookahead_limit=lookahead,
        dp_rank=rank,
        dp_world_size=world,
    )
    return units_of_batches(list(ds), SEQ_LEN, eot_id(tok))


@pytest.mark.parametrize("world", range(1, 9))
def test_every_unit_once_per_epoch_for_each_rank_and_worker_count(data, compact_tokenizer, world, monkeypatch):
    path, expected = data
    for n_workers in (0, 1, 2, 3):
        seen: Counter = Counter()
        per_slot = []
        for rank in range(world):
            for worker in range(max(n_workers, 1)):
                units = _epoch_units(path, compact_tokenizer, rank, world, monkeypatch, worker, n_workers)
                per_slot.append(len(units))
                seen.update(units)
        assert seen == expected, f"W={world} workers={n_workers}"
        # the striding is balanced: shares differ by at most one line
        assert max(per_slot) - min(per_slot) <= 1


def test_worker_processes_of_two_ranks_cover_the_epoch_once(data, compact_tokenizer):
    path, expected = data
    for n_workers in (2, 3):
        seen: Counter = Counter()
        for rank in range(2):
            ds = JsonlTaggedPackedDataset(
                path, compact_tokenizer, SEQ_LEN, infinite=False, min_emb_len=0, seed=7, dp_rank=rank, dp_world_size=2
            )
            loader = TitanStatefulDataLoader(ds, dp_rank=rank, dp_world_size=2, batch_size=3, num_workers=n_workers)
            seen.update(units_of_batches(list(loader), SEQ_LEN, eot_id(compact_tokenizer)))
        assert seen == expected, f"workers={n_workers}"


def test_same_seed_gives_the_same_order_and_each_epoch_reshuffles(data, compact_tokenizer):
    path, _ = data
    one = _epoch_units(path, compact_tokenizer, 0, 1)
    ds = JsonlTaggedPackedDataset(
        path, compact_tokenizer, SEQ_LEN, infinite=False, min_emb_len=0, seed=7, lookahead_limit=5
    )
    first, second = list(ds), list(ds)  # a new iterator starts the next epoch
    first_units = units_of_batches(first, SEQ_LEN, eot_id(compact_tokenizer))
    second_units = units_of_batches(second, SEQ_LEN, eot_id(compact_tokenizer))
    assert first_units == one
    assert sorted(second_units) == sorted(first_units) and second_units != first_units


@pytest.mark.parametrize("world,n_workers", [(1, 3), (3, 1), (4, 2), (8, 3)])
def test_rank_takes_positions_congruent_to_rank_and_worker_every_nth_of_those(
    data, compact_tokenizer, world, n_workers, monkeypatch
):
    """With lookahead 1 packing keeps read order, so the striding of the permutation is visible."""
    path, _ = data
    permutation = _epoch_units(path, compact_tokenizer, 0, 1, lookahead=1)
    for rank in range(world):
        for worker in range(n_workers):
            got = _epoch_units(path, compact_tokenizer, rank, world, monkeypatch, worker, n_workers, lookahead=1)
            assert got == permutation[rank::world][worker::n_workers]

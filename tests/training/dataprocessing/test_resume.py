"""A dataset or loader restored from state_dict() continues exactly where the original was."""

from __future__ import annotations

import itertools
import pickle
from types import SimpleNamespace

import pytest
import torch

from molgen3D.training.pretraining.dataprocessing import dataloader as dl
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset, TitanStatefulDataLoader

from .conftest import write_synthetic

N_LINES = 23
SEQ_LEN = 80


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("resume") / "d.jsonl"
    write_synthetic(p, N_LINES, seed=3, max_atoms=5)
    return p


def _dataset(path, tok, **kw):
    args = dict(infinite=True, min_emb_len=0, seed=1, lookahead_limit=4)
    args.update(kw)
    return JsonlTaggedPackedDataset(path, tok, SEQ_LEN, **args)


def _same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa["input"], xb["input"]) and torch.equal(ya, yb)


def test_dataset_state_after_k_samples_continues_with_sample_k_plus_1(path, compact_tokenizer):
    reference_ds = _dataset(path, compact_tokenizer)
    reference = list(itertools.islice(iter(reference_ds), 60))
    assert reference_ds.state_dict()["epoch"] >= 2, "the run must cross epoch boundaries"
    for k in (0, 1, 7, 19, 33, 50):
        ds = _dataset(path, compact_tokenizer)
        it = iter(ds)
        taken = list(itertools.islice(it, k))
        _same(taken, reference[:k])
        state = pickle.loads(pickle.dumps(ds.state_dict()))
        fresh = _dataset(path, compact_tokenizer)
        fresh.load_state_dict(state)
        _same(list(itertools.islice(iter(fresh), 10)), reference[k : k + 10])
        assert fresh.metrics()["samples"] == k + 10


def test_state_holds_line_numbers_not_text(path, compact_tokenizer):
    ds = _dataset(path, compact_tokenizer)
    next(iter(ds))
    state = ds.state_dict()
    assert all(isinstance(v, int) for v in state["window"]) and len(state["window"]) <= 4
    assert b"CONFORMER" not in pickle.dumps(state)


def test_state_from_other_settings_is_refused_naming_them(path, compact_tokenizer):
    ds = _dataset(path, compact_tokenizer)
    next(iter(ds))
    other = JsonlTaggedPackedDataset(path, compact_tokenizer, SEQ_LEN + 8, min_emb_len=0, seed=2, lookahead_limit=4)
    with pytest.raises(ValueError, match=r"seed: saved 1 vs now 2.*seq_len: saved 80 vs now 88"):
        other.load_state_dict(ds.state_dict())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_restored_after_k_batches_yields_the_same_next_batches(path, compact_tokenizer, num_workers):
    k, m = 9, 5

    def make():
        return TitanStatefulDataLoader(
            _dataset(path, compact_tokenizer), dp_rank=0, dp_world_size=1, batch_size=2, num_workers=num_workers
        )

    reference = list(itertools.islice(iter(make()), k + m))
    loader = make()
    it = iter(loader)
    for _ in range(k):
        next(it)
    state = pickle.loads(pickle.dumps(loader.state_dict()))  # TorchTitan stores it through DCP
    assert set(state) == {"dp_rank_0", "world_size"}
    assert loader.metrics()["lines_read"] > N_LINES, "k batches must cross an epoch boundary"
    restored = make()
    restored.load_state_dict(state)
    assert restored.metrics() == loader.metrics()
    _same(list(itertools.islice(iter(restored), m)), reference[k:])


def test_a_pickled_copy_yields_the_same_samples(path, compact_tokenizer):
    ds = _dataset(path, compact_tokenizer)
    copy = pickle.loads(pickle.dumps(ds))  # what a spawn-started worker receives
    _same(list(itertools.islice(iter(copy), 12)), list(itertools.islice(iter(ds), 12)))


def test_a_dataset_advanced_in_one_worker_slot_refuses_another(path, compact_tokenizer, monkeypatch):
    ds = _dataset(path, compact_tokenizer)
    next(iter(ds))
    monkeypatch.setattr(dl, "get_worker_info", lambda: SimpleNamespace(id=1, num_workers=2))
    with pytest.raises(RuntimeError, match="belongs to worker 0 of 1, not worker 1 of 2"):
        next(iter(ds))

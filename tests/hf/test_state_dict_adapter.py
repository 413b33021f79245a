"""reinit_token_rows: exactly the tag rows change, the tied head follows, DTensor shards included."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch import nn

from molgen3D.hf.state_dict_adapter import reinit_token_rows


class _Tied(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.output = nn.Linear(dim, vocab, bias=False)
        self.output.weight = self.tok_embeddings.weight


def _expected_rows(n: int, dim: int, std: float, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * std


def test_only_the_named_rows_change_and_the_tied_head_follows():
    torch.manual_seed(0)
    model = _Tied(vocab=50, dim=64)
    before = model.tok_embeddings.weight.detach().clone()
    ids = [3, 17, 18, 49]
    reinit_token_rows(model, ids, std=0.5, seed=11)
    after = model.tok_embeddings.weight.detach()

    others = [i for i in range(50) if i not in ids]
    assert torch.equal(after[others], before[others])
    assert torch.equal(after[ids], _expected_rows(4, 64, 0.5, 11))
    assert not torch.equal(after[ids], before[ids])
    assert torch.equal(model.output.weight[ids], after[ids])  # the head is the same parameter
    assert 0.4 < after[ids].std().item() < 0.6  # 256 draws of N(0, 0.5)


def test_same_seed_same_rows_and_bad_ids_are_named():
    a, b = _Tied(10, 8), _Tied(10, 8)
    reinit_token_rows(a, [1, 2], std=0.1, seed=5)
    reinit_token_rows(b, [1, 2], std=0.1, seed=5)
    assert torch.equal(a.tok_embeddings.weight[[1, 2]], b.tok_embeddings.weight[[1, 2]])
    with pytest.raises(ValueError, match=r"\[10\] are outside the embedding's 10 rows"):
        reinit_token_rows(a, [1, 10], std=0.1)
    with pytest.raises(ValueError, match="distinct"):
        reinit_token_rows(a, [1, 1], std=0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        full = torch.arange(10 * 6, dtype=torch.float32).reshape(10, 6)
        for name, placement in (("shard0", Shard(0)), ("shard1", Shard(1)), ("replicate", Replicate())):
            model = _Tied(10, 6)
            model.tok_embeddings.weight = nn.Parameter(distribute_tensor(full.clone(), mesh, [placement]))
            model.output.weight = model.tok_embeddings.weight
            # Rows 1 and 7 live on different ranks under Shard(0) (rows 0-4 / 5-9).
            reinit_token_rows(model, [1, 7], std=1.0, seed=3)
            result = model.tok_embeddings.weight.full_tensor()
            if rank == 0:
                torch.save(result, os.path.join(out_dir, f"{name}.pt"))
    finally:
        dist.destroy_process_group()


def test_dtensor_shards_write_their_part_of_the_rows(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules instead of importing torch and TorchTitan again.
    mp.start_processes(_sharded_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    full = torch.arange(10 * 6, dtype=torch.float32).reshape(10, 6)
    expected = full.clone()
    expected[[1, 7]] = _expected_rows(2, 6, 1.0, 3)
    for name in ("shard0", "shard1", "replicate"):
        assert torch.equal(torch.load(tmp_path / f"{name}.pt"), expected), name

"""Library runs: shards merge to the bytes of one process, a killed shard resumes to the same file."""

from __future__ import annotations

import pytest
from rdkit import Chem

from molgen3D.generation.library_run import ShardError, index_file, merge_shards, run_shard, shard_file
from molgen3D.generation.sampling import MAX_NEW_TOKENS, SampleOutcome

SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "CN", "not_a_smiles", "OCCO", "CCN(C)C", "C1CC1", "CCCl"]


class Killed(RuntimeError):
    pass


def fake_sample(kill_after: int | None = None):
    """A deterministic stand-in for the model: sample k of a molecule depends on the molecule and k only."""
    calls = []

    def sample(mols, counts):
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append(len(mols))
        out = []
        for m, n in zip(mols, counts):
            mol = Chem.MolFromSmiles(m.smiles)
            out.append(
                [
                    SampleOutcome(k, None, MAX_NEW_TOKENS, f"{m.smiles}#{k}", 3 + k)
                    if mol.GetNumAtoms() % 2
                    else SampleOutcome(k, None, "parse_error", f"{m.smiles}!{k}", k)
                    for k in range(n)
                ]
            )
        return out

    return sample


@pytest.fixture
def library(tmp_path):
    path = tmp_path / "library.smi"
    path.write_text("".join(f"{s} mol{i}\n" for i, s in enumerate(SMILES)))
    return path


def counts(m):
    return 1 + len(m.smiles) % 3


@pytest.mark.parametrize("num_shards", [2, 3])
def test_shards_merge_to_the_bytes_of_one_process(tmp_path, library, num_shards):
    one = tmp_path / "one" / "samples.jsonl"
    run_shard(library, one, counts, fake_sample(), chunk=2)
    sharded = tmp_path / "sharded" / "samples.jsonl"
    for k in reversed(range(num_shards)):
        run_shard(library, sharded, counts, fake_sample(), shard_index=k, num_shards=num_shards, chunk=2)
    summary = merge_shards(sharded, num_shards)
    assert sharded.read_bytes() == one.read_bytes() and len(one.read_bytes()) > 0
    assert summary["molecules"] == len(SMILES) - 1


def test_merge_refuses_an_unfinished_shard(tmp_path, library):
    out = tmp_path / "samples.jsonl"
    run_shard(library, out, counts, fake_sample(), shard_index=0, num_shards=2)
    with pytest.raises(ShardError, match="resume"):
        merge_shards(out, 2)


@pytest.mark.parametrize("torn", [False, True])
def test_a_killed_shard_resumes_to_the_uninterrupted_file(tmp_path, library, torn):
    whole = tmp_path / "whole.jsonl"
    run_shard(library, whole, counts, fake_sample(), shard_index=1, num_shards=2, chunk=1)
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(Killed):
        run_shard(library, out, counts, fake_sample(kill_after=2), shard_index=1, num_shards=2, chunk=1)
    path = shard_file(out, 1, 2)
    if torn:  # killed in the middle of writing the next molecule: half a record, no index line
        with open(path, "a", encoding="utf-8") as f:
            f.write('{"name": "half')
    summary = run_shard(library, out, counts, fake_sample(), shard_index=1, num_shards=2, chunk=1, resume=True)
    assert summary["molecules_resumed"] == 2
    assert path.read_bytes() == shard_file(whole, 1, 2).read_bytes()
    assert index_file(path).read_text() == index_file(shard_file(whole, 1, 2)).read_text()


def test_generate_shards_with_a_model_merge_to_one_process(tmp_path, library, compact_model_dir):
    """Through `generate` and the model: shards decode other batches, and still write the same samples."""
    from molgen3D.generation.generate import GenerateConfig, generate
    from molgen3D.generation.sampling import SamplingConfig

    def run(out, **kw):
        cfg = GenerateConfig(
            model=str(compact_model_dir),
            smiles=library,
            out=out,
            num_samples=2,
            device="cpu",
            progress=False,
            sampling=SamplingConfig(max_new_tokens=60, batch_size=3, seed=4),
            **kw,
        )
        return generate(cfg)

    one = tmp_path / "one.jsonl"
    run(one, stream=True)
    merged = tmp_path / "merged.jsonl"
    for k in range(2):
        run(merged, shard_index=k, num_shards=2)
    merge_shards(merged, 2)
    assert merged.read_bytes() == one.read_bytes()
    assert one.read_text().count("\n") == 2 * (len(SMILES) - 1)

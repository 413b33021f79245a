"""The model is loaded once (once per worker process) for a whole evaluate/generate run, not once per chunk."""

from __future__ import annotations

import json

import pytest

from molgen3D.evaluation import evaluate as evaluate_module
from molgen3D.generation import parallel
from molgen3D.generation.sampling import SamplingConfig


def test_evaluate_builds_one_sampler_pool_for_all_chunks(compact_model_dir, tmp_path, fixture_data, monkeypatch):
    built, calls = [], []

    class CountingPool(parallel.SamplerPool):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("workers"))
            super().__init__(*args, **kwargs)

        def sample(self, smiles, counts, **kwargs):
            calls.append(list(smiles))
            return super().sample(smiles, counts, **kwargs)

    monkeypatch.setattr(parallel, "SamplerPool", CountingPool)
    from_config = parallel.SamplerPool.from_config.__func__
    configs = []

    def recording(cls, run, model_dir, cfg):
        configs.append(type(run).__name__)
        return from_config(cls, run, model_dir, cfg)

    monkeypatch.setattr(CountingPool, "from_config", classmethod(recording))
    args = ["--references", str(fixture_data / "test"), "--out", str(tmp_path / "e"), "--model"]
    args += [
        str(compact_model_dir),
        "--max-molecules",
        "3",
        "--max-conformers",
        "1",
        "--max-new-tokens",
        "300",
        "--no-geometry",
    ]
    args += ["--chunk-molecules", "1", "--no-progress", "--rmsd-workers", "1", "--posebusters", "none"]
    assert evaluate_module.cli(args) == 0
    assert len(calls) == 3, "one sampling call per one-molecule chunk"
    assert built == [1], "but one model load for the whole run"
    assert configs == ["EvaluateConfig"], "built from the command's config"
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["methods"]["model"]["samples_requested"] == 6


def test_a_pool_of_two_workers_keeps_its_processes_and_matches_one_process(compact_model_dir, fixture_data):
    smiles = ["CCO", "c1ccccc1O", "CC(=O)N"]
    cfg = SamplingConfig(max_new_tokens=200, seed=3, precision=4)
    alone, _ = parallel.sample_parallel(compact_model_dir, None, smiles, [2, 2, 2], cfg, workers=1, device="cpu")
    with parallel.SamplerPool(compact_model_dir, None, cfg, workers=2, device="cpu") as pool:
        pids = sorted(p.pid for p in pool._pool._pool)
        first, _ = pool.sample(smiles[:2], [2, 2])
        second, _ = pool.sample(smiles[2:], [2])
        assert sorted(p.pid for p in pool._pool._pool) == pids, "the same worker processes serve every call"
    texts = [[o.text for o in samples] for samples in first + second]
    assert texts == [[o.text for o in samples] for samples in alone]


def test_the_pool_takes_the_run_settings_from_a_command_config(monkeypatch):
    """One constructor reads --tokenizer/--workers/--device/--dtype/--threads, so no command repeats the list."""
    from types import SimpleNamespace

    seen = {}

    def recording_init(self, model_dir, tokenizer_arg, cfg, **kwargs):
        seen.update(model_dir=model_dir, tokenizer_arg=tokenizer_arg, cfg=cfg, **kwargs)

    monkeypatch.setattr(parallel.SamplerPool, "__init__", recording_init)
    run = SimpleNamespace(tokenizer="tok-dir", workers=3, device="cuda:1", dtype="bfloat16", threads=2)
    sampling = SamplingConfig(max_new_tokens=50, seed=7)
    pool = parallel.SamplerPool.from_config(run, "model-dir", sampling)
    assert isinstance(pool, parallel.SamplerPool)
    assert seen == {
        "model_dir": "model-dir",
        "tokenizer_arg": "tok-dir",
        "cfg": sampling,
        "workers": 3,
        "device": "cuda:1",
        "dtype": "bfloat16",
        "threads": 2,
    }


@pytest.mark.parametrize("stream", [False, True])
def test_generate_builds_its_pool_from_its_config(compact_model_dir, tmp_path, monkeypatch, stream):
    from molgen3D.generation.generate import GenerateConfig, generate

    used = []
    real = parallel.SamplerPool.from_config.__func__

    def recording(cls, run, model_dir, cfg):
        used.append(type(run).__name__)
        return real(cls, run, model_dir, cfg)

    monkeypatch.setattr(parallel.SamplerPool, "from_config", classmethod(recording))
    smiles = tmp_path / "in.smi"
    smiles.write_text("CCO\n")
    sampling = SamplingConfig(max_new_tokens=60, seed=1)
    model, out = str(compact_model_dir), tmp_path / "out.jsonl"
    cfg = GenerateConfig(model=model, smiles=smiles, out=out, device="cpu", progress=False, sampling=sampling)
    cfg.stream = stream
    generate(cfg)
    assert used == ["GenerateConfig"]


def test_a_molecule_spread_over_workers_is_counted_once(compact_model_dir):
    """Per-molecule counts (bounded atoms, stereo rules) do not grow with the batches or workers a molecule's
    samples are spread over; the guarded steps, like the samples, are the same with one or two workers."""
    smiles = ["C[C@H](O)c1ccccc1"]
    cfg = SamplingConfig(max_new_tokens=200, seed=3, precision=4, batch_size=1)  # 16 samples per unit of work
    counts = {}
    for workers in (1, 2):
        with parallel.SamplerPool(compact_model_dir, None, cfg, workers=workers, device="cpu") as pool:
            pool.sample(smiles, [20])  # two units of work
            counts[workers] = pool.stats
    assert counts[1]["geometry_atoms"] == counts[2]["geometry_atoms"] == 8
    assert counts[1]["stereo_rules"] == counts[2]["stereo_rules"] == 1
    assert counts[1]["guarded_steps"] == counts[2]["guarded_steps"] > 0

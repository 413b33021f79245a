"""benchmarks/gpu_smoke.py: its figures from made-up timings, the device order of a multi-GPU rank, and a real
(tiny, CPU) run of the script, sharded with FSDP over one rank as the GPU runs are."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def smoke(load_benchmark):
    return load_benchmark("gpu_smoke")


def test_summary_figures(smoke):
    losses = [10.0 - 0.1 * i for i in range(30)]
    r = smoke.summarize([9.0, 1.0, 1.0, 1.0], losses, 8192, 6.395e9, 989e12, 35.0, warmup=1, world=8)
    assert r["tokens_per_s_per_gpu"] == 8192.0 and r["gpus"] == 8 and r["timed_steps"] == 3
    assert r["mfu_percent"] == pytest.approx(100 * 8192 * 6.395e9 / 989e12, abs=0.01)
    assert r["loss_falls"] and r["loss_first"] > r["loss_last"]
    flat = smoke.summarize([1.0, 1.0], [5.0, 5.0, 5.0, 5.0], 1, 1.0, None, 1.0, warmup=0, world=1)
    assert flat["mfu_percent"] is None and not flat["loss_falls"]
    assert not smoke.loss_falls([3.0])


def test_gpu_counts(smoke):
    assert smoke.gpu_counts("1,all", 8) == [1, 8]
    assert smoke.gpu_counts("1,all", 1) == [1]
    with pytest.raises(SystemExit, match="4 GPUs asked, 2 visible"):
        smoke.gpu_counts("4", 2)


@pytest.mark.slow
def test_cpu_run_of_the_tiny_flavor(smoke, tmp_path):
    out = tmp_path / "smoke.json"
    smoke.main(["--steps", "8", "--warmup", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert result["flavor"] == "tiny" and run["steps"] == 8 and run["tokens_per_s_per_gpu"] > 0
    assert run["mfu_percent"] is None and run["peak_memory_gib"] > 0 and run["loss_first"] is not None
    assert run["fsdp"], "one rank is still sharded with FSDP (the production setup), not left unwrapped"


def test_the_cuda_run_config_loads(smoke, compact_tokenizer_dir, tmp_path):
    """What the CUDA path trains (no GPU here to run it): the real 0.6B TOML with the smoke overrides."""
    from molgen3D.training.pretraining.config.loading import load_job_config

    args = smoke.parse(
        ["--toml", str(smoke.PRETRAIN / "qwen3_06b.toml"), "--flavor", "0.6B", "--steps", "50", "--warmup", "10"]
    )
    cfg = load_job_config(args.toml, smoke.overrides_for(args, compact_tokenizer_dir, tmp_path, "smoke"))
    assert cfg.model.flavor == "0.6B" and cfg.training.seq_len == 4096 and cfg.compile.enable
    assert cfg.activation_checkpoint.mode == "none" and cfg.training.steps == 50
    assert not cfg.checkpoint.enable and not cfg.validation.enable and cfg.molgen_run.init_mode == "scratch"
    assert cfg.training.global_batch_size == cfg.training.local_batch_size  # one GPU, no accumulation


def test_each_rank_sets_its_gpu_before_resetting_peak_memory(smoke, monkeypatch):
    """Resetting first would open a CUDA context on cuda:0 in every rank of a multi-GPU launch."""
    calls = []
    monkeypatch.setattr(smoke.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(smoke.torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(smoke.torch.cuda, "reset_peak_memory_stats", lambda index=None: calls.append(("reset", index)))
    assert smoke.prepare_device({"LOCAL_RANK": "3"}) == 3
    assert calls == [("set_device", 3), ("reset", 3)]


def test_scratch_runs_name_no_base_model_and_gpu_runs_use_real_sized_data(smoke, monkeypatch, tmp_path):
    args = smoke.parse(["--steps", "5", "--warmup", "1"])
    overrides = smoke.overrides_for(args, tmp_path, tmp_path, "x")
    at = overrides.index("--molgen_run.base_model_tag")
    assert overrides[at + 1] == "" and overrides[overrides.index("--model.hf_assets_path") + 1] == ""
    monkeypatch.setattr(smoke.torch.cuda, "is_available", lambda: True)
    assert smoke.parse(["--steps", "5", "--warmup", "1"]).data == smoke.EMBEDDED

"""A GPU-sized flavor never falls back to the CPU silently."""

from __future__ import annotations

import pytest
import torch

from molgen3D.training.pretraining import device_check as dc


def test_cpu_flavors_and_accelerators_pass():
    assert dc.cpu_fallback_problem("tiny", False, accelerator=False) is None
    assert dc.cpu_fallback_problem("small", False, accelerator=False) is None
    assert dc.cpu_fallback_problem("0.6B", False, accelerator=True) is None
    assert dc.cpu_fallback_problem("0.6B", True, accelerator=False) is None  # the explicit override


def test_gpu_flavor_on_cpu_names_the_problem_and_the_override():
    text = dc.cpu_fallback_problem("0.6B", False, accelerator=False, problem="torch.cuda.init() failed: driver too old")
    assert "flavor = '0.6B'" in text and "driver too old" in text and "[molgen_run] allow_cpu = true" in dc.FIX


def test_check_device_raises_with_torchs_own_reason(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(dc.NoAcceleratorError) as info:
        dc.check_device("0.6B", allow_cpu=False, accelerator=False)
    text = str(info.value)
    assert "CUDA_VISIBLE_DEVICES=''" in text and "allow_cpu = true" in text
    # This machine has no GPU: torch either is built without CUDA or fails to initialise it.
    assert "built without CUDA" in text or "torch.cuda.init() failed" in text or "torch warned" in text
    dc.check_device("tiny", allow_cpu=False, accelerator=False)


def test_runner_refuses_a_gpu_flavor_on_this_cpu(make_tiny_toml):
    """The runner's pre-flight check: no silent CPU run of 0.6B; the override lets it through that check."""
    from molgen3D.training.pretraining import torchtitan_runner as runner
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError

    toml = make_tiny_toml("gpu", model={"flavor": "0.6B"})
    with pytest.raises(MolGenConfigError) as info:
        runner.run_pretraining(toml)
    assert info.value.key == "molgen_run.allow_cpu" and "flavor = '0.6B' is sized for GPUs" in str(info.value)


def test_parallelize_refuses_a_gpu_flavor_on_the_cpu_layer(make_tiny_toml):
    """TorchTitan's own entry point skips the runner: the train spec's parallelize step checks too."""
    from types import SimpleNamespace

    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.config.loading import load_job_config
    from molgen3D.training.pretraining.torchtitan_model.parallelize import parallelize_molgen_qwen3

    patches.apply_cpu_layer()
    dims = SimpleNamespace(tp_enabled=False, cp_enabled=False, ep_enabled=False, pp_enabled=False)
    cfg = load_job_config(make_tiny_toml("gpu", model={"flavor": "0.6B"}))
    with pytest.raises(dc.NoAcceleratorError, match="flavor = '0.6B' is sized for GPUs"):
        parallelize_molgen_qwen3(torch.nn.Linear(1, 1), dims, cfg)
    allowed = load_job_config(make_tiny_toml("gpu2", model={"flavor": "0.6B"}, molgen_run={"allow_cpu": True}))
    single = SimpleNamespace(**vars(dims), fsdp_enabled=False, dp_replicate_enabled=False)
    module = torch.nn.Linear(1, 1)
    assert parallelize_molgen_qwen3(module, single, allowed) is module  # the override lets it through

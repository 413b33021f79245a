"""benchmarks/gpu_check.sh refuses a machine without a GPU at once; its Python parts run on CPU (tiny flavor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def check(load_benchmark):
    return load_benchmark("gpu_check")


def _run(tmp_path: Path, nvidia_smi: str | None, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        stub = bin_dir / "nvidia-smi"
        stub.write_text(nvidia_smi)
        stub.chmod(0o755)
    full = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "GPU_CHECK_WORK": str(tmp_path / "work"), **env}
    start = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=120)
    return done, time.perf_counter() - start


def test_no_nvidia_smi_says_so_and_exits_at_once(tmp_path):
    if any((Path(p) / "nvidia-smi").exists() for p in ("/usr/bin", "/bin")):
        pytest.skip("this machine has nvidia-smi")
    done, seconds = _run(tmp_path, None)
    assert done.returncode == 2 and "no GPU" in done.stderr and "nvidia-smi is not installed" in done.stderr
    assert seconds < 5 and not (tmp_path / "work").exists(), "nothing started"


def test_nvidia_smi_without_gpus_exits_at_once(tmp_path):
    done, seconds = _run(tmp_path, "#!/usr/bin/env bash\necho 'No devices were found'\nexit 6\n")
    assert done.returncode == 2 and "nvidia-smi -L lists none" in done.stderr and seconds < 5


def test_a_listed_gpu_that_torch_cannot_use_is_refused(tmp_path):
    """A CPU build of torch (this machine's) next to a GPU: refused before any step runs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    done, _ = _run(tmp_path, "#!/usr/bin/env bash\necho 'GPU 0: NVIDIA H200 (UUID: x)'\n", PYTHON=sys.executable)
    assert done.returncode == 2 and "cannot use CUDA" in done.stderr and "doctor" in done.stderr
    assert not (tmp_path / "work").exists()


def test_packed_units_with_the_document_mask_equal_padded_units(check):
    result = check.masking("tiny", ["sdpa"], batch=2, seq_len=96, lengths=(8, 30), seed=1)
    sdpa = result["results"]["sdpa"]
    assert result["all_equal"] and result["units"] > 4
    assert sdpa["targets"] == result["results"]["padded"]["targets"] and sdpa["loss_rel_diff"] < 1e-5


def test_a_leaking_mask_is_caught(check, monkeypatch):
    """Without the cut between units the packed loss differs from the padded one, and the check says so."""
    import torch

    from molgen3D.training.pretraining.torchtitan_model import model as model_module

    def causal_only(tokens, eos_id):
        length = tokens.shape[1]
        return torch.ones(length, length, dtype=torch.bool).tril().expand(tokens.shape[0], 1, length, length)

    monkeypatch.setattr(model_module, "block_causal_mask", causal_only)
    result = check.masking("tiny", ["sdpa"], batch=2, seq_len=96, lengths=(8, 30), seed=1)
    assert not result["all_equal"] and result["results"]["sdpa"]["loss_rel_diff"] > 1e-3


def test_unit_spans_cut_after_each_eos(check):
    import torch

    tokens = torch.tensor([[5, 0, 6, 7, 0, 0, 8]])
    assert check.unit_spans(tokens) == [(0, 0, 2), (0, 2, 5), (0, 5, 6), (0, 6, 7)]


def test_report_is_one_table_and_one_json(check, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "steps.txt").write_text("doctor 1 9\nsmoke 0 200\nmasking 0 40\nsampling 124 60\n")
    (work / "doctor.json").write_text(json.dumps([{"name": "bf16", "verdict": "ok", "detail": "supported"}]))
    run = {
        "gpus": 1,
        "fsdp": True,
        "tokens_per_s_per_gpu": 60000.0,
        "mfu_percent": 38.8,
        "peak_memory_gib": 30.2,
        "loss_first": 9.1,
        "loss_last": 6.2,
        "loss_falls": True,
    }
    (work / "gpu_smoke.json").write_text(json.dumps({"runs": [run]}))
    masked = {"padded": {"loss": 1.0}, "flex": {"loss": 1.0, "grad_norm": 2.0, "seconds": 1.0, "equal": True}}
    masked["flex"].update(loss_rel_diff=1e-4, grad_norm_rel_diff=2e-3)
    (work / "masking.json").write_text(json.dumps({"results": masked}))
    out = tmp_path / "gpu_check.json"
    assert check.main(["report", "--work", str(work), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "60,000 tokens/s/GPU, MFU 38.8%" in table and "FSDP True" in table
    assert "document masking: flex vs padded" in table and "step sampling" in table and "timed out" in table
    saved = json.loads(out.read_text())
    assert saved["steps"]["sampling"]["timed_out"] and saved["gpu_smoke"]["runs"][0]["mfu_percent"] == 38.8


@pytest.mark.slow  # builds the tokenizers and samples with a random tiny model
def test_sampling_speed_on_cpu(check):
    result = check.sampling("tiny", "tokenizers:molgen_compact", batch=2, max_new_tokens=8, molecules=1)
    assert result["constrained"]["tokens"] > 0 and result["free"]["tokens_per_s"] > 0

"""`molgen3d doctor` on CPU: each check with stubbed facts (CPU torch build, a stub srun, fake interfaces,
a pre-populated hub cache), and whole runs of the command on tiny TOMLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from molgen3D import cli as molgen_cli
from molgen3D.training.pretraining import doctor
from molgen3D.training.pretraining import doctor_checks as dc

COMMIT = "da87bfb608c14b7cf20ba1ce41287e8de496c0cd"
PINS = {"torch": "2.13.0", "torchtitan": "0.2.2", "torchdata": "0.11.0"}


def test_a_cpu_torch_build_blocks_a_gpu_flavor_only():
    versions = {"torch": "2.13.0+cpu", "torchtitan": "0.2.2", "torchdata": "0.11.0"}
    blocked = dc.torch_build("0.6B", "2.13.0+cpu", None, versions, PINS)
    assert (
        blocked.verdict == dc.BLOCKER
        and "CPU-only build" in blocked.detail
        and "pip install torch==2.13.0" in (blocked.detail)
    )
    assert dc.torch_build("tiny", "2.13.0+cpu", None, versions, PINS).verdict == dc.OK
    assert dc.torch_build("0.6B", "2.13.0", "12.8", versions, PINS).verdict == dc.OK
    old_titan = dc.torch_build("0.6B", "2.13.0", "12.8", {**versions, "torchtitan": "0.3.0"}, PINS)
    assert old_titan.verdict == dc.BLOCKER and "torchtitan 0.3.0 (pinned 0.2.2)" in old_titan.detail
    assert dc.torch_build("0.6B", "2.13.0", "12.8", {**versions, "torchdata": None}, PINS).verdict == dc.WARN
    assert doctor.pins() == PINS, "read from the installed molgen3d metadata (pyproject.toml)"


@pytest.fixture()
def stub_srun(tmp_path, monkeypatch):
    """An `srun` on PATH that records its arguments and lists GPUs per task as a real one with --label does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(listing: str, rc: int = 0) -> Path:
        srun = bin_dir / "srun"
        srun.write_text(f'#!/usr/bin/env bash\necho "$@" > "{tmp_path}/srun.argv"\nprintf "{listing}"\nexit {rc}\n')
        srun.chmod(0o755)
        return tmp_path / "srun.argv"

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return install


def test_gpus_per_node_through_srun(stub_srun):
    argv = stub_srun("0: GPU 0: NVIDIA H200 (UUID: a)\\n0: GPU 1: NVIDIA H200 (UUID: b)\\n1: GPU 0: NVIDIA H200\\n")
    counts, problem = doctor.srun_gpu_counts(2, 2, timeout=10)
    assert counts == [2, 1] and problem == ""
    assert argv.read_text().split() == [
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=2",
        "--label",
        "nvidia-smi",
        "-L",
    ]
    short = dc.gpus("0.6B", counts, 2, "inside srun on 2 node(s)", problem)
    assert short.verdict == dc.BLOCKER and "2, 1 seen inside srun" in short.detail and "--gpus-per-node" in short.detail
    assert dc.gpus("0.6B", [2, 2], 2, "inside srun").verdict == dc.OK


def test_an_srun_step_without_gpus_is_a_blocker(stub_srun):
    stub_srun("0: No devices were found\\n1: No devices were found\\n")
    counts, _ = doctor.srun_gpu_counts(2, 8, timeout=10)
    assert counts == [0, 0] and dc.gpus("0.6B", counts, 8, "inside srun").verdict == dc.BLOCKER
    stub_srun("", rc=1)
    counts, problem = doctor.srun_gpu_counts(2, 8, timeout=10)
    assert counts == [] and "failed (exit 1)" in problem
    assert dc.gpus("tiny", [0], 1, "on this machine").verdict == dc.OK


def test_nccl_and_the_network_interface():
    ifaces, ib = ["eth0", "ib0", "lo"], ["mlx5_0"]
    assert dc.nccl("tiny", None, {}, ifaces, ib, 1).verdict == dc.OK
    assert dc.nccl("0.6B", None, {}, ifaces, ib, 1).verdict == dc.BLOCKER
    wrong = dc.nccl("0.6B", "2.27.5", {"NCCL_SOCKET_IFNAME": "bond0"}, ifaces, ib, 2)
    assert wrong.verdict == dc.BLOCKER and "bond0 matches no interface" in wrong.detail
    good = dc.nccl("0.6B", "2.27.5", {"NCCL_SOCKET_IFNAME": "ib"}, ifaces, ib, 2)
    assert good.verdict == dc.OK and "NCCL_SOCKET_IFNAME=ib" in good.detail and "mlx5_0" in good.detail
    assert dc.nccl("0.6B", "2.27.5", {"NCCL_SOCKET_IFNAME": "^docker,lo"}, ifaces, ib, 2).verdict == dc.OK
    tcp = dc.nccl("0.6B", "2.27.5", {}, ["eth0", "lo"], [], 2)
    assert tcp.verdict == dc.WARN and "TCP sockets" in tcp.detail
    assert dc.nccl("0.6B", "2.27.5", {}, ["eth0", "lo"], [], 1).verdict == dc.OK


def test_bf16():
    assert dc.bf16("0.6B", "bfloat16", cuda=True, bf16_supported=True).verdict == dc.OK
    assert dc.bf16("0.6B", "bfloat16", cuda=True, bf16_supported=False).verdict == dc.BLOCKER
    assert dc.bf16("0.6B", "bfloat16", cuda=False, bf16_supported=False).verdict == dc.BLOCKER
    assert dc.bf16("tiny", "bfloat16", cuda=False, bf16_supported=False).verdict == dc.WARN
    assert dc.bf16("tiny", "float32", cuda=False, bf16_supported=False).verdict == dc.OK


def test_attention_backend_on_this_hardware():
    cpu = dc.attention(True, "varlen", cuda=False, n_heads=16, n_kv_heads=8)
    assert cpu.verdict == dc.BLOCKER and "needs CUDA" in cpu.detail and '"sdpa" or "auto"' in cpu.detail
    gqa = dc.attention(True, "varlen", cuda=True, n_heads=16, n_kv_heads=8)
    assert gqa.verdict == dc.OK and "enable_gqa" in gqa.detail
    assert "flex (block_causal)" in dc.attention(True, "auto", cuda=True, n_heads=16, n_kv_heads=8).detail
    assert dc.attention(False, "flex", cuda=True, n_heads=16, n_kv_heads=8).verdict == dc.BLOCKER


def test_batch_geometry_for_n_nodes():
    assert dc.batch(2, 48, "exact", 1, 8, 4096).verdict == dc.OK
    exact = dc.batch(2, 48, "exact", 2, 8, 4096)
    assert exact.verdict == dc.BLOCKER and "Node counts of 8 GPUs where it divides: 1, 3" in exact.detail
    up = dc.batch(2, 48, "up", 2, 8, 4096)
    assert up.verdict == dc.WARN and "global 64" in up.detail and "rounded up from 48" in up.detail


def test_checkpoint_disk_counts_rolling_and_decay_end_saves(tmp_path):
    ends = [30000, 60000, 90000, 120000, 150000]
    assert dc.checkpoint_saves(True, 4, 2500, 150000, ends) == 9
    assert dc.checkpoint_saves(True, 0, 2500, 150000, ends) == 60  # keep_latest_k = 0 keeps every save
    assert dc.checkpoint_saves(False, 4, 2500, 150000, ends) == 0
    params = 596_049_920
    need = 9 * params * 12
    short = dc.checkpoint_disk(params, 9, 0, need - 1, tmp_path)
    assert short.verdict == dc.BLOCKER and "keep_latest_k" in short.detail and "9 save(s) x 6.7 GiB" in short.detail
    assert dc.checkpoint_disk(params, 9, 0, need + 1, tmp_path).verdict == dc.WARN
    assert dc.checkpoint_disk(params, 9, 0, 2 * need, tmp_path).verdict == dc.OK


def test_writable_outputs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert dc.writable({"dump": tmp_path / "new" / "dir"}).verdict == dc.OK
    bad = dc.writable({"dump": tmp_path / "ok", "logs": blocker / "logs"})
    assert bad.verdict == dc.BLOCKER and "logs" in bad.detail and "is not a folder" in bad.detail


def test_hub_model_verdicts(tmp_path):
    from molgen3D.config.hub import HubRef

    pinned, branch = HubRef("Qwen/Qwen3-0.6B-Base", COMMIT), HubRef("Org/M", "main")
    where = tmp_path / "snap"
    assert dc.hub_model("base model", where, pinned, True, False, None, True).verdict == dc.OK
    assert dc.hub_model("base model", where, branch, True, False, None, True).verdict == dc.WARN
    offline = dc.hub_model("base model", where, pinned, False, True, None, True)
    assert offline.verdict == dc.BLOCKER and f"hf download Qwen/Qwen3-0.6B-Base --revision {COMMIT}" in offline.detail
    assert dc.hub_model("base model", where, pinned, False, False, None, True).verdict == dc.WARN  # downloads at start
    assert dc.hub_model("base model", where, pinned, False, False, "ConnectError", True).verdict == dc.BLOCKER
    where.mkdir()
    assert dc.hub_model("base model", where, None, False, False, None, True).verdict == dc.BLOCKER  # no safetensors
    (where / "model.safetensors").write_bytes(b"")
    assert dc.hub_model("base model", where, None, False, False, None, True).verdict == dc.OK


def _run(toml: Path, tmp_path: Path, *extra: str) -> tuple[int, dict[str, dict]]:
    out = tmp_path / "doctor.json"
    rc = molgen_cli.main(["doctor", "--train-toml", str(toml), "--json", str(out), *extra])
    return rc, {c["name"]: c for c in json.loads(out.read_text())}


def test_a_tiny_cpu_run_is_ready(make_tiny_toml, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    rc, found = _run(make_tiny_toml("doc"), tmp_path, "--gpus-per-node", "1")
    table = capsys.readouterr().out
    assert rc == 0, table
    assert all(c["verdict"] != dc.BLOCKER for c in found.values()), table
    assert {"torch build", "GPUs per node", "NCCL / network", "bf16", "attention", "batch geometry", "config"} <= set(
        found
    )
    assert {"train data", "tokenizer", "checkpoint disk", "outputs writable"} <= set(found)
    assert "0 blocker(s)" in table and "ready to launch" in table


def test_hf_pretrain_from_the_hub_offline_and_cached(make_tiny_toml, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    toml = make_tiny_toml(
        "doc-hf",
        molgen_run={"init_mode": "hf_pretrain", "base_model_tag": f"hf:Org/Tiny-Base@{COMMIT}"},
        checkpoint={"enable": True},
    )
    rc, found = _run(toml, tmp_path, "--gpus-per-node", "1")
    assert rc == 1 and found["base model"]["verdict"] == dc.BLOCKER
    assert f"hf download Org/Tiny-Base --revision {COMMIT}" in found["base model"]["detail"]
    snap = tmp_path / "hub" / "models--Org--Tiny-Base" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    rc, found = _run(toml, tmp_path, "--gpus-per-node", "1")
    assert found["base model"]["verdict"] == dc.OK and str(snap) in found["base model"]["detail"]
    assert rc == 0, capsys.readouterr().out


def test_problems_are_blockers_with_exit_1(make_tiny_toml, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    toml = make_tiny_toml(
        "doc-bad",
        model={"name": "molgen_qwen3", "flavor": "tiny", "document_masking": True, "attention_backend": "varlen"},
        training={"dataset_path": str(tmp_path / "nowhere")},
    )
    rc, found = _run(toml, tmp_path, "--gpus-per-node", "1")
    assert rc == 1 and found["attention"]["verdict"] == dc.BLOCKER and "needs CUDA" in found["attention"]["detail"]
    rc, found = _run(make_tiny_toml("doc-bad2", training={"dataset_path": str(tmp_path / "nowhere")}), tmp_path)
    assert rc == 1 and found["train data"]["verdict"] == dc.BLOCKER and "prepare-data" in found["train data"]["detail"]
    rc, found = _run(tmp_path / "missing.toml", tmp_path)
    assert rc == 1 and found["config"]["verdict"] == dc.BLOCKER

"""Global batch vs local batch x data-parallel degree, from the launch environment, before anything is built."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from molgen3D.training.pretraining.config.batch_geometry import (
    hsdp_degrees,
    BatchGeometryError,
    describe,
    dp_degree,
    launch_world_size,
    resolve_batch_geometry,
    working_node_counts,
)

QWEN3_06B_TOML = Path(__file__).resolve().parents[3] / "src" / "molgen3D" / "config" / "pretrain" / "qwen3_06b.toml"


def test_world_size_from_torchrun_then_slurm_then_one():
    assert launch_world_size({"WORLD_SIZE": "16", "SLURM_NNODES": "4"}) == (16, "$WORLD_SIZE")
    world, source = launch_world_size({"SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8"})
    assert world == 16 and "SLURM_NNODES" in source
    assert launch_world_size({"SLURM_NNODES": "4", "NGPU_PER_NODE": "8", "SLURM_GPUS_ON_NODE": "4"})[0] == 32
    assert launch_world_size({})[0] == 1
    with pytest.raises(BatchGeometryError, match=r"\$WORLD_SIZE = 'x'"):
        launch_world_size({"WORLD_SIZE": "x"})


def test_dp_degree_divides_out_model_parallel():
    assert dp_degree(16) == 16 and dp_degree(16, tp=2) == 8
    with pytest.raises(BatchGeometryError, match="not a multiple"):
        dp_degree(12, tp=8)


def test_exact_rule_names_keys_and_node_counts_that_work():
    with pytest.raises(BatchGeometryError) as info:
        resolve_batch_geometry(48, 2, 16, "exact", where="qwen3_06b.toml:58")
    text = str(info.value)
    assert "[training] global_batch_size = 48 (qwen3_06b.toml:58)" in text and "[training] local_batch_size (2)" in text
    assert "= 32" in text and "where it divides: 1, 3" in text and "global_batch_rounding" in text


def test_exact_geometry_and_accumulation():
    g = resolve_batch_geometry(48, 2, 8)
    assert (g.global_batch, g.grad_accum_steps, g.rounded) == (48, 3, False)
    assert resolve_batch_geometry(-1, 2, 16).global_batch == 32
    assert working_node_counts(64, 2, 8) == [1, 2, 4]


@pytest.mark.parametrize("nodes, global_batch, accum", [(1, 48, 3), (2, 64, 2), (3, 48, 1), (4, 64, 1)])
def test_round_up_rule(nodes, global_batch, accum):
    g = resolve_batch_geometry(48, 2, 8 * nodes, "up")
    assert (g.global_batch, g.grad_accum_steps) == (global_batch, accum)
    assert g.rounded == (global_batch != 48)
    assert ("rounded up from 48" in describe(g, 4096, "$WORLD_SIZE")) == g.rounded


def test_bad_values_named():
    with pytest.raises(BatchGeometryError, match="global_batch_rounding = 'down'"):
        resolve_batch_geometry(48, 2, 8, "down")
    with pytest.raises(BatchGeometryError, match="global_batch_size = 0"):
        resolve_batch_geometry(0, 2, 8)


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_real_toml_runs_unchanged_on_1_2_4_nodes(nodes):
    """qwen3_06b.toml's batch keys fit 1, 2 and 4 nodes of 8 GPUs, keeping 48 where it divides."""
    training = tomllib.loads(QWEN3_06B_TOML.read_text())["training"]
    world, _ = launch_world_size({"SLURM_NNODES": str(nodes), "NGPU_PER_NODE": "8"})
    g = resolve_batch_geometry(
        training["global_batch_size"],
        training["local_batch_size"],
        dp_degree(world),
        training.get("global_batch_rounding", "exact"),
    )
    assert g.global_batch == (48 if nodes == 1 else 64)


def test_hsdp_degrees():
    assert hsdp_degrees(16, 8) == (2, 8) and hsdp_degrees(8, 8) == (1, 8)
    with pytest.raises(BatchGeometryError, match="not a whole number of nodes"):
        hsdp_degrees(12, 8)


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_the_real_config_at_load_before_anything_is_built(nodes, monkeypatch, caplog):
    """The 0.6B config at load: HSDP degrees and the batch in force for 1, 2, 4 nodes of 8 GPUs."""
    from molgen3D.training.pretraining.config.loading import load_job_config

    monkeypatch.setenv("WORLD_SIZE", str(8 * nodes))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with caplog.at_level("INFO"):
        cfg = load_job_config(QWEN3_06B_TOML)
    g = cfg.molgen_resolved.batch
    assert cfg.training.global_batch_size == g.global_batch == (48 if nodes == 1 else 64)
    assert cfg.molgen_resolved.hsdp_degrees == (nodes, 8)
    assert (cfg.parallelism.data_parallel_replicate_degree, cfg.parallelism.data_parallel_shard_degree) == (nodes, 8)
    assert f"dp {8 * nodes}" in caplog.text


def test_exact_rule_fails_at_load_naming_keys(monkeypatch):
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
    from molgen3D.training.pretraining.config.loading import load_job_config

    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(MolGenConfigError) as info:
        load_job_config(QWEN3_06B_TOML, ["--training.global_batch_rounding", "exact"])
    assert info.value.key == "training.global_batch_size" and "where it divides: 1, 3" in str(info.value)

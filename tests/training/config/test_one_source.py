"""One source for each setting: finalize writes nothing back, TorchTitan's fields are written once from
`molgen_resolved`, and every setting stated in two places has one rule that names both statements."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.finalize import write_titan_config
from molgen3D.training.pretraining.config.loading import load_job_config, read_job_config
from molgen3D.training.pretraining.config.twins import TWINS
from molgen3D.training.pretraining.wsds import WSDSSchedule

REPO = Path(__file__).resolve().parents[3]
FIXTURE_TOML = REPO / "tests" / "training" / "fixture_tiny.toml"
QWEN3_06B_TOML = REPO / "src" / "molgen3D" / "config" / "pretrain" / "qwen3_06b.toml"
PAIRS = ["--molgen_data.train_path_key", "data:fixture_train", "--molgen_data.valid_path_key", "data:fixture_valid"]


def _parsed(toml: Path, overrides: list[str]):
    """The config exactly as TorchTitan's ConfigManager builds it, before any MolGen3D step."""
    from torchtitan.config import ConfigManager

    return ConfigManager().parse_args(["--job.config_file", str(toml), *overrides])


@pytest.mark.parametrize(
    "overrides",
    [
        PAIRS,
        ["--molgen_run.init_mode", "resume", "--molgen_run.resume_run_path_tag", "/tmp/runs/r1/checkpoint/step-3"],
        ["--molgen_data.num_workers", "2", "--wsds_scheduler.checkpoints", "4", "6"],
    ],
)
def test_finalize_writes_nothing_back_into_the_config(overrides):
    cfg = read_job_config(FIXTURE_TOML, overrides)
    assert cfg.molgen_resolved.paths.train_data.is_absolute()
    assert dataclasses.asdict(cfg) == dataclasses.asdict(_parsed(FIXTURE_TOML, overrides))


def test_torchtitans_fields_are_written_once():
    cfg = load_job_config(FIXTURE_TOML)
    with pytest.raises(RuntimeError, match="written once"):
        write_titan_config(cfg)


def test_the_run_folder_is_torchtitans_dump_folder_and_the_resolved_one(tmp_path):
    cfg = read_job_config(FIXTURE_TOML, ["--job.dump_folder", str(tmp_path / "runs")])
    assert cfg.molgen_resolved.paths.dump_folder == cfg.molgen_resolved.paths.runs_root == tmp_path / "runs"

    @dataclasses.dataclass
    class Run:
        run_name: str = "r1"
        run_dir: Path = tmp_path / "runs" / "r1"
        tb_dir: Path = tmp_path / "logs" / "tb"

    settled = write_titan_config(cfg, Run())
    assert settled is cfg.molgen_resolved and settled.run_name == "r1"
    assert cfg.job.dump_folder == str(settled.paths.dump_folder) == str(tmp_path / "runs" / "r1")
    assert settled.paths.runs_root == tmp_path / "runs" and cfg.metrics.save_tb_folder == str(tmp_path / "logs" / "tb")


def test_the_wsds_schedule_is_frozen_all_the_way_down():
    schedule = load_job_config(FIXTURE_TOML).molgen_resolved.wsds
    assert isinstance(schedule.checkpoints, tuple)
    assert WSDSSchedule(warmup_steps=0, checkpoints=[5], lr_max=1.0, lr_min=0.0, decay_frac=0.5).checkpoints == (5,)


# Per pair: overrides that give the source one value and the other statement another.
CONFLICTS = {
    "tokenizer": ["--molgen_data.tokenizer_key", "tokenizers:qwen3_0.6b_custom"],
    "train_data": ["--molgen_data.train_path_key", "data:fixture_valid"],
    "valid_data": ["--molgen_data.valid_path_key", "data:fixture_train"],
    "seed": ["--debug.seed", "8"],
    "lr": ["--wsds_scheduler.lr_max", "1e-3"],
    "warmup_steps": ["--lr_scheduler.warmup_steps", "3"],
    "num_workers": ["--molgen_data.num_workers", "2", "--training.dataloader.num_workers", "3"],
    "pin_memory": ["--molgen_data.pin_memory", "False", "--training.dataloader.pin_memory"],
    "prefetch_factor": [
        "--molgen_data.num_workers",
        "2",
        "--molgen_data.prefetch_factor",
        "2",
        "--training.dataloader.prefetch_factor",
        "4",
    ],
    "persistent_workers": [
        "--molgen_data.num_workers",
        "2",
        "--molgen_data.persistent_workers",
        "False",
        "--training.dataloader.persistent_workers",
    ],
}


def test_every_pair_has_a_conflict_case():
    assert set(CONFLICTS) == set(TWINS)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_a_setting_given_twice_differently_is_an_error_naming_both(name):
    twin = TWINS[name]
    with pytest.raises(MolGenConfigError) as info:
        load_job_config(FIXTURE_TOML, CONFLICTS[name])
    text = str(info.value)
    assert info.value.key == twin.other, "the derived statement is the one to remove"
    for key in (twin.source, twin.other):
        section, _, option = key.rpartition(".")
        assert f"[{section}] {option} = " in text, f"{key} not named in: {text}"
    assert text.count("(") >= 2 and "Fix: remove" in text


def test_the_shipped_tomls_state_each_setting_once():
    import tomllib

    for toml in (QWEN3_06B_TOML, QWEN3_06B_TOML.with_name("cpu_tiny.toml")):
        values = tomllib.loads(toml.read_text(encoding="utf-8"))

        def given(key: str, values=values) -> bool:
            node = values
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    return False
                node = node[part]
            return True

        twice = [name for name, twin in TWINS.items() if given(twin.source) and given(twin.other)]
        assert not twice, f"{toml.name} states {twice} twice"
    cfg = load_job_config(QWEN3_06B_TOML)
    assert cfg.model.hf_assets_path == cfg.molgen_resolved.paths.base_model, "hf_assets_path follows base_model_tag"
    assert cfg.lr_scheduler.warmup_steps == cfg.molgen_resolved.wsds.warmup_steps == 500

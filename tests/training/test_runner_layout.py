"""Run naming, folder layout, environment and pre-flight checks of the runner (the launcher: test_launcher.py)."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from molgen3D.config.paths import repo_root
from molgen3D.training.pretraining import torchtitan_runner as runner
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.config.resolve_paths import resolve_molgen_paths
from molgen3D.training.pretraining import run_layout

REPO = Path(__file__).resolve().parents[2]
FIXTURE_TOML = REPO / "tests" / "training" / "fixture_tiny.toml"
RUN_NAME = re.compile(r"^\d{6}-\d{4}-[0-9a-f]{4}-[A-Za-z0-9._-]+$")
NOW = datetime(2026, 3, 7, 9, 5)


@pytest.fixture(scope="module")
def cfg_factory():
    def make(*overrides: str):
        return load_job_config(FIXTURE_TOML, list(overrides))

    return make


# ---------------------------------------------------------------- run names


def test_generated_run_name_has_date_time_token_and_description():
    name = run_layout.make_run_name("Qwen3 0.6B / conformers!", NOW, "a1f3")
    assert name == "260307-0905-a1f3-Qwen3-0.6B-conformers"
    assert RUN_NAME.match(run_layout.make_run_name("x", datetime.now(), run_layout.new_token()))
    assert run_layout.make_run_name("///", NOW, "0000").endswith("-run")


def test_run_desc_wins_over_job_description(cfg_factory):
    cfg = cfg_factory()
    assert run_layout.choose_run_name(cfg, "my desc", {}, NOW, "beef") == "260307-0905-beef-my-desc"
    assert run_layout.choose_run_name(cfg, None, {}, NOW, "beef") == "260307-0905-beef-fixture_tiny"


def test_wandb_run_name_and_configured_run_name_fix_the_name(cfg_factory):
    assert run_layout.choose_run_name(cfg_factory(), "desc", {"WANDB_RUN_NAME": "old-run"}, NOW, "beef") == "old-run"
    fixed = cfg_factory("--molgen_run.run_name", "pinned")
    assert run_layout.choose_run_name(fixed, "desc", {}, NOW, "beef") == "pinned"
    assert run_layout.choose_run_name(fixed, "desc", {"WANDB_RUN_NAME": "pinned"}, NOW, "beef") == "pinned"
    with pytest.raises(MolGenConfigError) as info:
        run_layout.choose_run_name(fixed, "desc", {"WANDB_RUN_NAME": "other"}, NOW, "beef")
    assert info.value.key == "molgen_run.run_name" and "other" in str(info.value)


def test_run_name_must_be_one_folder(cfg_factory):
    with pytest.raises(MolGenConfigError) as info:
        run_layout.choose_run_name(cfg_factory(), None, {"WANDB_RUN_NAME": "a/b"}, NOW, "beef")
    assert info.value.key == "molgen_run.run_name"


# ---------------------------------------------------------------- layout and environment


def test_layout_puts_checkpoints_logs_and_wandb_where_the_layout_says(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "--job.dump_folder",
        str(tmp_path / "ckpts"),
        "--molgen_run.logs_root",
        str(tmp_path / "out"),
        "--metrics.enable_wandb",
    )
    layout = run_layout.plan_run_layout(cfg, "r1", {})
    assert layout.run_dir == tmp_path / "ckpts" / "r1"
    assert layout.checkpoint_dir == tmp_path / "ckpts" / "r1" / "checkpoint"
    assert layout.run_meta == tmp_path / "ckpts" / "r1" / "run_meta.json"
    assert layout.runtime_log == tmp_path / "out" / "pretrain_logs" / "r1" / "runtime.log"
    assert layout.tb_dir == tmp_path / "out" / "pretrain_logs" / "r1" / "tb"
    assert layout.wandb_dir == repo_root() / "wandb" / "r1"
    assert run_layout.plan_run_layout(cfg, "r1", {"WANDB_DIR": str(tmp_path / "w")}).wandb_dir == tmp_path / "w"

    assert cfg.molgen_resolved.paths.runs_root == tmp_path / "ckpts"
    run_layout.ensure_run_dirs(layout, wandb=False)
    assert layout.run_dir.is_dir() and layout.log_dir.is_dir() and not layout.wandb_dir.exists()


def test_default_logs_root_is_outputs(cfg_factory):
    layout = run_layout.plan_run_layout(cfg_factory(), "r2", {})
    assert layout.runtime_log == repo_root() / "outputs" / "pretrain_logs" / "r2" / "runtime.log"
    assert layout.run_dir == repo_root() / "artifacts" / "ckpts" / "cpu_tiny" / "r2"


def test_resumed_run_keeps_its_directory(cfg_factory, tmp_path):
    run_dir = tmp_path / "elsewhere" / "240101-0000-abcd-old"
    cfg = cfg_factory(
        "--molgen_run.init_mode", "resume", "--molgen_run.resume_run_path_tag", str(run_dir / "checkpoint" / "step-3")
    )
    name = run_layout.choose_run_name(cfg, "new desc", {}, NOW, "beef")
    assert name == "240101-0000-abcd-old"
    layout = run_layout.plan_run_layout(cfg, name, {})
    assert layout.run_dir == run_dir and layout.checkpoint_dir == run_dir / "checkpoint"


def test_banner_names_the_run_and_its_paths_and_shows_the_resolved_config_on_request(cfg_factory, tmp_path):
    cfg = cfg_factory("--job.dump_folder", str(tmp_path / "ckpts"), "--molgen_run.logs_root", str(tmp_path / "out"))
    layout = run_layout.plan_run_layout(cfg, "r3", {})
    banner = runner.startup_banner(cfg, layout, resolve_molgen_paths(cfg), world_size=1)
    assert "run r3" in banner and str(layout.checkpoint_dir) in banner and str(layout.runtime_log) in banner
    assert "Resolved config:" in banner  # fixture_tiny.toml sets print_config = true
    assert '"dataset_path": "' + str(REPO / "tests" / "fixtures" / "conformers" / "train") + '"' in banner
    cfg.job.print_config = False
    assert "Resolved config:" not in runner.startup_banner(cfg, layout, resolve_molgen_paths(cfg), world_size=1)


def test_run_environment_defaults_wandb_offline_without_a_key(tmp_path):
    layout = run_layout.RunLayout(
        "r", tmp_path, tmp_path / "c", tmp_path / "m", tmp_path, tmp_path / "l", tmp_path / "tb", tmp_path / "w"
    )
    env = run_layout.run_environment(layout, {})
    assert env["RUN_NAME"] == env["WANDB_RUN_NAME"] == "r"
    assert env["WANDB_DIR"] == str(tmp_path / "w") and env["WANDB_MODE"] == "offline"
    assert "WANDB_MODE" not in run_layout.run_environment(layout, {"WANDB_API_KEY": "k"})
    assert "WANDB_MODE" not in run_layout.run_environment(layout, {"WANDB_MODE": "online"})


def test_single_process_gets_rendezvous_defaults_and_torchrun_ranks_do_not():
    env = runner._rendezvous_defaults({})
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("0", "0", "1", "127.0.0.1")
    assert 0 < int(env["MASTER_PORT"]) < 65536
    assert runner._rendezvous_defaults({"LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}) == {}


def test_scoped_env_restores_previous_values(monkeypatch):
    monkeypatch.setenv("MOLGEN3D_TEST_A", "before")
    monkeypatch.delenv("MOLGEN3D_TEST_B", raising=False)
    with runner._scoped_env({"MOLGEN3D_TEST_A": "x", "MOLGEN3D_TEST_B": "y"}):
        assert os.environ["MOLGEN3D_TEST_A"] == "x" and os.environ["MOLGEN3D_TEST_B"] == "y"
    assert os.environ["MOLGEN3D_TEST_A"] == "before" and "MOLGEN3D_TEST_B" not in os.environ


def test_ranks_without_torchrun_need_a_fixed_run_name():
    with pytest.raises(MolGenConfigError) as info:
        runner._agree_on_run_name("x", {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"})
    assert info.value.key == "molgen_run.run_name" and "WANDB_RUN_NAME" in str(info.value)


def test_ranks_under_torchrun_adopt_the_first_generated_name():
    from torch.distributed import TCPStore

    agent_store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent_store.port)}
    assert runner._agree_on_run_name("first", env) == "first"
    assert runner._agree_on_run_name("second", env) == "first"


# ---------------------------------------------------------------- pre-flight checks


def _check(cfg):
    runner.check_inputs(cfg, resolve_molgen_paths(cfg))


def test_missing_tokenizer_is_reported_with_how_to_build_it(cfg_factory, tmp_path):
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg_factory("--molgen_run.tokenizer_tag", str(tmp_path / "none")))
    assert info.value.key == "molgen_run.tokenizer_tag" and "build-tokenizer" in str(info.value)


def test_missing_data_is_reported_with_how_to_prepare_it(cfg_factory, tmp_path, compact_tokenizer_dir):
    tok = compact_tokenizer_dir
    _check(cfg_factory("--molgen_run.tokenizer_tag", str(tok)))  # the committed fixture passes
    with pytest.raises(MolGenConfigError) as info:
        _check(
            cfg_factory("--molgen_run.tokenizer_tag", str(tok), "--training.dataset_path", str(tmp_path / "nothing"))
        )
    assert info.value.key == "training.dataset_path" and "prepare-data" in str(info.value)
    with pytest.raises(MolGenConfigError) as info:
        _check(
            cfg_factory("--molgen_run.tokenizer_tag", str(tok), "--validation.dataset_path", str(tmp_path / "v*.jsonl"))
        )
    assert info.value.key == "validation.dataset_path"


def test_hf_pretrain_never_downloads(cfg_factory, tmp_path, compact_tokenizer_dir):
    tok = compact_tokenizer_dir
    cfg = cfg_factory(
        "--molgen_run.tokenizer_tag",
        str(tok),
        "--molgen_run.init_mode",
        "hf_pretrain",
        "--molgen_run.base_model_tag",
        "base_paths:qwen3_0.6b_base_model",
    )
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg)
    assert info.value.key == "molgen_run.base_model_tag" and "Qwen/Qwen3-0.6B-Base" in str(info.value)


def _save_dcp(step_dir: Path, *, model_only: bool = False) -> None:
    """A DCP laid out like TorchTitan's: model keys, plus optimizer and train state unless model-only."""
    import torch
    import torch.distributed.checkpoint as dcp

    state = {"w": torch.zeros(2)}
    if not model_only:
        state |= {"optimizer": {"exp_avg": torch.zeros(2)}, "train_state": {"step": torch.tensor(4)}}
    dcp.save(state, checkpoint_id=str(step_dir), no_dist=True)


def test_resume_needs_a_saved_step(cfg_factory, tmp_path, compact_tokenizer_dir):
    tok = compact_tokenizer_dir
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    args = (
        "--molgen_run.tokenizer_tag",
        str(tok),
        "--molgen_run.init_mode",
        "resume",
        "--molgen_run.resume_run_path_tag",
        str(run_dir),
    )
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg_factory(*args))
    assert info.value.key == "molgen_run.resume_run_path_tag"
    _save_dcp(run_dir / "checkpoint" / "step-4")
    _check(cfg_factory(*args))


def test_resume_rejects_torn_checkpoints(cfg_factory, tmp_path, compact_tokenizer_dir):
    """Only torn step folders: TorchTitan would skip them all and silently train from random weights."""
    tok = compact_tokenizer_dir
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint" / "step-4").mkdir(parents=True)  # a save that never finished: no .metadata
    resume = (
        "--molgen_run.tokenizer_tag",
        str(tok),
        "--molgen_run.init_mode",
        "resume",
        "--molgen_run.resume_run_path_tag",
    )
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg_factory(*resume, str(run_dir)))
    assert info.value.key == "molgen_run.resume_run_path_tag" and "step-4: no .metadata" in str(info.value)
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg_factory(*resume, str(run_dir / "checkpoint" / "step-4")))
    assert info.value.key == "molgen_run.resume_run_path_tag" and "no .metadata" in str(info.value)
    _save_dcp(run_dir / "checkpoint" / "step-2")
    _check(cfg_factory(*resume, str(run_dir)))  # the newest complete step is loaded
    with pytest.raises(MolGenConfigError):
        _check(cfg_factory(*resume, str(run_dir / "checkpoint" / "step-4")))  # a named torn step stays an error


def test_resume_rejects_a_run_whose_only_step_is_model_only(cfg_factory, tmp_path, compact_tokenizer_dir):
    """A finished run's last save holds weights only: extending it must resume from a full DCP."""
    tok = compact_tokenizer_dir
    run_dir = tmp_path / "run"
    _save_dcp(run_dir / "checkpoint" / "step-6", model_only=True)
    resume = (
        "--molgen_run.tokenizer_tag",
        str(tok),
        "--molgen_run.init_mode",
        "resume",
        "--molgen_run.resume_run_path_tag",
    )
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg_factory(*resume, str(run_dir)))
    assert info.value.key == "molgen_run.resume_run_path_tag" and "step-6: model weights only" in str(info.value)
    _save_dcp(run_dir / "checkpoint" / "step-4")
    _check(cfg_factory(*resume, str(run_dir)))  # step-4 holds the full training state


def test_cli_reports_a_config_error_without_a_traceback(tmp_path, capsys):
    code = runner.cli(["--train-toml", str(FIXTURE_TOML), "--run-desc", "x", "--training.dataset", "c4_test"])
    err = capsys.readouterr().err
    assert code == 2
    assert "[training] dataset" in err and "Traceback" not in err


def test_cli_reports_a_missing_toml(tmp_path, capsys):
    assert runner.cli(["--train-toml", str(tmp_path / "none.toml")]) == 2
    assert "none.toml does not exist" in capsys.readouterr().err


def test_an_empty_data_folder_fails_before_the_trainer_with_the_loaders_rule(
    cfg_factory, tmp_path, compact_tokenizer_dir
):
    """The pre-flight check uses the loader's own rule: a folder without *.jsonl is a config error, not a crash
    inside the Trainer."""
    tok = compact_tokenizer_dir
    empty = tmp_path / "empty_split"
    empty.mkdir()
    (empty / "notes.txt").write_text("not JSONL")
    with pytest.raises(MolGenConfigError) as info:
        _check(cfg_factory("--molgen_run.tokenizer_tag", str(tok), "--training.dataset_path", str(empty)))
    assert info.value.key == "training.dataset_path" and "holds no *.jsonl files" in str(info.value)

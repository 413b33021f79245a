"""The MolGen3D job config: TOML loading through TorchTitan's ConfigManager, and finalize's checks.

Every error must name the TOML `[section] key`; most cases start from tests/training/fixture_tiny.toml
and change one thing, by a `--section.key value` override or by editing the TOML text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from molgen3D.config.paths import repo_root
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.finalize import finalize_job_config
from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.config.resolve_paths import resolve_molgen_paths

REPO = Path(__file__).resolve().parents[3]
FIXTURE_TOML = REPO / "tests" / "training" / "fixture_tiny.toml"
PRETRAIN = REPO / "src" / "molgen3D" / "config" / "pretrain"


def edited(tmp_path: Path, *replacements: tuple[str, str], source: Path = FIXTURE_TOML) -> Path:
    """A copy of `source` with each (old line text, new text) replaced once; fails if `old` is missing."""
    text = source.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, f"{old!r} not in {source}"
        text = text.replace(old, new, 1)
    path = tmp_path / "variant.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(toml: Path, overrides: list[str] | tuple[str, ...] = ()) -> MolGenConfigError:
    with pytest.raises(MolGenConfigError) as info:
        load_job_config(toml, overrides)
    return info.value


# ---------------------------------------------------------------- the shipped configs


def test_real_gpu_config_loads_with_the_facts_of_the_run():
    cfg = load_job_config(PRETRAIN / "qwen3_06b.toml")
    assert (
        cfg.training.seq_len,
        cfg.training.local_batch_size,
        cfg.training.global_batch_size,
        cfg.training.steps,
    ) == (4096, 2, 48, 150000)
    assert cfg.training.global_batch_size % (cfg.training.local_batch_size * 8) == 0  # 8 GPUs: 3 accumulation steps
    assert (
        cfg.optimizer.lr,
        cfg.optimizer.beta1,
        cfg.optimizer.beta2,
        cfg.optimizer.eps,
        cfg.optimizer.weight_decay,
    ) == (8e-4, 0.9, 0.95, 1e-8, 0.1)
    assert cfg.training.max_norm == 1.0 and cfg.training.mixed_precision_param == "bfloat16"
    wsds = cfg.lr_scheduler.wsds
    assert wsds is not None and wsds.checkpoints == (30000, 60000, 90000, 120000, 150000)
    assert (wsds.warmup_steps, wsds.lr_min, wsds.decay_frac, wsds.lr_max) == (500, 0.0, 0.1, 8e-4)
    # Fast GPU defaults (reasons in the TOML and docs/GPU.md): saves every 2,500 steps, validation
    # and probe within ~3% of training time, no recompute, compile on, a timeout that fits a save.
    assert (cfg.checkpoint.interval, cfg.checkpoint.keep_latest_k, cfg.checkpoint.async_mode) == (2500, 4, "async")
    assert all(end % cfg.checkpoint.interval == 0 for end in wsds.checkpoints)
    assert (cfg.validation.freq, cfg.validation.steps, cfg.validation.local_batch_size) == (500, 40, 4)
    assert cfg.validation.sample_conformers_freq == 10000
    assert cfg.activation_checkpoint.mode == "none" and cfg.compile.enable
    assert cfg.comm.train_timeout_seconds == 600 and cfg.training.global_batch_rounding == "up"
    # hf_pretrain: HF weights, model only; the alias names the hub snapshot at a pinned commit (the cache folder).
    assert Path(cfg.checkpoint.initial_load_path).parts[-3:-1] == ("models--Qwen--Qwen3-0.6B-Base", "snapshots")
    assert cfg.checkpoint.initial_load_model_only and cfg.checkpoint.initial_load_in_hf
    root = repo_root()
    assert cfg.molgen_resolved.tokenizer_dir == root / "artifacts" / "tokenizers" / "qwen3_0.6b_custom"
    assert cfg.model.hf_assets_path == cfg.checkpoint.initial_load_path, "hf_assets_path follows base_model_tag"
    assert cfg.training.dataset_path == str(root / "artifacts" / "data" / "embedded" / "train")
    assert cfg.validation.dataset_path == str(root / "artifacts" / "data" / "embedded" / "valid")
    assert cfg.job.dump_folder == str(root / "artifacts" / "ckpts" / "qwen3_06b")


def test_cpu_default_config_loads_as_a_small_fp32_wsds_run():
    cfg = load_job_config(PRETRAIN / "cpu_tiny.toml")
    assert cfg.model.flavor == "tiny" and cfg.molgen_run.init_mode == "scratch"
    assert cfg.training.mixed_precision_param == "float32" and cfg.training.dtype == "float32"
    assert str(cfg.molgen_resolved.tokenizer_dir).endswith("tokenizers/molgen_cpu")
    assert cfg.training.dataset_path.endswith("data/embedded_cpu/train")
    assert len(cfg.lr_scheduler.wsds.checkpoints) == 2 and cfg.lr_scheduler.wsds.checkpoints[-1] == cfg.training.steps
    assert cfg.checkpoint.enable and cfg.checkpoint.last_save_in_hf and cfg.validation.enable
    assert cfg.metrics.enable_tensorboard and not cfg.metrics.enable_wandb
    assert cfg.checkpoint.initial_load_path is None
    assert cfg.job.dump_folder == str(repo_root() / "artifacts" / "ckpts" / "cpu_tiny")


def test_cli_overrides_reach_the_molgen_sections():
    cfg = load_job_config(
        FIXTURE_TOML,
        ["--wsds_scheduler.checkpoints", "4", "6", "--optimizer.lr", "1e-3", "--molgen_run.run_name", "fixed"],
    )
    assert cfg.lr_scheduler.wsds.checkpoints == (4, 6)
    assert cfg.optimizer.lr == cfg.lr_scheduler.wsds.lr_max == cfg.molgen_resolved.lr == 1e-3
    assert cfg.molgen_resolved.run_name == "fixed"


def test_finalize_runs_once():
    cfg = load_job_config(FIXTURE_TOML)
    cfg.wsds_scheduler.checkpoints = [999]  # would be rejected if validated again
    assert finalize_job_config(cfg) is cfg
    assert cfg.lr_scheduler.wsds.checkpoints == (3, 6)


# ---------------------------------------------------------------- unknown keys and bad values


def test_unknown_key_is_named_with_its_file_line_and_a_suggestion(tmp_path):
    toml = edited(tmp_path, ('init_mode = "scratch"', 'init_mode = "scratch"\ntokenizer_tagg = "x"'))
    err = config_error(toml)
    assert "[molgen_run] tokenizer_tagg" in str(err)
    assert f"{toml}:14" in str(err) and "'tokenizer_tag'" in str(err)


def test_unknown_section_is_named(tmp_path):
    err = config_error(edited(tmp_path, ("[molgen_data]", "[molgen_dataa]")))
    assert "[molgen_dataa]" in str(err) and "molgen_data" in str(err)


def test_wsds_attachment_is_not_a_toml_key(tmp_path):
    err = config_error(edited(tmp_path, ("[molgen_data]", "[lr_scheduler.wsds]\nenable = true\n\n[molgen_data]")))
    assert err.key == "lr_scheduler.wsds" and "[wsds_scheduler]" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("steps = 6", 'steps = "6"', "training.steps"),
        ('mixed_precision_param = "float32"', 'mixed_precision_param = "fp16"', "training.mixed_precision_param"),
        ("checkpoints = [3, 6]", 'checkpoints = [3, "6"]', "wsds_scheduler.checkpoints"),
        ("enable = true\nfolder", 'enable = "yes"\nfolder', "checkpoint.enable"),
    ],
)
def test_value_of_the_wrong_type_is_named(tmp_path, old, new, key):
    err = config_error(edited(tmp_path, (old, new)))
    assert err.key == key


def test_integer_toml_value_is_accepted_for_a_float_field(tmp_path):
    cfg = load_job_config(edited(tmp_path, ("lr = 3e-3", "lr = 1")))
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)


def test_missing_custom_config_module_is_named(tmp_path):
    err = config_error(
        edited(tmp_path, ('custom_config_module = "molgen3D.training.pretraining.config.custom_job_config"', ""))
    )
    assert err.key == "job.custom_config_module"


# ---------------------------------------------------------------- init_mode


@pytest.mark.parametrize("value", ["", "pretrain"])
def test_init_mode_must_be_one_of_the_three(tmp_path, value):
    err = config_error(edited(tmp_path, ('init_mode = "scratch"', f'init_mode = "{value}"')))
    assert err.key == "molgen_run.init_mode" and "hf_pretrain" in str(err)


def test_scratch_loads_nothing():
    cfg = load_job_config(FIXTURE_TOML)
    assert cfg.checkpoint.initial_load_path is None and not cfg.checkpoint.initial_load_in_hf
    assert cfg.model.hf_assets_path == ""


def test_hf_pretrain_requires_base_model_tag():
    err = config_error(FIXTURE_TOML, ["--molgen_run.init_mode", "hf_pretrain"])
    assert err.key == "molgen_run.base_model_tag"


def test_hf_pretrain_loads_hf_weights_model_only(tmp_path):
    base = tmp_path / "hf_model"
    cfg = load_job_config(
        FIXTURE_TOML, ["--molgen_run.init_mode", "hf_pretrain", "--molgen_run.base_model_tag", str(base)]
    )
    assert cfg.checkpoint.initial_load_path == str(base)
    assert cfg.checkpoint.initial_load_model_only is True and cfg.checkpoint.initial_load_in_hf is True
    assert cfg.model.hf_assets_path == str(base)


def test_hf_pretrain_needs_the_checkpointer(tmp_path):
    err = config_error(
        FIXTURE_TOML,
        [
            "--molgen_run.init_mode",
            "hf_pretrain",
            "--molgen_run.base_model_tag",
            str(tmp_path),
            "--checkpoint.no-enable",
        ],
    )
    assert err.key == "checkpoint.enable"


def test_initial_load_path_is_owned_by_init_mode(tmp_path):
    err = config_error(FIXTURE_TOML, ["--checkpoint.initial_load_path", str(tmp_path)])
    assert err.key == "checkpoint.initial_load_path" and "init_mode" in str(err)


def test_resume_requires_resume_run_path_tag():
    err = config_error(FIXTURE_TOML, ["--molgen_run.init_mode", "resume"])
    assert err.key == "molgen_run.resume_run_path_tag"


@pytest.mark.parametrize(("suffix", "load_step"), [("", -1), ("checkpoint", -1), ("checkpoint/step-3", 3)])
def test_resume_keeps_the_run_name_and_loads_its_dcp(tmp_path, suffix, load_step):
    run_dir = tmp_path / "ckpts" / "241001-1200-abcd-first"
    cfg = load_job_config(
        FIXTURE_TOML, ["--molgen_run.init_mode", "resume", "--molgen_run.resume_run_path_tag", str(run_dir / suffix)]
    )
    assert cfg.molgen_resolved.run_name == "241001-1200-abcd-first"
    assert cfg.checkpoint.load_step == cfg.molgen_resolved.initial_load.load_step == load_step
    assert cfg.checkpoint.initial_load_model_only is False and cfg.checkpoint.initial_load_in_hf is False
    paths = resolve_molgen_paths(cfg)
    assert paths.resume_run_dir == run_dir
    assert paths.resume_checkpoint == (run_dir / "checkpoint/step-3" if load_step == 3 else run_dir / "checkpoint")


def test_resume_keeps_an_explicit_load_step_unless_the_path_names_another(tmp_path):
    run_dir = tmp_path / "ckpts" / "241001-1200-abcd-first"
    resume = ["--molgen_run.init_mode", "resume", "--checkpoint.load_step", "3", "--molgen_run.resume_run_path_tag"]
    assert load_job_config(FIXTURE_TOML, [*resume, str(run_dir)]).checkpoint.load_step == 3
    assert load_job_config(FIXTURE_TOML, [*resume, str(run_dir / "checkpoint/step-3")]).checkpoint.load_step == 3
    err = config_error(FIXTURE_TOML, [*resume, str(run_dir / "checkpoint/step-5")])
    assert err.key == "checkpoint.load_step" and "step-5" in str(err)


def test_resume_rejects_a_different_run_name(tmp_path):
    err = config_error(
        FIXTURE_TOML,
        [
            "--molgen_run.init_mode",
            "resume",
            "--molgen_run.resume_run_path_tag",
            str(tmp_path / "runA"),
            "--molgen_run.run_name",
            "runB",
        ],
    )
    assert err.key == "molgen_run.run_name" and "runA" in str(err)


# ---------------------------------------------------------------- scheduler settings


def test_warmup_steps_given_twice_and_different_is_an_error_naming_both_lines(tmp_path):
    toml = edited(
        tmp_path,
        ("[wsds_scheduler]\nenable = true\nwarmup_steps = 2", "[wsds_scheduler]\nenable = true\nwarmup_steps = 1"),
    )
    err = config_error(toml)
    lines = toml.read_text().splitlines()
    wsds_line, titan_line = lines.index("warmup_steps = 1") + 1, lines.index("warmup_steps = 2") + 1
    assert err.key == "lr_scheduler.warmup_steps", "the derived statement is the one in error"
    assert str(err).startswith(f"[lr_scheduler] warmup_steps ({toml}:{titan_line}): ")
    assert f"[wsds_scheduler] warmup_steps = 1 ({toml}:{wsds_line})" in str(err)
    assert f"[lr_scheduler] warmup_steps = 2 ({toml}:{titan_line})" in str(err)


@pytest.mark.parametrize("kept", ["[lr_scheduler]", "[wsds_scheduler]"])
def test_one_warmup_setting_fills_the_other(tmp_path, kept):
    drop = {
        "[lr_scheduler]": ("[wsds_scheduler]\nenable = true\nwarmup_steps = 2", "[wsds_scheduler]\nenable = true"),
        "[wsds_scheduler]": ("[lr_scheduler]\nwarmup_steps = 2", "[lr_scheduler]"),
    }[kept]
    cfg = load_job_config(edited(tmp_path, drop))
    assert cfg.lr_scheduler.warmup_steps == cfg.molgen_resolved.warmup_steps == cfg.lr_scheduler.wsds.warmup_steps == 2


@pytest.mark.parametrize(
    ("checkpoints", "why"),
    [("[6, 3]", "sorted"), ("[3, 3, 6]", "sorted"), ("[0, 6]", "within"), ("[3, 7]", "within"), ("[2, 6]", "warmup")],
)
def test_wsds_checkpoints_are_checked(tmp_path, checkpoints, why):
    err = config_error(edited(tmp_path, ("checkpoints = [3, 6]", f"checkpoints = {checkpoints}")))
    assert err.key == "wsds_scheduler.checkpoints" and why in str(err)


@pytest.mark.parametrize(
    ("old", "new", "key", "fix"),
    [
        ("decay_frac = 0.5", "decay_frac = 1.5", "wsds_scheduler.decay_frac", "use e.g. 0.1"),
        ("checkpoints = [3, 6]", "checkpoints = [2, 6]", "wsds_scheduler.checkpoints", "move it after warmup_steps"),
        ("lr_min = 0.0", "lr_min = 0.5", "wsds_scheduler.lr_min", "use e.g. 0.0"),
        (
            "decay_frac = 0.5",
            "decay_frac = 0.5\ndecay_steps = 0",
            "wsds_scheduler.decay_steps",
            "remove it (decay_frac applies)",
        ),
    ],
)
def test_wsds_schedule_errors_name_the_key_line_and_fix(tmp_path, old, new, key, fix):
    toml = edited(tmp_path, (old, new))
    err = config_error(toml)
    line = toml.read_text().splitlines().index(new.splitlines()[-1]) + 1
    assert err.key == key and f"({toml}:{line})" in str(err) and f"Fix: {fix}" in str(err)


def test_disabled_wsds_is_checked_except_for_warmup(tmp_path):
    off = ("enable = true\nwarmup_steps = 2", "enable = false\nwarmup_steps = 2")
    err = config_error(edited(tmp_path, off, ("decay_frac = 0.5", "decay_frac = 0.0")))
    assert err.key == "wsds_scheduler.decay_frac"
    cfg = load_job_config(edited(tmp_path, off, ("checkpoints = [3, 6]", "checkpoints = [2, 6]")))
    assert cfg.lr_scheduler.wsds is None and cfg.wsds_scheduler.checkpoints == [2, 6], "the TOML is left as read"


def test_empty_wsds_checkpoints_mean_one_decay_at_the_end(tmp_path):
    cfg = load_job_config(edited(tmp_path, ("checkpoints = [3, 6]", "checkpoints = []")))
    assert cfg.lr_scheduler.wsds.checkpoints == (cfg.training.steps,)
    assert cfg.molgen_resolved.decay_end_steps == (cfg.training.steps,)


def test_disabled_wsds_leaves_torchtitans_scheduler():
    cfg = load_job_config(FIXTURE_TOML, ["--wsds_scheduler.no-enable"])
    assert cfg.lr_scheduler.wsds is None and cfg.lr_scheduler.warmup_steps == 2


@pytest.mark.parametrize(
    ("lr_line", "lr_max_line", "expected"),
    [("", "lr_max = 2e-3", 2e-3), ("lr = 3e-3", "", 3e-3), ("", "", 8e-4), ("lr = 3e-3", "lr_max = 3e-3", 3e-3)],
)
def test_learning_rate_is_one_setting(tmp_path, lr_line, lr_max_line, expected):
    toml = edited(tmp_path, ("lr = 3e-3", lr_line), ("lr_min = 0.0", f"lr_min = 0.0\n{lr_max_line}"))
    cfg = load_job_config(toml)
    assert cfg.optimizer.lr == cfg.molgen_resolved.lr == cfg.lr_scheduler.wsds.lr_max == expected


def test_conflicting_learning_rates_are_an_error_naming_both_lines(tmp_path):
    toml = edited(tmp_path, ("lr_min = 0.0", "lr_min = 0.0\nlr_max = 1e-3"))
    err = config_error(toml)
    lines = toml.read_text().splitlines()
    assert err.key == "wsds_scheduler.lr_max"
    assert f"[optimizer] lr = 0.003 ({toml}:{lines.index('lr = 3e-3') + 1})" in str(err)
    assert f"[wsds_scheduler] lr_max = 0.001 ({toml}:{lines.index('lr_max = 1e-3') + 1})" in str(err)


# ---------------------------------------------------------------- data, tokenizer, lengths


def test_dataset_must_be_the_molgen_loader():
    err = config_error(FIXTURE_TOML, ["--training.dataset", "c4_test"])
    assert err.key == "training.dataset" and "molgen_jsonl" in str(err)


def test_validation_seq_len_defaults_to_training_and_may_not_exceed_it():
    assert load_job_config(FIXTURE_TOML).validation.seq_len == 256
    assert load_job_config(FIXTURE_TOML, ["--validation.seq_len", "128"]).validation.seq_len == 128
    err = config_error(FIXTURE_TOML, ["--validation.seq_len", "512"])
    assert err.key == "validation.seq_len"


def test_tokenizer_tag_is_required(tmp_path):
    err = config_error(edited(tmp_path, ('tokenizer_tag = "tokenizers:molgen_compact"', "")))
    assert err.key == "molgen_run.tokenizer_tag"


def test_second_tokenizer_setting_naming_another_tokenizer_is_an_error():
    err = config_error(FIXTURE_TOML, ["--molgen_data.tokenizer_key", "tokenizers:qwen3_0.6b_custom"])
    assert err.key == "molgen_data.tokenizer_key"
    assert "qwen3_0.6b_custom" in str(err) and "molgen_compact" in str(err)


def test_second_tokenizer_setting_naming_the_same_folder_is_accepted():
    same = str(repo_root() / "artifacts" / "tokenizers" / "molgen_compact")
    cfg = load_job_config(FIXTURE_TOML, ["--molgen_data.tokenizer_key", same])
    assert resolve_molgen_paths(cfg).tokenizer_dir == Path(same)


def test_train_data_named_twice_must_agree():
    err = config_error(FIXTURE_TOML, ["--molgen_data.train_path_key", "data:fixture_valid"])
    assert err.key == "molgen_data.train_path_key"
    cfg = load_job_config(FIXTURE_TOML, ["--molgen_data.train_path_key", "data:fixture_train"])
    assert cfg.training.dataset_path == str(cfg.molgen_resolved.paths.train_data)
    assert cfg.molgen_data.train_path_key == "data:fixture_train", "the TOML is left as read"


def test_enabled_validation_needs_data(tmp_path):
    err = config_error(edited(tmp_path, ('dataset_path = "data:fixture_valid"', "")))
    assert err.key == "validation.dataset_path"


def test_unknown_alias_is_reported_under_its_key():
    err = config_error(FIXTURE_TOML, ["--training.dataset_path", "data:no_such_split"])
    assert err.key == "training.dataset_path" and "no_such_split" in str(err)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cpu_tiny_ckpts", "artifacts/ckpts/cpu_tiny"),
        ("base_paths:ckpts_root/x", "artifacts/ckpts/x"),
        ("ckpts:qwen3_06b", "artifacts/ckpts/qwen3_06b"),
    ],
)
def test_dump_folder_aliases(value, expected):
    cfg = load_job_config(FIXTURE_TOML, ["--job.dump_folder", value])
    assert cfg.job.dump_folder == str(repo_root() / expected)


@pytest.mark.parametrize("key", ["job.dump_folder", "molgen_run.logs_root"])
def test_empty_output_folder_is_an_error_not_a_folder_named_none(key):
    err = config_error(FIXTURE_TOML, [f"--{key}", ""])
    assert err.key == key and "is empty" in str(err)


def test_dump_folder_plain_paths(tmp_path, monkeypatch):
    assert load_job_config(FIXTURE_TOML, ["--job.dump_folder", str(tmp_path / "abs")]).job.dump_folder == str(
        tmp_path / "abs"
    )
    monkeypatch.chdir(tmp_path)
    assert load_job_config(FIXTURE_TOML, ["--job.dump_folder", "rel/dir"]).job.dump_folder == str(
        tmp_path / "rel" / "dir"
    )


def test_seed_flows_to_torchtitan_and_the_loader():
    cfg = load_job_config(FIXTURE_TOML, ["--training.seed", "7"])
    assert cfg.debug.seed == cfg.molgen_resolved.seed == cfg.molgen_resolved.data_seed == 7
    err = config_error(FIXTURE_TOML, ["--training.seed", "7", "--debug.seed", "8"])
    assert err.key == "debug.seed" and "[training] seed = 7 (command-line override --training.seed)" in str(err)


def test_dataloader_options_are_one_setting():
    cfg = load_job_config(FIXTURE_TOML, ["--molgen_data.num_workers", "2"])
    assert cfg.training.dataloader.num_workers == 2 and cfg.molgen_resolved.loader.prefetch_factor == 2
    assert cfg.training.dataloader.prefetch_factor == 2
    err = config_error(FIXTURE_TOML, ["--molgen_data.num_workers", "2", "--training.dataloader.num_workers", "3"])
    assert err.key == "training.dataloader.num_workers" and "[molgen_data] num_workers = 2" in str(err)
    err = config_error(FIXTURE_TOML, ["--molgen_data.persistent_workers", "True"])
    assert err.key == "molgen_data.persistent_workers"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["--checkpoint.keep_latest_k", "1"], "checkpoint.keep_latest_k"),
        (["--checkpoint.last_save_in_hf", "--checkpoint.no-last_save_model_only"], "checkpoint.last_save_in_hf"),
        (["--training.global_batch_size", "6"], "training.global_batch_size"),
        (["--validation.sample_temperature", "0"], "validation.sample_temperature"),
    ],
)
def test_other_bad_values_are_named(overrides, key):
    assert config_error(FIXTURE_TOML, overrides).key == key


def test_error_message_names_section_key_source_and_fix(tmp_path):
    from_cli = config_error(FIXTURE_TOML, ["--training.dataset", "c4_test"])
    assert isinstance(from_cli, ValueError)
    assert str(from_cli).startswith(
        "[training] dataset (command-line override --training.dataset): "
    ) and "Fix:" in str(from_cli)
    toml = edited(tmp_path, ('dataset = "molgen_jsonl"', 'dataset = "c4_test"'))
    line = toml.read_text().splitlines().index('dataset = "c4_test"') + 1
    assert str(config_error(toml)).startswith(f"[training] dataset ({toml}:{line}): ")

"""The post-training TOML: checked keys and values, every option documented in docs/CONFIG.md."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from molgen3D.training.posttraining.config import (
    OptimizerSettings,
    PosttrainConfig,
    RewardSettings,
    RolloutSettings,
    load_config,
)
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
SHIPPED = sorted((REPO / "src" / "molgen3D" / "config" / "posttrain").glob("*.toml"))
SECTIONS = {
    "posttrain": PosttrainConfig,
    "posttrain.rollout": RolloutSettings,
    "posttrain.optimizer": OptimizerSettings,
    "posttrain.reward": RewardSettings,
}


def _section(name: str) -> str:
    parts = [p for p in re.split(r"^## ", DOC, flags=re.MULTILINE) if f"`[{name}]`" in p.splitlines()[0]]
    assert parts, f"docs/CONFIG.md has no heading for [{name}]"
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_field_is_documented_in_its_section(name):
    nested = {"rollout", "optimizer", "reward"}
    fields = [f.name for f in dataclasses.fields(SECTIONS[name]) if f.name not in nested or name != "posttrain"]
    missing = [f for f in fields if f"`{f}`" not in _section(name)]
    assert not missing, f"docs/CONFIG.md [{name}] does not document {missing}"


@pytest.mark.parametrize("toml", SHIPPED, ids=[t.name for t in SHIPPED])
def test_shipped_toml_is_valid_and_documented(toml):
    values = tomllib.loads(toml.read_text(encoding="utf-8"))["posttrain"]
    cfg = load_config(toml, {"model": "some/model"})
    assert cfg.rollout.group_size >= 2 and "docs/CONFIG.md" in toml.read_text(encoding="utf-8")
    for key in values:
        section = f"posttrain.{key}" if isinstance(values[key], dict) else "posttrain"
        for sub in values[key] if isinstance(values[key], dict) else [key]:
            assert f"`{sub}`" in _section(section), f"{toml.name}: [{section}] {sub} not documented"


def test_unknown_key_names_the_closest_one_and_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[posttrain]\nmodel = "m"\ndataset = "d"\n[posttrain.rollout]\ngroup_sise = 4\n', encoding="utf-8")
    with pytest.raises(MolGenConfigError, match=r"group_sise.*bad.toml:5.*group_size"):
        load_config(path)


def test_bad_values_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[posttrain]\nmodel = "m"\ndataset = "d"\n[posttrain.rollout]\ngroup_size = 1\n', encoding="utf-8")
    with pytest.raises(MolGenConfigError, match=r"\[posttrain.rollout\] group_size.*at least 2"):
        load_config(path)
    path.write_text(
        '[posttrain]\nmodel = "m"\ndataset = "d"\n[posttrain.optimizer]\nmicro_batch = 3\n', encoding="utf-8"
    )
    with pytest.raises(MolGenConfigError, match="divisor of group_size x molecules_per_step = 32"):
        load_config(path)


def test_checkpoints_between_two_steps_on_the_same_rollouts_are_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[posttrain]\nmodel = "m"\ndataset = "d"\nsave_steps = 3\n[posttrain.optimizer]\nnum_iterations = 2\n',
        encoding="utf-8",
    )
    with pytest.raises(MolGenConfigError, match=r"save_steps.*bad.toml:4.*multiple of \[posttrain.optimizer\] num_it"):
        load_config(path)
    path.write_text(path.read_text(encoding="utf-8").replace("save_steps = 3", "save_steps = 4"), encoding="utf-8")
    assert load_config(path).optimizer.num_iterations == 2

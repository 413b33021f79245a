"""Path aliases: `section:key/sub` resolution, nesting, hub ids, and errors that list what exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from molgen3D.config import paths
from molgen3D.config.paths import PathAliasError, resolve


@pytest.fixture()
def aliases_file(tmp_path, monkeypatch):
    f = tmp_path / "paths.yaml"
    f.write_text(
        "base_paths:\n"
        "  root_a: some/dir\n"
        "  nested: base_paths:root_a/inner\n"
        "  absolute: /opt/elsewhere\n"
        "  hub: hf:Org/Model-1\n"
        "  loop1: base_paths:loop2\n"
        "  loop2: base_paths:loop1\n"
        "data:\n"
        "  train: base_paths:nested/train\n"
        "tokenizers: {}\nckpts: {}\nmodels: {}\n"
    )
    monkeypatch.setenv(paths.PATHS_ENV, str(f))
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path / "root"))
    return f


def test_relative_values_resolve_against_root_env(aliases_file, tmp_path):
    assert resolve("base_paths:root_a") == str(tmp_path / "root" / "some" / "dir")


def test_nested_alias_and_sub_path(aliases_file, tmp_path):
    got = resolve("data:train/part-0.jsonl")
    assert got == str(tmp_path / "root" / "some" / "dir" / "inner" / "train" / "part-0.jsonl")


def test_absolute_value_kept(aliases_file):
    assert resolve("base_paths:absolute/x") == "/opt/elsewhere/x"


def test_hub_ids_resolve_to_snapshot_folders_not_the_root(aliases_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("base_paths:hub") == str(tmp_path / "hub" / "models--Org--Model-1" / "snapshots" / "main")
    assert resolve("hf:Other/Thing@v1") == str(tmp_path / "hub" / "models--Other--Thing" / "snapshots" / "v1")
    assert paths.hub_ref("base_paths:hub") == paths.hub.HubRef("Org/Model-1", "main")
    assert paths.hub_ref("base_paths:root_a") is None and paths.hub_ref("/abs") is None


def test_plain_values_unchanged(aliases_file):
    assert resolve("relative/path") == "relative/path"
    assert resolve("/abs/path") == "/abs/path"
    assert resolve("https://example.org/x") == "https://example.org/x"


def test_default_section_resolves_bare_key(aliases_file, tmp_path):
    assert resolve("root_a/run1", default_section="base_paths") == str(tmp_path / "root" / "some" / "dir" / "run1")
    assert resolve("not_a_key/run1", default_section="base_paths") == "not_a_key/run1"


def test_unknown_key_lists_existing_keys(aliases_file):
    with pytest.raises(PathAliasError) as err:
        resolve("data:valid")
    msg = str(err.value)
    assert "'valid'" in msg and "train" in msg and str(aliases_file) in msg


def test_unknown_section_lists_sections(aliases_file):
    with pytest.raises(PathAliasError) as err:
        resolve("datasets:train")
    assert "datasets" in str(err.value) and "base_paths" in str(err.value)


def test_cycle_is_reported(aliases_file):
    with pytest.raises(PathAliasError, match="cycle"):
        resolve("base_paths:loop1")


def test_shipped_file_has_required_aliases(monkeypatch):
    monkeypatch.delenv(paths.PATHS_ENV, raising=False)
    shipped = paths.load_aliases(paths.DEFAULT_PATHS_FILE)
    assert set(paths.SECTIONS) <= set(shipped)
    for tag in (
        "data:conformers_train",
        "data:conformers_valid",
        "data:conformers_test",
        "tokenizers:qwen3_0.6b_origin",
        "tokenizers:qwen3_0.6b_custom",
        "tokenizers:molgen_compact",
        "ckpts:qwen3_06b",
        "base_paths:qwen3_0.6b_base_model",
        "data:fixture_train",
    ):
        assert resolve(tag, aliases_file=paths.DEFAULT_PATHS_FILE)
    assert Path(resolve("data:fixture_train", aliases_file=paths.DEFAULT_PATHS_FILE)).parts[-3:] == (
        "fixtures",
        "conformers",
        "train",
    )


def test_errors_name_the_aliases_file_that_was_read(aliases_file, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("data:\n  train: x\n")
    with pytest.raises(PathAliasError) as err:
        resolve("data:valid", aliases_file=other)
    assert str(other) in str(err.value) and str(aliases_file) not in str(err.value)


@pytest.mark.parametrize("value", ["", "5", "[a, b]"])
def test_a_key_without_a_path_fails_at_load_naming_it(tmp_path, value):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data:\n  train: ok/dir\n  valid: {value}\n")
    with pytest.raises(PathAliasError, match=rf"{re.escape(str(bad))}: data:valid is .*, not a path string"):
        resolve("data:train", aliases_file=bad)

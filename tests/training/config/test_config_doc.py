"""docs/CONFIG.md documents every option the project reads, and the shipped TOMLs point at it."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from molgen3D.training.pretraining.config.custom_job_config import JobConfig

REPO = Path(__file__).resolve().parents[3]
DOC = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
TOMLS = sorted((REPO / "src" / "molgen3D" / "config" / "pretrain").glob("*.toml"))


def _section_text(section: str) -> str:
    """The part of CONFIG.md under every `## ...[section]...` heading."""
    parts = re.split(r"^## ", DOC, flags=re.MULTILINE)
    found = [part for part in parts if f"`[{section}]`" in part.splitlines()[0]]
    assert found, f"docs/CONFIG.md has no heading for [{section}]"
    return "\n".join(found)


def _keys(values: dict) -> list[tuple[str, str]]:
    """(section, key) of every TOML value; a nested table's keys count as `table.key` in their section."""
    return [(section, key) for section, table in values.items() for key in _flat(table)]


def _flat(table: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in table.items():
        keys += _flat(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"]
    return keys


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(JobConfig)])
def test_every_molgen_field_is_documented_in_its_section(section):
    cls = next(f.type for f in dataclasses.fields(JobConfig) if f.name == section)
    text = _section_text(section)
    missing = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in text]
    assert not missing, f"docs/CONFIG.md [{section}] does not document {missing}"


@pytest.mark.parametrize("toml", TOMLS, ids=[t.name for t in TOMLS])
def test_every_key_of_a_shipped_toml_is_documented(toml):
    values = tomllib.loads(toml.read_text(encoding="utf-8"))
    missing = [f"[{section}] {key}" for section, key in _keys(values) if f"`{key}`" not in _section_text(section)]
    assert not missing, f"{toml.name}: not in docs/CONFIG.md: {missing}"


@pytest.mark.parametrize("toml", TOMLS, ids=[t.name for t in TOMLS])
def test_shipped_tomls_point_at_the_reference(toml):
    text = toml.read_text(encoding="utf-8")
    assert "docs/CONFIG.md" in text
    assert not re.search(r"runbook|FACTS|§", text), "cite only documents that ship with the repository"

"""Resolve `section:key/sub/path` aliases defined in `paths.yaml`.

TOML files and CLI flags name data, tokenizers and checkpoints by alias so that one config
runs on any machine; only `paths.yaml` (or $MOLGEN3D_PATHS) knows where things live.
A value `hf:<org>/<name>@<revision>` is a Hugging Face hub repository: it resolves to its
snapshot folder in the user's Hugging Face cache, fetched once if missing (`config/hub.py`).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import yaml

from molgen3D.config import hub

SECTIONS = ("base_paths", "data", "tokenizers", "ckpts", "models")
ROOT_ENV = "MOLGEN3D_ROOT"
PATHS_ENV = "MOLGEN3D_PATHS"
DEFAULT_PATHS_FILE = Path(__file__).with_name("paths.yaml")


class PathAliasError(ValueError):
    """An alias names a section or key that `paths.yaml` does not define."""


def repo_root() -> Path:
    """$MOLGEN3D_ROOT, else the source checkout holding this package, else the working directory."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


def paths_file() -> Path:
    return Path(os.environ.get(PATHS_ENV) or DEFAULT_PATHS_FILE)


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise PathAliasError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    for section, entries in data.items():
        if not isinstance(entries, dict):
            raise PathAliasError(f"{path}: section {section!r} must be a mapping of key: path")
        for key, value in entries.items():
            if not isinstance(value, str) or not value:
                raise PathAliasError(
                    f"{path}: {section}:{key} is {value!r}, not a path string; write a path (quoted if it "
                    f"looks like a number), a section:key alias or hf:<id>"
                )
    return data


def load_aliases(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    return _load(str(path or paths_file()))


HUB_PREFIX = "hf:"
_TAG = re.compile(r"^([a-z_][a-z0-9_]*):(?!//)")


def is_alias(value: str) -> bool:
    """True for `word:...` (not a URL, not `hf:`): it must then name a section of paths.yaml."""
    match = _TAG.match(str(value))
    return bool(match) and match.group(1) != HUB_PREFIX[:-1]


def split_alias(tag: str) -> tuple[str, str, str]:
    """`data:conformers_train/part-0` -> ("data", "conformers_train", "part-0")."""
    section, _, rest = tag.partition(":")
    key, _, sub = rest.partition("/")
    return section, key, sub


def resolve(value: str | Path, *, default_section: str | None = None, aliases_file: str | Path | None = None) -> str:
    """Turn an alias into a path string; a plain value is returned as a path unchanged.

    With `default_section`, a bare `key/sub` whose key exists in that section is resolved
    there too (so `dump_folder = "cpu_tiny_ckpts"` names a base_paths key). An `hf:` value
    becomes its local snapshot folder (`hub.snapshot`: cached, downloaded, or where it will be).
    """
    value = str(value)
    if value.startswith(HUB_PREFIX):
        return str(hub.snapshot(hub.parse_hub(value[len(HUB_PREFIX) :])))
    where = str(aliases_file or paths_file())
    aliases = load_aliases(where)
    if not is_alias(value):
        head = value.split("/", 1)[0]
        if default_section and head in aliases.get(default_section, {}):
            value = f"{default_section}:{value}"
        else:
            return value
    return _resolve_tag(value, aliases, where, seen=())


def _resolve_tag(tag: str, aliases: dict[str, dict[str, str]], where: str, seen: tuple[str, ...]) -> str:
    """`tag` resolved through `aliases` (read from the file `where`, which errors name)."""
    section, key, sub = split_alias(tag)
    if section not in aliases:
        raise PathAliasError(
            f"unknown path section {section!r} in {tag!r}; {where} defines: {', '.join(sorted(aliases))}"
        )
    entries = aliases[section]
    if key not in entries:
        raise PathAliasError(
            f"unknown key {key!r} in section {section!r} (from {tag!r}); {where} defines {section}: "
            f"{', '.join(sorted(entries))}"
        )
    if f"{section}:{key}" in seen:
        raise PathAliasError(f"alias cycle in {where}: {' -> '.join(seen + (f'{section}:{key}',))}")
    target = entries[key]
    if is_alias(target):
        base = _resolve_tag(target, aliases, where, seen + (f"{section}:{key}",))
    elif target.startswith(HUB_PREFIX):
        base = str(hub.snapshot(_hub_ref(target, section, where)))
    else:
        expanded = Path(target).expanduser()
        base = str(expanded if expanded.is_absolute() else repo_root() / expanded)
    return str(Path(base) / sub) if sub else base


def _hub_ref(target: str, section: str, where: str) -> hub.HubRef:
    """The repository an `hf:` value names; in the tokenizers section only its tokenizer files."""
    patterns = hub.TOKENIZER_PATTERNS if section == "tokenizers" else None
    try:
        return hub.parse_hub(target[len(HUB_PREFIX) :], patterns)
    except ValueError as err:
        raise PathAliasError(f"{where}: {err}") from None


def hub_ref(value: str | Path, *, aliases_file: str | Path | None = None) -> hub.HubRef | None:
    """The hub repository a value (or the alias chain it starts) ends in, or None for local paths."""
    value = str(value)
    if value.startswith(HUB_PREFIX):
        return hub.parse_hub(value[len(HUB_PREFIX) :])
    if not is_alias(value):
        return None
    where = str(aliases_file or paths_file())
    aliases = load_aliases(where)
    seen: set[tuple[str, str]] = set()
    while is_alias(value):
        section, key, _ = split_alias(value)
        if (section, key) in seen or key not in aliases.get(section, {}):
            return None
        seen.add((section, key))
        value = aliases[section][key]
        if value.startswith(HUB_PREFIX):
            return _hub_ref(value, section, where)
    return None


def resolve_path(value: str | Path, **kwargs) -> Path:
    """`resolve` for values that must be local paths."""
    return Path(resolve(value, **kwargs))

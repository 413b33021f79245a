"""General TOML checks: unknown keys (with the closest valid one), value types, and where a key is set.

TOML values bypass tyro's parsing, so their types are checked here against the dataclass
annotations; every error names the `[section] key`, with `file:line` when the TOML sets it or
the command-line override that did.
"""

import difflib
import os
import re
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError


def check_toml_keys(values: dict[str, Any], config_cls: type, toml_path: Path | str = "", prefix: str = "") -> None:
    """Reject any TOML key the merged config does not define (naming it and the closest valid key) or a value
    of the wrong type."""
    valid = {f.name: f for f in fields(config_cls)}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if dotted == "lr_scheduler.wsds":
            raise MolGenConfigError(
                dotted,
                "this field is internal (filled from [wsds_scheduler])",
                "set the WSDS options under [wsds_scheduler]",
            )
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            section = prefix.rstrip(".") or "top level"
            raise MolGenConfigError(
                dotted,
                f"unknown key {key!r} in {toml_path or 'the TOML'} ({section} accepts: {', '.join(sorted(valid))})",
                f"{hint}remove or rename it",
                where=locate(toml_path, dotted) if toml_path else "",
            )
        sub = valid[key].type
        if is_dataclass(sub):
            if not isinstance(value, dict):
                raise MolGenConfigError(
                    dotted,
                    f"must be a [section], got a {type(value).__name__}",
                    f"write it as [{dotted}] with key = value lines",
                )
            check_toml_keys(value, sub, toml_path, f"{dotted}.")
        elif not _matches(value, sub)[0]:
            raise MolGenConfigError(
                dotted,
                f"got {value!r}, expected {_describe(sub)}",
                "change the value to that type",
                where=locate(toml_path, dotted) if toml_path else "",
            )


def cli_keys(overrides: typing.Sequence[str]) -> frozenset[str]:
    """`section.key` names set by `--section.key[=value]` / `--section.no-key` overrides."""
    keys = set()
    for token in overrides:
        if token.startswith("--"):
            section, _, name = token[2:].split("=", 1)[0].replace("-", "_").rpartition(".")
            keys.add(f"{section}.{name.removeprefix('no_')}")
            keys.add(f"{section}.{name}")
    return frozenset(keys)


def where_set(cfg, key: str) -> str:
    """Where a value came from: the command-line override, else `file:line` in the TOML (or "")."""
    if key in getattr(cfg, "_molgen_cli_keys", ()):
        return f"command-line override --{key}"
    return locate(cfg.job.config_file, key)


def locate(toml_path: Path | str | None, key: str) -> str:
    """`file:line` of `key` ("section.name") in the TOML, or "" when the file does not set it."""
    if not toml_path or not os.path.isfile(toml_path):
        return ""
    section, _, name = key.rpartition(".")
    current = ""
    pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
    with open(toml_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
            if header:
                current = header.group(1)
            elif current == section and pattern.match(line):
                return f"{toml_path}:{lineno}"
    return ""


def check_value_types(cfg) -> None:
    """TOML values bypass tyro: check each against its annotation (Literal choices included), naming the key."""

    def walk(obj, prefix: str) -> None:
        for f in fields(obj):
            value, key = getattr(obj, f.name), f"{prefix}{f.name}"
            if is_dataclass(value):
                walk(value, f"{key}.")
                continue
            annotation = _strip_annotated(f.type)
            ok, coerced = _matches(value, annotation)
            if not ok:
                raise MolGenConfigError(
                    key,
                    f"got {value!r}, expected {_describe(annotation)}",
                    "change the value to that type",
                    where=where_set(cfg, key),
                )
            if coerced is not value:
                setattr(obj, f.name, coerced)

    walk(cfg, "")


def _strip_annotated(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _matches(value, tp) -> tuple[bool, Any]:
    """(value fits tp, value with ints widened to float where tp wants a float). Unknown annotations pass."""
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return True, value
    if origin is Literal:
        return value in typing.get_args(tp), value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            ok, coerced = _matches(value, option)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_tp,) = typing.get_args(tp) or (Any,)
        results = [_matches(v, item_tp) for v in value]
        if not all(ok for ok, _ in results):
            return False, value
        coerced = [c for _, c in results]
        return True, (coerced if any(c is not v for c, v in zip(coerced, value)) else value)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, float(value)
        return isinstance(value, float), value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _describe(tp) -> str:
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        return f"list of {_describe(item_tp)}"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))

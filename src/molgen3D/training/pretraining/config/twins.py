"""Settings a TOML may state in two places: which statement decides, and the one rule between them.

The runbook names some keys twice (`[optimizer] lr` and `[wsds_scheduler] lr_max`, the two
`warmup_steps`, the data paths and the tokenizer in `[molgen_data]`) and TorchTitan has its own
copy of some of ours (`[debug] seed`, `[training.dataloader]`). Each pair in `TWINS` has a source;
the other statement may be omitted (it is then derived from the source: finalize keeps one
value and `finalize.write_titan_config` writes TorchTitan's copy) or given equal. Given and
different is an error naming both `[section] key = value (file:line)`. When only the other
statement is given it supplies the value, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.toml_checks import where_set


@dataclass(frozen=True)
class Twin:
    """Two statements of one setting; a value in `omitted` (per side) means "not given"."""

    source: str
    other: str
    other_omitted: Any = None
    """TorchTitan's default for its own fields: that value counts as not given."""


TWINS: dict[str, Twin] = {
    twin_name: twin
    for twin_name, twin in (
        ("tokenizer", Twin("molgen_run.tokenizer_tag", "molgen_data.tokenizer_key")),
        ("train_data", Twin("training.dataset_path", "molgen_data.train_path_key")),
        ("valid_data", Twin("validation.dataset_path", "molgen_data.valid_path_key")),
        ("seed", Twin("training.seed", "debug.seed")),
        ("lr", Twin("optimizer.lr", "wsds_scheduler.lr_max")),
        ("warmup_steps", Twin("wsds_scheduler.warmup_steps", "lr_scheduler.warmup_steps")),
        ("num_workers", Twin("molgen_data.num_workers", "training.dataloader.num_workers", 0)),
        ("pin_memory", Twin("molgen_data.pin_memory", "training.dataloader.pin_memory", False)),
        ("prefetch_factor", Twin("molgen_data.prefetch_factor", "training.dataloader.prefetch_factor")),
        ("persistent_workers", Twin("molgen_data.persistent_workers", "training.dataloader.persistent_workers", False)),
    )
}


def read_key(cfg: Any, key: str) -> Any:
    """The value of a dotted `section.key` (nested sections allowed) in a job config."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def label(cfg: Any, key: str, value: Any, meaning: Any = None) -> str:
    """`[section] key = value (-> meaning) (file:line)` for messages; `meaning`: what the value resolves to."""
    section, _, name = key.rpartition(".")
    where = where_set(cfg, key)
    shown = "" if meaning is None or meaning == value else f" (-> {meaning})"
    return f"[{section}] {name} = {value!r}{shown}" + (f" ({where})" if where else "")


def disagreement(cfg: Any, twin: Twin, source_text: str, other_text: str) -> MolGenConfigError:
    """The error for a pair given twice with different values; it names both statements."""
    section, _, name = twin.source.rpartition(".")
    other_section, _, other_name = twin.other.rpartition(".")
    return MolGenConfigError(
        twin.other,
        f"{other_text} disagrees with {source_text}",
        f"remove [{other_section}] {other_name} (it follows [{section}] {name}), or make both equal",
        where=where_set(cfg, twin.other),
    )


def one_value(
    cfg: Any,
    twin_name: str,
    *,
    convert: Callable[[str, Any], Any] | None = None,
    same: Callable[[Any, Any], bool] | None = None,
) -> tuple[Any, str | None]:
    """(the setting's one value, the key that gave it); (None, None) when neither statement is given.

    `convert(key, raw)` turns a raw value into the compared one (paths: alias -> absolute path);
    `same` compares converted values (default ==).
    """
    twin = TWINS[twin_name]
    raw_source, raw_other = read_key(cfg, twin.source), read_key(cfg, twin.other)
    source_given = raw_source not in (None, "")
    other_given = raw_other not in (None, "") and raw_other != twin.other_omitted
    source = convert(twin.source, raw_source) if source_given and convert else raw_source
    other = convert(twin.other, raw_other) if other_given and convert else raw_other
    if source_given and other_given and not (same(source, other) if same else source == other):
        raise disagreement(
            cfg, twin, label(cfg, twin.source, raw_source, source), label(cfg, twin.other, raw_other, other)
        )
    if source_given:
        return source, twin.source
    if other_given:
        return other, twin.other
    return None, None

"""TOML + `--section.key value` overrides -> a finalized JobConfig (`read_job_config`, `load_job_config`).

TorchTitan's ConfigManager does the parsing; before it runs, the TOML's keys and value types are
checked against the merged dataclasses so a typo is named with its file:line instead of ignored.
`read_job_config` stops after finalize (the runner writes TorchTitan's fields once it has laid
out the run's folders); `load_job_config` also writes them, for everything else.
"""

import tomllib
import typing
from pathlib import Path
from typing import Any

from molgen3D.training.pretraining.config.custom_job_config import THIS_MODULE, JobConfig, MolGenConfigError
from molgen3D.training.pretraining.config.finalize import finalize_job_config, write_titan_config
from molgen3D.training.pretraining.config.toml_checks import check_toml_keys, cli_keys, locate


def merged_config_class() -> type:
    """TorchTitan's JobConfig merged with ours, exactly as ConfigManager builds it."""
    from torchtitan.config import ConfigManager
    from torchtitan.config import JobConfig as TitanJobConfig

    return ConfigManager._merge_configs(TitanJobConfig, JobConfig)


def load_job_config(train_toml: str | Path, overrides: typing.Sequence[str] = ()) -> Any:
    """`read_job_config`, then TorchTitan's fields written from `molgen_resolved` (dump folder = the runs root)."""
    job_config = read_job_config(train_toml, overrides)
    write_titan_config(job_config)
    return job_config


def read_job_config(train_toml: str | Path, overrides: typing.Sequence[str] = ()) -> Any:
    """TOML + overrides -> finalized JobConfig with `molgen_resolved`; TorchTitan's fields not yet written."""
    from torchtitan.config import ConfigManager
    from torchtitan.tools.logging import logger as titan_logger

    train_toml = Path(train_toml)
    values = _read_toml(train_toml)
    custom = values.get("job", {}).get("custom_config_module") if isinstance(values.get("job"), dict) else None
    if custom != THIS_MODULE:
        raise MolGenConfigError(
            "job.custom_config_module",
            f"{train_toml} sets it to {custom!r}, so the MolGen3D sections would be unknown to TorchTitan",
            f'add custom_config_module = "{THIS_MODULE}" under [job]',
            where=locate(train_toml, "job.custom_config_module"),
        )
    check_toml_keys(values, merged_config_class(), train_toml)
    quiet = _DropMessages("HF assets path")  # aliases and "" are resolved by finalize, not by the manager
    titan_logger.addFilter(quiet)
    try:
        job_config = ConfigManager().parse_args(["--job.config_file", str(train_toml), *overrides])
    finally:
        titan_logger.removeFilter(quiet)
    object.__setattr__(job_config, "_molgen_cli_keys", cli_keys(overrides))
    return finalize_job_config(job_config)


class _DropMessages:
    """A logging filter that hides records starting with one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def _read_toml(train_toml: Path) -> dict[str, Any]:
    try:
        with open(train_toml, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise MolGenConfigError(
            "job.config_file",
            f"{train_toml} does not exist",
            "pass an existing TOML (see src/molgen3D/config/pretrain/)",
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise MolGenConfigError(
            "job.config_file", f"{train_toml} is not valid TOML ({err})", "fix the syntax at that line"
        ) from None

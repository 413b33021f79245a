"""Load a MolGen3D tokenizer by directory or `tokenizers:` alias, and find its separator id.

The dataloader, the trainer, HF export and the evaluation all load tokenizers here, so a missing
build or a directory whose eos is not `<|endoftext|>` fails once, early, with the fix in the message.
Two views of one directory: `load_tokenizer` (transformers, for the loader and sampling) and
`load_titan_tokenizer` (TorchTitan's, for the Trainer).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molgen3D.chem.tagged_text import EOT
from molgen3D.config.paths import resolve

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

FIX = "build it with `molgen3d build-tokenizer` (or `molgen3d build-tokenizer --out-root <dir>` for another root)"


class TokenizerNotFoundError(FileNotFoundError):
    """A tokenizer alias or path names no built tokenizer directory."""


def resolve_tokenizer_dir(path_or_alias: str | Path) -> Path:
    """The directory of a tokenizer; `tokenizers:<name>` aliases and bare `<name>` keys resolve via paths.yaml."""
    path = Path(resolve(str(path_or_alias), default_section="tokenizers")).expanduser()
    if not path.is_dir() or not (path / "tokenizer.json").is_file():
        what = "does not exist" if not path.exists() else "has no tokenizer.json"
        raise TokenizerNotFoundError(f"tokenizer {str(path_or_alias)!r} resolves to {path}, which {what}; {FIX}")
    return path


def load_tokenizer(path_or_alias: str | Path) -> PreTrainedTokenizerFast:
    """A `transformers.PreTrainedTokenizerFast` whose eos and pad are `<|endoftext|>`."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = resolve_tokenizer_dir(path_or_alias)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"{directory} loads as {type(tokenizer).__name__}, not a fast tokenizer; {FIX}")
    eot_id(tokenizer)  # raises when the vocabulary lacks it
    if tokenizer.eos_token != EOT or tokenizer.pad_token != EOT:
        raise ValueError(
            f"{directory}: eos is {tokenizer.eos_token!r} and pad is {tokenizer.pad_token!r}, but MolGen3D separates "
            f"and pads units with {EOT!r}; write a conforming copy with `molgen3d build-tokenizer --source {directory}`"
        )
    return tokenizer


def eot_id(tokenizer: Any) -> int:
    """The id of `<|endoftext|>` in a transformers, `tokenizers` or TorchTitan tokenizer; error if it has none."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    token_id = backend.token_to_id(EOT)
    if token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no {EOT} token; MolGen3D needs it as separator and pad"
        )
    return int(token_id)


@lru_cache(maxsize=4)
def _titan_tokenizer(directory: str, mtime_ns: int) -> Any:
    del mtime_ns  # part of the cache key: a rebuilt directory is read again
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    tokenizer = HuggingFaceTokenizer(directory)
    # Flex/varlen document masks and generation read eos_id; <|endoftext|> is ours, whatever
    # tokenizer_config.json names as eos.
    try:
        tokenizer.eos_id = eot_id(tokenizer)
    except ValueError as err:
        raise ValueError(f"{directory}: {err}") from None
    return tokenizer


def load_titan_tokenizer(path_or_alias: str | Path) -> Any:
    """TorchTitan's `HuggingFaceTokenizer` on a tokenizer directory, with eos_id = <|endoftext|> (cached per build)."""
    directory = os.path.abspath(resolve_tokenizer_dir(path_or_alias))
    return _titan_tokenizer(directory, os.stat(os.path.join(directory, "tokenizer.json")).st_mtime_ns)

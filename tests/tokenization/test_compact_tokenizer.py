"""The compact tokenizer: lossless on any unit, compact, small, and the same through every loader."""

from __future__ import annotations

import json
import random
import re

import pytest
from tokenizers import Tokenizer

from molgen3D.chem.tagged_text import EOT, TAGS
from molgen3D.tokenization.compact import (
    ELEMENTS,
    MAX_WORD_CHARS,
    build_compact_backend,
    byte_alphabet,
    compact_files,
    compact_vocabulary,
    whole_bracket_atoms,
)
from molgen3D.tokenization.load import eot_id
from molgen3D.tokenization.stats import tokens_per_unit

from tokenization_cases import HAND_MADE_BRACKETS


@pytest.fixture(scope="module")
def titan_compact(compact_tokenizer_dir):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    return HuggingFaceTokenizer(str(compact_tokenizer_dir))


def _round_trip(tokenizer, text: str) -> str:
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_vocab_within_16k_without_duplicates(compact_tokenizer):
    vocab = compact_vocabulary()
    assert len(vocab) == len(set(vocab))
    assert len(compact_tokenizer) == len(vocab) <= 16_000


def test_separator_and_tags_are_single_ordinary_tokens(compact_tokenizer):
    assert compact_tokenizer.eos_token == compact_tokenizer.pad_token == EOT
    assert compact_tokenizer.bos_token is None
    assert eot_id(compact_tokenizer) == compact_tokenizer.eos_token_id == compact_tokenizer.pad_token_id
    glued = compact_tokenizer("[SMILES]CC[/SMILES][CONFORMER]x[/CONFORMER]" + EOT, add_special_tokens=False)[
        "input_ids"
    ]
    tag_ids = [compact_tokenizer.convert_tokens_to_ids(tag) for tag in TAGS]
    assert len(set(tag_ids)) == 4 and all(glued.count(i) == 1 for i in tag_ids)
    assert glued[0] == tag_ids[0] and glued[-1] == eot_id(compact_tokenizer)
    assert set(compact_tokenizer.all_special_tokens) == {EOT}, "tags must not be special (decode would drop them)"


@pytest.mark.parametrize("source", ["fixture_units", "rdkit_units", "hand_made_units"])
def test_lossless_round_trip(compact_tokenizer, source, request):
    units = request.getfixturevalue(source)
    broken = [u for u in units if _round_trip(compact_tokenizer, u) != u]
    assert not broken, f"{len(broken)} of {len(units)} units changed, e.g. {broken[0][:200]!r}"


def test_test_units_cover_the_hard_cases(rdkit_units, hand_made_units):
    """Guards the test data: the round-trip tests above must really see these forms."""
    text = "".join(rdkit_units)
    for needle in (
        "%10",
        "[C@@H]",
        "[nH]",
        "[2H]",
        "[13CH3]",
        "[B-]",
        "[Se]",
        "[Te]",
        "[Si]",
        "[*]",
        "[se]",
        "[Cu+2]",
        ".[Na+]",
        "[CH3:1]",
        "->",
        "[Ts]",
        "/",
    ):
        assert needle in text, f"no unit written by RDKit contains {needle!r}"
    hand = "".join(hand_made_units)
    for pattern in (r"[<,]-?\d{4}\.", r"\.\d{6}[,>]", r"<-?\d+,-?\d+,-?\d+>", r"\[Fe@TB12\]"):
        assert re.search(pattern, hand), pattern


def test_same_ids_through_transformers_tokenizers_and_torchtitan(
    compact_tokenizer, titan_compact, compact_tokenizer_dir, fixture_units, hand_made_units
):
    raw = Tokenizer.from_file(str(compact_tokenizer_dir / "tokenizer.json"))
    assert titan_compact.eos_id == eot_id(compact_tokenizer)
    assert titan_compact.bos_id is None
    assert titan_compact.get_vocab_size() == len(compact_tokenizer)
    for unit in fixture_units[:20] + hand_made_units[::10]:
        ids = compact_tokenizer(unit, add_special_tokens=False)["input_ids"]
        assert titan_compact.encode(unit) == ids == raw.encode(unit).ids
        assert titan_compact.decode(ids, skip_special_tokens=False) == unit


def test_at_most_10_tokens_per_heavy_atom_on_fixture(compact_tokenizer, fixture_units):
    stats = tokens_per_unit(compact_tokenizer, fixture_units)
    assert stats["tokens_per_heavy_atom"] <= 10.0, stats


def test_coordinate_costs_two_tokens_per_value(compact_tokenizer):
    """`<-12.3456,` is `<-12` + `.3456`; `>` glues to the next atom; a whole bracket atom is one token."""
    tokens = compact_tokenizer.tokenize("[C@@H]<-12.3456,0.5000,7.0001>[C]<1.0000,-2.0000,3.0000>")
    assert tokens == [
        "[C@@H]",
        "<-12",
        ".3456",
        ",0",
        ".5000",
        ",7",
        ".0001",
        ">[C]",
        "<1",
        ".0000",
        ",-2",
        ".0000",
        ",3",
        ".0000",
        ">",
    ]


def test_unlisted_bracket_atoms_are_spelled_from_parts(compact_tokenizer):
    atoms = set(whole_bracket_atoms())
    for bracket in HAND_MADE_BRACKETS:
        tokens = compact_tokenizer.tokenize(bracket)
        assert "".join(tokens) == bracket
        if bracket not in atoms:
            assert tokens[0] == "[" and tokens[-1] == "]" and len(tokens) > 2, (bracket, tokens)


def test_unknown_characters_fall_back_to_bytes_never_vanish(compact_tokenizer):
    alphabet = set(byte_alphabet())
    for text in ("é", "中文", "🙂", "\x00\x7f"):
        tokens = compact_tokenizer.tokenize(text)
        assert all(t in alphabet for t in tokens) and len(tokens) == len(text.encode("utf-8")), tokens
        assert _round_trip(compact_tokenizer, text) == text
    for text in ("C\tC\nC  C", "🙂[SMILES]é", "a" * 3 * MAX_WORD_CHARS, "[" + "é" * 28 + "]"):
        assert _round_trip(compact_tokenizer, text) == text
    assert compact_tokenizer.unk_token is None


def test_a_word_the_model_cannot_split_is_an_error_not_a_loss():
    """The pre-tokenizer never makes such a word; if it did, WordPiece must fail loudly (there is no unk piece)."""
    with pytest.raises(Exception, match="Missing"):
        build_compact_backend().model.tokenize("C" * (MAX_WORD_CHARS + 1))


def test_element_list_is_rdkits_periodic_table():
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    assert list(ELEMENTS) == [table.GetElementSymbol(z) for z in range(1, 119)]


def test_random_text_round_trips(compact_tokenizer):
    rng = random.Random(3)
    alphabet = list("[]<>,.-+=#@%:/\\()*0123456789CcNnOoSsHlBrFIP \n\té中") + list(TAGS) + [EOT]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        assert _round_trip(compact_tokenizer, text) == text


def test_build_is_deterministic():
    first, second = compact_files(), compact_files()
    assert first == second
    config = json.loads(first["tokenizer_config.json"])
    assert config["eos_token"] == config["pad_token"] == EOT and config["bos_token"] is None


def test_compact_is_much_shorter_than_qwen(compact_tokenizer, qwen_custom_tokenizer_dir, fixture_units):
    qwen = tokens_per_unit(qwen_custom_tokenizer_dir, fixture_units)
    ours = tokens_per_unit(compact_tokenizer, fixture_units)
    assert ours["tokens_per_unit"] < 0.5 * qwen["tokens_per_unit"], (ours, qwen)


@pytest.mark.parametrize("split", ["whole", "pairs", "digits"])
def test_coordinate_splits_are_lossless_on_every_fixture_unit(split, fixture_data):
    from molgen3D.chem.tagged_text import format_unit

    backend = build_compact_backend(split)
    lines = [json.loads(line) for p in sorted(fixture_data.glob("*/*.jsonl")) for line in p.open()]
    for row in lines:
        unit = format_unit(row["canonical_smiles"], row["embedded_smiles"])
        assert backend.decode(backend.encode(unit).ids) == unit


def _coordinate_pieces(backend, text: str) -> list[str]:
    enc = backend.encode(text)
    return [backend.decode([i]) for i in enc.ids]


def test_pairs_split_cuts_fractions_into_one_or_two_digit_pieces():
    backend = build_compact_backend("pairs")
    assert _coordinate_pieces(backend, "[C]<-12.4567,3.0071,0.123>") == [
        "[C]",
        "<-12",
        ".45",
        "67",
        ",3",
        ".00",
        "71",
        ",0",
        ".12",
        "3",
        ">",
    ]
    vocab = compact_vocabulary("pairs")
    assert not [p for p in vocab if p.startswith(".") and len(p) > 3]
    assert len(vocab) < len(compact_vocabulary("whole")) - 10_000


def test_digit_split_writes_every_number_character_as_one_piece():
    backend = build_compact_backend("digits")
    pieces = _coordinate_pieces(backend, "[C]<-12.4567,3.0071,0.123>[N]<0.5,1.25,-3.5>")
    assert pieces[:12] == ["[C]", "<", "-", "1", "2", ".", "4", "5", "6", "7", ",", "3"]
    assert all(len(p) == 1 for p in pieces if set(p) <= set("-.0123456789<,"))
    assert not [p for p in compact_vocabulary("digits") if len(p) > 1 and set(p) <= set("-.0123456789")]
    with pytest.raises(ValueError, match="coordinate split must be one of"):
        compact_vocabulary("bytes")

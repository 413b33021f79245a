"""The compact format-aware tokenizer: a closed, rule-made vocabulary for conformer text.

Qwen3's BPE spends one token per digit (~25 tokens per heavy atom at 4 decimals). Here a coordinate costs
two tokens, its delimiter glued to the signed integer part (`<-12`, `,3`) and its fraction
(`.4567`); the `>` closing a block is glued to what follows (`>[C@@H]`, `>(`, `>1`); the
SMILES prompt is read two SMILES tokens at a time (`CC`, `(=`, `c1`). That is about 7 tokens
per atom of the conformer and ~8.7 per heavy atom for a whole unit, with 14,555 pieces.

Nothing is learned from data, so the vocabulary is the same on every machine:
- a regex pre-tokenizer cuts the text into short words (a bracket atom, a coordinate part,
  a `>` with the structure symbols after it, a run of SMILES tokens, any other character);
- WordPiece with an empty continuation prefix splits each word greedily into the longest
  vocabulary pieces;
- every one of the 256 byte-level characters is a piece, so a word always splits: a bracket
  atom outside the enumerated set falls back to `[`, element, chirality, H count, charge,
  digits, `]`, and a character outside ASCII falls back to its UTF-8 bytes. No text is ever
  mapped to an unknown token; the ByteLevel decoder concatenates pieces, so decoding is exact.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from molgen3D.chem.tagged_text import EOT, TAGS
from molgen3D.tokenization.hf_config import config_bytes, tokenizer_config

# ---------------------------------------------------------------- SMILES alphabet
ORGANIC = ("B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I")
AROMATIC = ("b", "c", "n", "o", "p", "s")
RING_DIGITS = tuple("0123456789")
BONDS_AND_BRANCHES = ("(", ")", "=", "#", "-", "/", "\\", ".", ":", "~", "$")
# The SMILES tokens read in pairs in the prompt (rarer bond symbols and `0` stay single).
PAIR_UNITS = (*ORGANIC, *AROMATIC, "*", "(", ")", "=", "#", "-", "/", "\\", ".", *"123456789")
# Two-digit ring closures.
PERCENT_RINGS = tuple(f"%{i}" for i in range(10, 100))

# ---------------------------------------------------------------- bracket atoms
# Elements by atomic number (RDKit can write any of them in brackets).
ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf "
    "Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
AROMATIC_BRACKET = ("b", "c", "n", "o", "p", "s", "se", "te", "as", "si")
# Whole-atom pieces are enumerated for these; anything else is spelled from sub-pieces.
MAIN_GROUP = (
    "B",
    "C",
    "N",
    "O",
    "P",
    "S",
    "F",
    "Cl",
    "Br",
    "I",
    "H",
    "Si",
    "Se",
    "Te",
    "As",
    "Ge",
    "Sn",
    *AROMATIC_BRACKET,
)
MAIN_H = ("", "H", "H2", "H3")
MAIN_CHARGES = ("", "+", "-")
STEREO_CENTRES = ("C", "N", "P", "S", "Si", "B", "Se", "Ge", "Sn", "As")
IONS = (
    "Li",
    "Na",
    "K",
    "Rb",
    "Cs",
    "Be",
    "Mg",
    "Ca",
    "Sr",
    "Ba",
    "Al",
    "Ga",
    "In",
    "Tl",
    "Zn",
    "Cd",
    "Hg",
    "Cu",
    "Ag",
    "Au",
    "Fe",
    "Co",
    "Ni",
    "Mn",
    "Cr",
    "Ti",
    "V",
    "Pt",
    "Pd",
    "Ru",
    "Rh",
    "Ir",
    "Os",
    "Mo",
    "W",
    "Zr",
    "Sb",
    "Bi",
    "Pb",
    "Gd",
    "La",
    "He",
    "Ne",
    "Ar",
    "Kr",
    "Xe",
)
ION_CHARGES = ("", "+", "+2", "+3", "-")
ISOTOPE_ATOMS = (
    "[2H]",
    "[3H]",
    "[11C]",
    "[13C]",
    "[13CH]",
    "[13CH2]",
    "[13CH3]",
    "[13c]",
    "[13cH]",
    "[14C]",
    "[15N]",
    "[15NH]",
    "[15NH2]",
    "[15n]",
    "[17O]",
    "[18O]",
    "[18F]",
    "[32P]",
    "[35S]",
    "[123I]",
    "[124I]",
    "[125I]",
    "[131I]",
)
EXTRA_ATOMS = ("[*]", "[NH4+]", "[PH4+]", "[BH4-]", "[SiH4]")
# Sub-pieces a bracket atom outside the enumerated set is spelled with.
BRACKET_PARTS = (
    "[",
    "]",
    "@",
    "@@",
    "@TH1",
    "@TH2",
    "@AL1",
    "@AL2",
    "@SP1",
    "@SP2",
    "@SP3",
    "@TB",
    "@OH",
    "H",
    "H2",
    "H3",
    "H4",
    "+",
    "-",
    "++",
    "--",
    "+2",
    "+3",
    "+4",
    "-2",
    "-3",
    ":",
)
NUMBERS = tuple(str(i) for i in range(100))

# ---------------------------------------------------------------- coordinates
# Integer parts -99..99 with their delimiter; larger ones fall back to digits.
INTEGER_LIMIT = 100
# Fractions `.d` .. `.dddd`: one piece for up to 4 decimals; more decimals add digit pieces.
MAX_FRACTION_DIGITS = 4
# How a coordinate is cut into pieces (the rest of the vocabulary is the same for all):
# - "whole": `<-12` + `.4567` (2 pieces, 10,000 fraction classes seen a few times each);
# - "pairs": `<-12` + `.45` + `67` (fractions in 1-2 digit pieces: 100 classes each);
# - "digits": `<` `-` `1` `2` `.` `4` `5` `6` `7`, one character per piece, as Qwen3's BPE writes numbers.
COORDINATE_SPLITS = ("whole", "pairs", "digits")
_NUMBER_CHARS = frozenset("-.0123456789")

# Word boundaries for the WordPiece model (Oniguruma syntax). Each word is short, so the
# greedy longest-match stays cheap; the last branch takes any single character.
PRE_TOKENIZER_PATTERN = (
    r">?\[[^\[\]<>]{1,30}\]"  # a bracket atom, with the `>` closing the coordinates before it
    r"|[<,]-?\d{1,3}"  # a delimiter and a signed integer part
    r"|\.\d{1,6}"  # a fraction
    r"|>[^\[\]<>,]{0,6}"  # `>` and the bonds, branches and ring closures after it
    r"|(?:Cl|Br|%\d\d|[^\[\]<>,\s]){1,16}"  # a run of SMILES tokens (the prompt)
    r"|[\s\S]"
)
# Longer than any word the pattern can make, in byte-level characters (a bracket atom of 30
# four-byte characters is 123), so WordPiece never gives up on a word.
MAX_WORD_CHARS = 256


def byte_alphabet() -> tuple[str, ...]:
    """The 256 byte-level characters of `pre_tokenizers.ByteLevel`, in byte order (printable ASCII is itself)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + shifted)
            shifted += 1
    return tuple(chars[b] for b in range(256))


def whole_bracket_atoms() -> tuple[str, ...]:
    """The bracket atoms that are one piece (the rest are spelled from `BRACKET_PARTS`)."""
    atoms = [f"[{el}{h}{q}]" for el in MAIN_GROUP for h in MAIN_H for q in MAIN_CHARGES]
    atoms += [f"[{el}{c}{h}{q}]" for el in STEREO_CENTRES for c in ("@", "@@") for h in ("", "H") for q in MAIN_CHARGES]
    atoms += [f"[{el}{q}]" for el in IONS for q in ION_CHARGES]
    atoms += [*ISOTOPE_ATOMS, *EXTRA_ATOMS]
    return tuple(_unique(atoms))


def _coordinate_pieces(split: str) -> tuple[str, ...]:
    integers = tuple(f"{d}{sign}{i}" for d in "<," for sign in ("", "-") for i in range(INTEGER_LIMIT))
    if split == "whole":
        digits = range(MAX_FRACTION_DIGITS + 1)
        return (*integers, *("." + "".join(d) for k in digits for d in itertools.product("0123456789", repeat=k)))
    if split == "pairs":
        fractions = ("." + "".join(d) for k in (1, 2) for d in itertools.product("0123456789", repeat=k))
        return (*integers, *fractions, *(f"{i:02d}" for i in range(100)))
    return ()


def compact_vocabulary(split: str = "whole") -> tuple[str, ...]:
    """All pieces in id order: `<|endoftext|>` = 0, the tags 1..4 (`TAGS` order), the 256 bytes, then the rest.

    `split` (one of `COORDINATE_SPLITS`) decides the coordinate pieces. With "digits", no piece of
    two or more number characters exists at all (not even a SMILES pair like `12` or a charge like
    `-2`), so greedy matching can only write a number one character at a time.
    """
    if split not in COORDINATE_SPLITS:
        raise ValueError(f"coordinate split must be one of {COORDINATE_SPLITS}, got {split!r}")
    atoms = whole_bracket_atoms()
    structure = (*BONDS_AND_BRANCHES, *RING_DIGITS, "%")
    pieces = itertools.chain(
        (EOT, *TAGS),
        byte_alphabet(),
        ORGANIC,
        AROMATIC,
        ("*",),
        BONDS_AND_BRANCHES,
        RING_DIGITS,
        PERCENT_RINGS,
        (a + b for a in PAIR_UNITS for b in PAIR_UNITS),
        ELEMENTS,
        AROMATIC_BRACKET,
        BRACKET_PARTS,
        NUMBERS,
        atoms,
        (">" + a for a in atoms),
        (">", *(">" + s for s in structure)),
        _coordinate_pieces(split),
    )
    if split == "digits":
        pieces = (p for p in pieces if len(p) < 2 or not set(p) <= _NUMBER_CHARS)
    return tuple(_unique(pieces))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def build_compact_backend(split: str = "whole") -> Tokenizer:
    """The `tokenizers.Tokenizer` of the compact vocabulary with coordinate pieces `split` (deterministic)."""
    vocab = {piece: i for i, piece in enumerate(compact_vocabulary(split))}
    # No unk piece: every word splits into byte pieces, and an impossible miss raises instead of hiding text.
    tokenizer = Tokenizer(
        models.WordPiece(vocab, unk_token="", continuing_subword_prefix="", max_input_chars_per_word=MAX_WORD_CHARS)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAGS])
    return tokenizer


def compact_files(split: str = "whole") -> dict[str, bytes]:
    """The files of the compact tokenizer directory, by name."""
    backend = build_compact_backend(split)
    text = backend.to_str(pretty=True)
    config = tokenizer_config(json.loads(text), "PreTrainedTokenizerFast")
    return {"tokenizer.json": text.encode("utf-8"), "tokenizer_config.json": config_bytes(config)}

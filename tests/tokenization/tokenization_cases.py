"""Molecules and hand-made edge cases for the tokenizer tests, and a SMILES-only conformer-text writer."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from molgen3D.chem.tagged_text import format_unit

# Molecules whose SMILES exercise every part of the format: stereo (tetrahedral, double bond,
# sulfoxide), charges, isotopes, explicit and isotopic H, aromatic heteroatoms with H, rare
# elements, wildcard, atom maps, salts, dative bonds, ring closures above 9.
ADVERSARIAL_SMILES = (
    "C[C@@H](N)C(=O)O",
    "N[C@]1(C(=O)O)CC[C@H](O)C1",
    "F/C=C/F",
    "C/C=C(\\Cl)Br",
    "C[S@@](=O)c1ccccc1",
    "C[NH3+]",
    "C[N+](C)(C)C",
    "[NH4+].[Cl-]",
    "[O-]C(=O)c1ccccc1.[Na+]",
    "O=S(=O)([O-])[O-].[Cu+2]",
    "[N-]=[N+]=N",
    "F[B-](F)(F)F",
    "[2H]C([2H])([2H])Cl",
    "[13CH3][13CH2]O",
    "[15NH4+]",
    "[18F]c1ccccc1",
    "[125I]c1ccc(O)cc1",
    "c1cc[nH]c1",
    "c1cc[se]c1",
    "c1cc[te]c1",
    "C[Se]C",
    "C[Te]C",
    "C[Si](C)(C)C",
    "[SiH4]",
    "F[Xe]F",
    "[Gd+3]",
    "[U]",
    "[Ts]",
    "[Og]",
    "*C(=O)O",
    "[CH3:1][OH:2]",
    "[H][H]",
    "[CH4]->[Fe]",
    "C1CC2CC3CC4CC5CC6CC7CC8CC9CC%10CC1C2C3C4C5C6C7C8C9%10",
    "C12C3C4C5C1C6C7C2C8C3C9C4C1C5C6C2C7C8C9C12",
)

# Forms RDKit may not write (or refuses to encode) but the tokenizer must still carry exactly.
HAND_MADE_BRACKETS = (
    "[C@@H]",
    "[C@H]",
    "[C@]",
    "[C@@]",
    "[N@+]",
    "[NH2+]",
    "[nH+]",
    "[13CH3]",
    "[2H+]",
    "[Co+3]",
    "[Fe+2]",
    "[Pt@SP1]",
    "[Fe@TB12]",
    "[Co@OH25]",
    "[C@TH2H]",
    "[Ts+5]",
    "[Lv-3]",
    "[235U]",
    "[CH3:123]",
    "[O--]",
    "[Fe+++]",
    "[se+]",
    "[asH]",
    "[*:1]",
    "[999Og@@H4+9:99]",
)

_SMILES_TOKEN = re.compile(r"\[[^\]]*\]|Cl|Br|[BCNOPSFI]|[bcnops]|\*|%\d\d|->|<-|.")
_PLAIN = {"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "p", "s", "*"}


def random_number(rng: random.Random, int_digits: int, decimals: int) -> str:
    sign = rng.choice(("", "-"))
    integer = str(rng.randrange(10**int_digits))
    fraction = "".join(rng.choice("0123456789") for _ in range(decimals))
    return f"{sign}{integer}.{fraction}" if decimals else f"{sign}{integer}"


def embed_text(smiles: str, rng: random.Random, int_digits: int = 1, decimals: int = 4) -> str:
    """Conformer text written from a SMILES string alone (atoms bracketed, random coordinates after each)."""
    parts = []
    for token in _SMILES_TOKEN.findall(smiles):
        if token in _PLAIN or token.startswith("["):
            atom = f"[{token}]" if token in _PLAIN else token
            xyz = ",".join(random_number(rng, rng.randint(1, int_digits), decimals) for _ in range(3))
            parts.append(f"{atom}<{xyz}>")
        else:
            parts.append(token)
    return "".join(parts)


def read_fixture_units(root: Path) -> list[str]:
    units = []
    for path in sorted(root.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            units.append(format_unit(record["canonical_smiles"], record["embedded_smiles"]))
    return units

"""The text units the model reads and writes: `[SMILES]s[/SMILES][CONFORMER]e[/CONFORMER]`.

The four tags are added tokens of every MolGen3D tokenizer; `<|endoftext|>` separates
units in a packed sequence and pads its tail.
"""

from __future__ import annotations

SMILES_OPEN = "[SMILES]"
SMILES_CLOSE = "[/SMILES]"
CONFORMER_OPEN = "[CONFORMER]"
CONFORMER_CLOSE = "[/CONFORMER]"
EOT = "<|endoftext|>"

# In the order of their ids in qwen3_0.6b_custom (151669..151672).
TAGS = (SMILES_OPEN, CONFORMER_OPEN, SMILES_CLOSE, CONFORMER_CLOSE)


def format_unit(canonical_smiles: str, embedded_smiles: str) -> str:
    """One training unit."""
    return f"{SMILES_OPEN}{canonical_smiles}{SMILES_CLOSE}{CONFORMER_OPEN}{embedded_smiles}{CONFORMER_CLOSE}"


def format_prompt(canonical_smiles: str) -> str:
    """The generation prompt; the model goes on with `[CONFORMER]`."""
    return f"{SMILES_OPEN}{canonical_smiles}{SMILES_CLOSE}"

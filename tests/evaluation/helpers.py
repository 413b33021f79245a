"""Helpers shared by the evaluation tests: tiny random models and fixture look-ups."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def tiny_qwen3(vocab_size: int, seed: int = 0):
    """A randomly initialised, tied-embedding Qwen3 small enough to decode hundreds of tokens per second."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    )
    return Qwen3ForCausalLM(config).eval()


def fixture_lines(fixture_data: Path, split: str) -> list[dict]:
    with open(fixture_data / split / "part-00000.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def smallest_molecules(fixture_data: Path, split: str, n: int) -> list[str]:
    """The n molecules of a split with the fewest heavy atoms (short samples keep tests fast)."""
    lines = fixture_lines(fixture_data, split)
    size = {r["canonical_smiles"]: r["embedded_smiles"].count("<") for r in lines}
    return sorted(size, key=lambda s: (size[s], s))[:n]

"""MolGen3D: pretrain Qwen3 language models on 3D conformer text, then sample and score conformers."""

__version__ = "0.1.0"

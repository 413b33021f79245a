"""Evaluation-test helpers: tokenizers loaded once, tiny random Qwen3 models saved as HF folders.

A random model saved with `save_pretrained` next to its tokenizer is exactly what `molgen3d
export-hf` writes, so generate/evaluate are tested on the real loading path. Tests decode one
token at a time with tiny batches, where extra torch threads only spin on a shared CPU: one
thread for the duration of each test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


from .helpers import tiny_qwen3


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def compact_model_dir(tmp_path_factory, compact_tokenizer) -> Path:
    """An HF folder: tiny random Qwen3 + the compact tokenizer."""
    directory = tmp_path_factory.mktemp("compact_model")
    model = tiny_qwen3(len(compact_tokenizer))
    model.config.eos_token_id = model.config.pad_token_id = compact_tokenizer.eos_token_id
    model.save_pretrained(directory)
    compact_tokenizer.save_pretrained(directory)
    return directory

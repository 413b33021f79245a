"""Shared fixtures: the committed conformer fixture and tokenizers built once per session."""

from __future__ import annotations

import importlib.util
import sys
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "conformers"

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """`tests/fixtures/conformers` with train/ valid/ test/ JSONL shards and manifest.json."""
    assert (FIXTURE_DATA / "train").is_dir(), f"missing committed fixture {FIXTURE_DATA}"
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def tokenizer_root(tmp_path_factory) -> Path:
    """All MolGen3D tokenizers (qwen3_0.6b_origin, qwen3_0.6b_custom, molgen_compact and its variants), built once."""
    from molgen3D.tokenization.build import build_all

    root = tmp_path_factory.mktemp("tokenizers")
    build_all(root)
    return root


@pytest.fixture(scope="session")
def compact_tokenizer_dir(tokenizer_root) -> Path:
    return tokenizer_root / "molgen_compact"


@pytest.fixture(scope="session")
def qwen_custom_tokenizer_dir(tokenizer_root) -> Path:
    return tokenizer_root / "qwen3_0.6b_custom"


@pytest.fixture(scope="session")
def qwen_origin_tokenizer_dir(tokenizer_root) -> Path:
    return tokenizer_root / "qwen3_0.6b_origin"


@pytest.fixture(scope="session")
def compact_tokenizer(compact_tokenizer_dir):
    """The compact tokenizer, loaded once (transformers PreTrainedTokenizerFast)."""
    from molgen3D.tokenization.load import load_tokenizer

    return load_tokenizer(compact_tokenizer_dir)


@pytest.fixture(scope="session")
def qwen_custom_tokenizer(qwen_custom_tokenizer_dir):
    from molgen3D.tokenization.load import load_tokenizer

    return load_tokenizer(qwen_custom_tokenizer_dir)


@pytest.fixture(scope="session")
def qwen_origin_tokenizer(qwen_origin_tokenizer_dir):
    from molgen3D.tokenization.load import load_tokenizer

    return load_tokenizer(qwen_origin_tokenizer_dir)


@pytest.fixture(scope="session")
def load_benchmark():
    """`load_benchmark("geom_scale")`: the module of benchmarks/geom_scale.py (benchmarks are scripts)."""

    def load(name: str):
        if str(REPO / "benchmarks") not in sys.path:  # as when the script runs: its folder's modules import
            sys.path.insert(0, str(REPO / "benchmarks"))
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

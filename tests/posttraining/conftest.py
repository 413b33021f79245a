"""Post-training test helpers: a tiny random model folder (compact tokenizer) and a small config."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.conftest import _one_torch_thread, compact_model_dir  # noqa: F401  (shared fixtures)
from evaluation.helpers import smallest_molecules


@pytest.fixture(scope="session")
def start_model(request) -> Path:
    """The evaluation tests' tiny random model folder (compact tokenizer) is the start model."""
    return request.getfixturevalue("compact_model_dir")


@pytest.fixture
def write_config(tmp_path, start_model, fixture_data):
    """`write_config(out, **posttrain_keys)` -> a TOML path for a 2-molecule, group-of-2 run."""

    def write(out: Path, extra: str = "") -> Path:
        molecules = smallest_molecules(fixture_data, "train", 2)
        text = f"""
[posttrain]
model = "{start_model}"
dataset = "{fixture_data}"
out = "{out}"
molecules = {molecules!r}
steps = 2
save_steps = 1
report_to = []
{extra}
[posttrain.rollout]
group_size = 2
molecules_per_step = 1
max_new_tokens = 300
[posttrain.optimizer]
lr = 0.05
kl_beta = 0.04
[posttrain.reward]
sigma = 200.0
posebusters_weight = 0.0
"""
        path = tmp_path / f"{out.name}.toml"
        path.write_text(text.replace("'", '"'), encoding="utf-8")
        return path

    return write

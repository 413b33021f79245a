"""Training-test helpers: a tiny-flavor TOML on the committed fixture data, and in-process runs.

`tiny_config(...)` gives the sections of a complete run config (tiny flavor, seq_len 256,
batch 4, fp32, compact tokenizer, fixture train/valid splits); tests change sections with
nested dicts, `write_toml` writes it, `run_tiny` trains through `run_pretraining` in this
process (it sets RANK/WORLD_SIZE/MASTER_* with a free port and destroys the process group it
created). `tiny_run` is one shared 30-step run with checkpoints, validation and TensorBoard
that several test modules inspect, so the expensive part happens once per session.
"""

from __future__ import annotations

import gc
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "conformers"
CONFIG_MODULE = "molgen3D.training.pretraining.config.custom_job_config"
TRAIN_SPEC_MODULE = "molgen3D.training.pretraining.torchtitan_model.qwen3_custom"

# The shared run: 30 steps, WSDS decay ends at 10/20/30, DCP every 7 steps, keep 2.
TINY_STEPS = 30
TINY_DECAY_ENDS = [10, 20, 30]
TINY_INTERVAL = 7


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_config(
    tokenizer_dir: Path, out_root: Path, run_name: str, **sections: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """A complete tiny-flavor run config as TOML sections; `sections` update them key by key."""
    config: dict[str, dict[str, Any]] = {
        "job": {
            "description": run_name,
            "dump_folder": str(out_root / "ckpts"),
            "custom_config_module": CONFIG_MODULE,
        },
        "molgen_run": {
            "init_mode": "scratch",
            "tokenizer_tag": str(tokenizer_dir),
            "run_name": run_name,
            "logs_root": str(out_root / "outputs"),
        },
        "model": {"name": "molgen_qwen3", "flavor": "tiny"},
        "experimental": {"custom_import": TRAIN_SPEC_MODULE},
        "training": {
            "dataset_path": str(FIXTURE / "train"),
            "seq_len": 256,
            "local_batch_size": 4,
            "steps": 6,
            "dtype": "float32",
            "mixed_precision_param": "float32",
            "seed": 1234,
        },
        "optimizer": {"name": "AdamW", "lr": 3e-3},
        "wsds_scheduler": {"warmup_steps": 2, "checkpoints": [6], "decay_frac": 0.2},
        "checkpoint": {"enable": False, "interval": 1000, "keep_latest_k": 0},
        "metrics": {"log_freq": 1},
        "activation_checkpoint": {"mode": "none"},
        "validation": {"enable": False, "dataset_path": str(FIXTURE / "valid"), "local_batch_size": 4},
        "molgen_data": {"num_workers": 0},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def write_toml(config: dict[str, dict[str, Any]], path: Path) -> Path:
    """Sections of scalars and lists -> a TOML file."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_tiny(toml: Path):
    """Train in this process with the runner; returns its RunResult (losses per logged step)."""
    from molgen3D.training.pretraining.torchtitan_runner import run_pretraining

    saved = {k: os.environ.get(k) for k in ("MASTER_PORT",)}
    os.environ["MASTER_PORT"] = str(free_port())
    try:
        return run_pretraining(toml)
    finally:
        gc.enable()  # TorchTitan's GarbageCollection disables automatic gc for the process
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class TinyRun:
    result: Any
    config: dict[str, dict[str, Any]]
    toml: Path
    log_text: str
    validation_losses: dict[int, float]

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.result.checkpoint_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, compact_tokenizer_dir) -> TinyRun:
    """30 tiny steps: WSDS decay ends 10/20/30, DCP every 7 steps (keep 2), validation every 10, TB on."""
    from molgen3D.training.pretraining.components.metrics_processor import MolGenMetricsProcessor

    root = tmp_path_factory.mktemp("tiny_run")
    config = tiny_config(
        compact_tokenizer_dir,
        root,
        "tiny-a",
        training={"steps": TINY_STEPS},
        wsds_scheduler={"warmup_steps": 3, "checkpoints": TINY_DECAY_ENDS, "decay_frac": 0.2},
        checkpoint={"enable": True, "interval": TINY_INTERVAL, "keep_latest_k": 2},
        metrics={"log_freq": 1, "enable_tensorboard": True},
        validation={"enable": True, "freq": 10, "steps": -1},
    )
    toml = write_toml(config, root / "tiny_a.toml")
    validation: dict[int, float] = {}
    original = MolGenMetricsProcessor.log_validation

    def recording(self, loss, step, extra_metrics=None):
        validation[int(step)] = float(loss)
        return original(self, loss, step, extra_metrics)

    MolGenMetricsProcessor.log_validation = recording
    try:
        result = run_tiny(toml)
    finally:
        MolGenMetricsProcessor.log_validation = original
    return TinyRun(result, config, toml, Path(result.log_path).read_text(encoding="utf-8"), validation)


@pytest.fixture
def make_tiny_toml(tmp_path, compact_tokenizer_dir):
    """`make_tiny_toml(run_name, **sections) -> Path`: a tiny-run TOML under this test's tmp dir."""

    def make(run_name: str, root: Path | None = None, **sections: dict[str, Any]) -> Path:
        root = root or tmp_path
        return write_toml(tiny_config(compact_tokenizer_dir, root, run_name, **sections), root / f"{run_name}.toml")

    return make


@pytest.fixture
def write_config():
    """`write_config(sections, path) -> path`: sections of a run config as a TOML file."""
    return write_toml


@pytest.fixture
def train_tiny():
    """`train_tiny(toml) -> RunResult`: an in-process run through the runner."""
    return run_tiny

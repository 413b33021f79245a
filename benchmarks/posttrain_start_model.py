"""Build (or reuse) the start model of benchmarks/posttrain.py: the demo's data, tokenizer and CPU pretraining.

The same steps as `molgen3d demo` 1-5 (prepare the embedded molecules, re-write them in the CPU format,
build the tokenizers, pretrain `cpu_tiny.toml`, export to an HF folder), with fewer steps when asked.
Prints the JSON {"model": ..., "data": ..., "stored": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from molgen3D.config.paths import resolve_path

CPU_TINY = Path(__file__).resolve().parents[1] / "src" / "molgen3D" / "config" / "pretrain" / "cpu_tiny.toml"


def build(steps: int, molecules: int) -> dict:
    from molgen3D.datasets.prepare import prepare_embedded_default
    from molgen3D.datasets.reformat_data import reformat_dataset
    from molgen3D.hf.export import export_step
    from molgen3D.tokenization.build import CPU_DEFAULT_FORMAT, build_all
    from molgen3D.training.pretraining.torchtitan_runner import run_pretraining

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stored = prepare_embedded_default(resolve_path("data:embedded_root"), max_molecules=molecules, workers=2)
    data = reformat_dataset(stored, resolve_path("data:cpu_root"), CPU_DEFAULT_FORMAT)
    build_all(resolve_path("base_paths:tokenizers_root"))
    warmup = str(max(1, steps // 10))
    overrides = ["--training.steps", str(steps), "--lr_scheduler.warmup_steps", warmup]
    overrides += ["--wsds_scheduler.warmup_steps", warmup, "--wsds_scheduler.checkpoints", str(steps)]
    overrides += ["--checkpoint.interval", str(steps), "--validation.no-enable"]
    result = run_pretraining(CPU_TINY, run_desc="posttrain-start", overrides=overrides)
    model = export_step(result.checkpoint_dir / f"step-{result.final_step}", result.run_dir / "hf", overwrite=True)
    return {"model": str(model), "data": str(data), "stored": str(stored), "run_dir": str(result.run_dir)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--molecules", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "posttrain_start_model.json")
    args = parser.parse_args()
    found = build(args.steps, args.molecules)
    args.out.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(found, indent=2))

"""The README's main job: embedded molecules -> tokenizers -> CPU pretraining -> HF export -> scores.

Every step is the same function a user would call on its own (`prepare-data`, `reformat-data`,
`build-tokenizer`, `pack-stats`, `pretrain`, `export-hf`, `evaluate`); this module only
chains them on the embedded default and prints where everything went. The data are re-written
in the CPU default's coordinate format (`tokenization.build.CPU_DEFAULT_FORMAT`, the format
`benchmarks/learning.py` measured to learn best); the model folder records it, so `evaluate`
samples in it without being told.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from molgen3D.config.paths import resolve_path

CPU_TINY_TOML = Path(__file__).resolve().parent / "config" / "pretrain" / "cpu_tiny.toml"


@dataclass
class DemoConfig:
    """Options of `molgen3d demo`."""

    molecules: int = 1000
    """Molecules taken from RDKit's bundled drug-like SMILES (embedded once, then cached)."""
    conformers_per_molecule: int = 4
    """ETKDGv3 conformers per molecule."""
    workers: int = 2
    """Processes for conformer embedding."""
    train_toml: Path = CPU_TINY_TOML
    """Pretraining config (the CPU default trains the `tiny` flavor)."""
    steps: int | None = None
    """Override [training] steps; warmup (10%), WSDS decay ends (half, end) and checkpoint interval follow."""
    eval_molecules: int = 16
    """Held-out test molecules to sample and score against ETKDG."""
    nll_units: int = 100
    """Validation units for the held-out NLL per coordinate."""
    max_new_tokens: int = 1500
    """Generation cap per conformer."""
    sample_threads: int = 1
    """torch threads while sampling (one is fastest for the tiny model's small matrices)."""
    out: Path | None = None
    """Evaluation output folder; default outputs/demo/<run-name>."""


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def heldout_nll(model_dir: Path, valid_dir: Path, units: int) -> dict:
    """NLL per coordinate of the exported model on the first `units` validation units (in its format)."""
    from molgen3D.chem.coordinate_format import ORIGINAL, read_format
    from molgen3D.generation.model_io import load_model
    from molgen3D.tokenization.coordinate_nll import coordinate_nll, uniform_fraction_nll
    from molgen3D.tokenization.stats import read_units

    lm, tokenizer, _ = load_model(model_dir)
    texts = list(read_units(valid_dir, limit=units))
    out = coordinate_nll(lambda ids: lm(input_ids=ids).logits, tokenizer, texts, tokenizer.eos_token_id)
    fmt = read_format(model_dir) or ORIGINAL
    return {**out, "units": len(texts), "format": fmt.name, "uniform_fraction_nll": uniform_fraction_nll(fmt.decimals)}


def nll_line(nll: dict) -> str:
    return (
        f"held-out NLL ({nll['units']} validation units, format {nll['format']}): "
        f"{nll['nll_per_coordinate']:.2f} nats per coordinate, of which the fraction part "
        f"{nll['nll_fraction_per_coordinate']:.2f} (uniform {nll['uniform_fraction_nll']:.2f}); "
        f"{nll['nll_per_structure_token']:.3f} per structure token"
    )


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    from molgen3D.datasets.reformat_data import reformat_dataset
    from molgen3D.datasets.prepare import prepare_embedded_default
    from molgen3D.tokenization.build import CPU_DEFAULT, CPU_DEFAULT_FORMAT, build_all
    from molgen3D.tokenization.load import load_tokenizer
    from molgen3D.training.pretraining.dataprocessing.pack_stats import format_stats, pack_stats

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timings: dict[str, float] = {}

    t = _step(
        "1/6 prepare the embedded data set (RDKit's bundled drug-like SMILES, ETKDGv3) and re-write it "
        f"in the CPU default's coordinate format ({CPU_DEFAULT_FORMAT.name})"
    )
    stored_root = prepare_embedded_default(
        resolve_path("data:embedded_root"),
        max_molecules=cfg.molecules,
        conformers_per_molecule=cfg.conformers_per_molecule,
        workers=cfg.workers,
    )
    data_root = reformat_dataset(stored_root, resolve_path("data:cpu_root"), CPU_DEFAULT_FORMAT)
    timings["prepare"] = time.perf_counter() - t

    t = _step("2/6 build tokenizers")
    tokenizers = build_all(resolve_path("base_paths:tokenizers_root"))
    for name, path in tokenizers.items():
        print(f"  {name:<20} {path}")
    timings["tokenizers"] = time.perf_counter() - t

    t = _step(f"3/6 pack a few training batches ({CPU_DEFAULT} tokenizer, seq_len 512)")
    stats = pack_stats(
        str(data_root / "train"), load_tokenizer(f"tokenizers:{CPU_DEFAULT}"), seq_len=512, batch_size=8, batches=4
    )
    print(format_stats(stats))
    timings["pack_stats"] = time.perf_counter() - t

    from molgen3D.hf.export import export_step
    from molgen3D.training.pretraining.torchtitan_runner import run_pretraining

    t = _step(f"4/6 pretrain on CPU ({cfg.train_toml.name})")
    overrides: list[str] = []
    if cfg.steps is not None:
        warmup = str(max(1, cfg.steps // 10))
        overrides += [
            "--training.steps",
            str(cfg.steps),
            "--lr_scheduler.warmup_steps",
            warmup,
            "--wsds_scheduler.warmup_steps",
            warmup,
            "--wsds_scheduler.checkpoints",
            str(cfg.steps // 2),
            str(cfg.steps),
            "--checkpoint.interval",
            str(cfg.steps // 2),
        ]
    result = run_pretraining(cfg.train_toml, run_desc="demo", overrides=overrides)
    timings["pretrain"] = time.perf_counter() - t

    t = _step("5/6 export the last checkpoint to a Hugging Face folder")
    last_step = result.checkpoint_dir / f"step-{result.final_step}"
    hf_dir = export_step(last_step, result.run_dir / "hf", overwrite=True)
    print(f"  {hf_dir}")
    timings["export"] = time.perf_counter() - t

    from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
    from molgen3D.scoring.report import format_table
    from molgen3D.generation.sampling import SamplingConfig

    t = _step(
        f"6/6 sample and score {cfg.eval_molecules} held-out molecules, model vs ETKDG, each also relaxed with MMFF94"
    )
    eval_dir = cfg.out or resolve_path("base_paths:outputs_root") / "demo" / result.run_name
    metrics = evaluate(
        EvaluateConfig(
            references=str(stored_root / "test"),
            out=eval_dir,
            model=str(hf_dir),
            baseline="etkdg",
            max_molecules=cfg.eval_molecules,
            threads=cfg.sample_threads,
            sampling=SamplingConfig(max_new_tokens=cfg.max_new_tokens),
            relax="mmff",
        )
    )
    print(format_table(metrics))
    nll = heldout_nll(hf_dir, data_root / "valid", cfg.nll_units)
    print(nll_line(nll))
    metrics_path = eval_dir / "metrics.json"
    written = json.loads(metrics_path.read_text(encoding="utf-8"))
    written["heldout_nll"] = nll
    metrics_path.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    timings["evaluate"] = time.perf_counter() - t

    places = {
        "data": data_root,
        "tokenizers": resolve_path("base_paths:tokenizers_root"),
        "run": result.run_dir,
        "checkpoints": result.checkpoint_dir,
        "runtime log": result.log_path,
        "tensorboard": result.tb_dir,
        "hf export": hf_dir,
        "metrics": eval_dir / "metrics.json",
        "coverage plot": Path(metrics["plot"]),
    }
    print("\n=== done ===")
    width = max(map(len, places))
    for name, path in places.items():
        print(f"  {name:<{width}}  {path}")
    print("  timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return places


def cli(argv: list[str]) -> int:
    run_demo(tyro.cli(DemoConfig, args=argv, prog="molgen3d demo"))
    return 0

"""Training throughput: our TorchTitan stack vs a plain PyTorch loop, same model, batches and optimizer.

Ours = `run_pretraining` (TorchTitan Trainer + the molgen_qwen3 train spec: packed loader, WSDS,
metrics, grad clipping). Plain = the same TorchTitan Qwen3 model and flavor, batches from the same
dataloader builder and config (same seed, so the same batches), torch AdamW with the same
hyperparameters, cross entropy summed over valid tokens / valid tokens, clip_grad_norm_, WSDS
LambdaLR, and nothing else. Both time whole steps (data + forward + backward + clip + optimizer);
the first `--warmup` steps of each run are not counted. Runs alternate ours/plain `--repeats`
times; the median tokens/s (padding counted, as TorchTitan's tps does) is reported. On CUDA it
also prints MFU against the device's dense bf16 peak.
Writes benchmarks/results/train_throughput.json.
Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOML = REPO / "src" / "molgen3D" / "config" / "pretrain" / "cpu_tiny.toml"


def overrides_for(args, tokenizer_dir: Path, work: Path, run_name: str) -> list[str]:
    """CLI overrides that turn the TOML into a bare timing run (no checkpoints, validation or TB)."""
    return [
        "--training.steps",
        str(args.steps),
        "--training.dataset_path",
        args.data,
        "--validation.dataset_path",
        args.valid_data,
        "--molgen_run.tokenizer_tag",
        str(tokenizer_dir),
        "--molgen_run.run_name",
        run_name,
        "--molgen_run.logs_root",
        str(work / "outputs"),
        "--job.dump_folder",
        str(work / "ckpts"),
        "--model.flavor",
        args.flavor,
        "--wsds_scheduler.checkpoints",
        str(args.steps),
        "--wsds_scheduler.warmup_steps",
        str(max(1, args.steps // 5)),
        "--lr_scheduler.warmup_steps",
        str(max(1, args.steps // 5)),
        "--checkpoint.no-enable",
        "--validation.no-enable",
        "--metrics.no-enable-tensorboard",
        "--metrics.no-enable-wandb",
    ]


def time_ours(args, overrides: list[str]) -> list[float]:
    """Per-step seconds of the TorchTitan Trainer (each `train_step` fetches its batch)."""
    from torchtitan.train import Trainer

    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.torchtitan_runner import run_pretraining

    patches.install()  # the patches check TorchTitan's own train_step: before the timing wrapper below
    times: list[float] = []
    original = Trainer.train_step

    def timed(self, data_iterator):
        start = time.perf_counter()
        out = original(self, data_iterator)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        return out

    Trainer.train_step = timed
    try:
        run_pretraining(args.toml, overrides=overrides)
    finally:
        Trainer.train_step = original
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return times


def time_plain(args, overrides: list[str]) -> tuple[list[float], int]:
    """Per-step seconds of a bare loop over the same model, batches, optimizer and schedule."""
    from torchtitan.models.qwen3.model.model import Qwen3Model

    from molgen3D.training.pretraining.config.finalize import resolved
    from molgen3D.training.pretraining.config.loading import load_job_config
    from molgen3D.training.pretraining.torchtitan_model.data import build_molgen_dataloader
    from molgen3D.training.pretraining.torchtitan_runner import final_model_args

    job = load_job_config(args.toml, overrides)
    model_args = final_model_args(job)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(job.training.seed)
    with torch.device(device):
        model = Qwen3Model(model_args)
    with torch.no_grad():
        model.init_weights(buffer_device=device)
    model.train()
    opt_cfg, wsds = job.optimizer, resolved(job).wsds
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=opt_cfg.lr,
        betas=(opt_cfg.beta1, opt_cfg.beta2),
        eps=opt_cfg.eps,
        weight_decay=opt_cfg.weight_decay,
        foreach=opt_cfg.implementation == "foreach",
        fused=opt_cfg.implementation == "fused",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: wsds.lr(s) / opt_cfg.lr)
    loader = build_molgen_dataloader(1, 0, None, job)
    batches = iter(loader)
    bf16 = device.type == "cuda" and job.training.mixed_precision_param == "bfloat16"
    params = list(model.parameters())
    times = []
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        inputs, labels = next(batches)
        tokens, labels = inputs["input"].to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(tokens)
        valid = (labels != -100).sum()
        loss = (
            F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / valid
        )
        del logits
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, job.training.max_norm, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step % job.metrics.log_freq == 0:
            loss.item()  # the trainer syncs for its log line at the same steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, job.training.local_batch_size * job.training.seq_len


def mfu(tokens_per_s: float, job_overrides: list[str], toml: Path) -> float | None:
    """Model FLOPs utilisation against the dense bf16 peak, or None on a CPU."""
    if not torch.cuda.is_available():
        return None
    from torchtitan.models.qwen3.model.model import Qwen3Model

    from molgen3D.training.pretraining.config.loading import load_job_config
    from torchtitan.tools.utils import get_peak_flops

    from molgen3D.training.pretraining.flops import model_flops_per_token
    from molgen3D.training.pretraining.torchtitan_runner import final_model_args

    job = load_job_config(toml, job_overrides)
    model_args = final_model_args(job)
    with torch.device("meta"):
        model = Qwen3Model(model_args)
    _, flops_per_token = model_flops_per_token(model_args, model, job.training.seq_len)
    return tokens_per_s * flops_per_token / get_peak_flops(torch.cuda.get_device_name())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toml", type=Path, default=DEFAULT_TOML)
    parser.add_argument("--flavor", default="tiny")
    parser.add_argument("--tokenizer", default="tokenizers:molgen_compact")
    parser.add_argument("--data", default="data:fixture_train")
    parser.add_argument("--valid-data", default="data:fixture_valid")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4, help="first steps of each run left out of the timing")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")

    ours_tps, plain_tps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from molgen3D.tokenization.build import tokenizer_dir_or_build

        tokenizer_dir = tokenizer_dir_or_build(args.tokenizer, work / "tokenizers")
        tokens_per_step = None
        for rep in range(args.repeats):
            overrides = overrides_for(args, tokenizer_dir, work, f"bench-{rep}")
            plain_times, tokens_per_step = time_plain(args, overrides)
            plain_tps.append(tokens_per_step / statistics.mean(plain_times[args.warmup :]))
            ours_times = time_ours(args, overrides)
            if len(ours_times) != args.steps:
                raise RuntimeError(f"the Trainer ran {len(ours_times)} steps, expected {args.steps}")
            ours_tps.append(tokens_per_step / statistics.mean(ours_times[args.warmup :]))
            print(
                f"repeat {rep + 1}/{args.repeats}: ours {ours_tps[-1]:,.0f} tok/s, plain {plain_tps[-1]:,.0f} tok/s",
                file=sys.stderr,
            )
        ours, plain = statistics.median(ours_tps), statistics.median(plain_tps)
        mfu_ours = mfu(ours, overrides, args.toml)
        mfu_plain = mfu(plain, overrides, args.toml)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    result = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "toml": str(args.toml.relative_to(REPO) if args.toml.is_relative_to(REPO) else args.toml),
        "flavor": args.flavor,
        "tokens_per_step": tokens_per_step,
        "steps": args.steps,
        "timed_steps_per_run": args.steps - args.warmup,
        "repeats": args.repeats,
        "ours_tokens_per_s": round(ours, 1),
        "plain_tokens_per_s": round(plain, 1),
        "ours_over_plain": round(ours / plain, 3),
        "ours_runs": [round(v, 1) for v in ours_tps],
        "plain_runs": [round(v, 1) for v in plain_tps],
        "mfu_ours": mfu_ours,
        "mfu_plain": mfu_plain,
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"{'':24}{'tokens/s':>12}{'MFU (dense bf16)':>20}")
    for name, tps, m in (("ours (TorchTitan)", ours, mfu_ours), ("plain PyTorch loop", plain, mfu_plain)):
        print(f"{name:24}{tps:>12,.0f}{(f'{100 * m:.1f}%' if m is not None else 'n/a (CPU)'):>20}")
    print(
        f"ours / plain = {ours / plain:.3f}   ({device}, {tokens_per_step} tokens/step, "
        f"load avg {result['load_average_1min']:.1f})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The first check on a GPU machine: does the real run start, how fast is it, does it learn.

On CUDA: the 0.6B flavor with qwen3_06b.toml (from scratch unless --init-mode hf_pretrain and
local weights) for --steps steps, once on one GPU and once on all local GPUs (torchrun
--standalone), no checkpoints or validation. Every run is sharded with FSDP as the real run is:
TorchTitan applies no FSDP at world size 1 (dp_shard = 1 has no mesh; bf16 would come from
autocast over fp32 weights), so a one-rank run wraps the model in FSDP2 over a one-rank mesh
(`one_rank_fsdp`). The data is the embedded default (RDKit's drug-like molecules, --molecules of
them, prepared once into the cache), enough units that no step repeats one: a falling loss is
learning, not memorising the 153-line test fixture. On a CPU: the tiny flavor with cpu_tiny.toml
and the fixture in this process, so the script itself is tested on machines without a GPU.
Per run it prints tokens/s per GPU, MFU (FLOPs from training/pretraining/flops.py: LM head
included, full-T^2 attention, against the dense bf16 peak), peak memory, and whether the loss
falls (mean of the last 10 steps below the first 10). Target: >= 40% MFU for 0.6B on one
H100/H200 (docs/GPU.md). Writes benchmarks/results/gpu_smoke.json.
Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_smoke.py [--steps 50] [--data embedded | PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "src" / "molgen3D" / "config" / "pretrain"
WINDOW = 10
EMBEDDED = "embedded"


def overrides_for(args, tokenizer_dir: Path, work: Path, run_name: str) -> list[str]:
    """A bare timing run of the TOML: its model, batch, compile and memory settings; no saves or evaluation."""
    steps = str(args.steps)
    # From scratch no HF weights are read: do not depend on (or download) a snapshot of the base model.
    scratch = args.init_mode == "scratch"
    assets = ["--model.hf_assets_path", "", "--molgen_run.base_model_tag", ""] if scratch else []
    return [
        *assets,
        "--training.steps",
        steps,
        "--training.dataset_path",
        args.data,
        "--validation.dataset_path",
        args.valid_data,
        "--molgen_run.init_mode",
        args.init_mode,
        "--molgen_run.tokenizer_tag",
        str(tokenizer_dir),
        # qwen3_06b.toml states data and tokenizer twice; both statements must name the same place
        "--molgen_data.train_path_key",
        args.data,
        "--molgen_data.valid_path_key",
        args.valid_data,
        "--molgen_data.tokenizer_key",
        str(tokenizer_dir),
        # no gradient accumulation: tokens/s per GPU is the figure, and 50 steps stay short on one GPU
        "--training.global_batch_size",
        "-1",
        "--molgen_run.run_name",
        run_name,
        "--molgen_run.logs_root",
        str(work / "outputs"),
        "--job.dump_folder",
        str(work / "ckpts"),
        "--model.flavor",
        args.flavor,
        "--wsds_scheduler.checkpoints",
        steps,
        "--wsds_scheduler.warmup_steps",
        str(max(1, args.steps // 10)),
        "--lr_scheduler.warmup_steps",
        str(max(1, args.steps // 10)),
        "--checkpoint.no-enable",
        "--validation.no-enable",
        "--metrics.no-enable-tensorboard",
        "--metrics.no-enable-wandb",
    ]


def loss_falls(losses: list[float]) -> bool:
    """Mean of the last WINDOW losses below the mean of the first WINDOW (halves when shorter)."""
    window = min(WINDOW, len(losses) // 2)
    return window > 0 and statistics.mean(losses[-window:]) < statistics.mean(losses[:window])


def summarize(
    step_times: list[float],
    losses: list[float],
    tokens_per_gpu_step: int,
    flops_per_token: float,
    peak_flops: float | None,
    peak_memory_gib: float,
    warmup: int,
    world: int,
) -> dict:
    """Figures of one run (pure: tested on made-up numbers)."""
    timed = step_times[warmup:] or step_times
    tps = tokens_per_gpu_step / statistics.mean(timed)
    return {
        "gpus": world,
        "steps": len(step_times),
        "timed_steps": len(timed),
        "tokens_per_s_per_gpu": round(tps, 1),
        "flops_per_token": flops_per_token,
        "mfu_percent": round(100 * flops_per_token * tps / peak_flops, 2) if peak_flops else None,
        "peak_memory_gib": round(peak_memory_gib, 2),
        "loss_first": round(statistics.mean(losses[:WINDOW]), 4) if losses else None,
        "loss_last": round(statistics.mean(losses[-WINDOW:]), 4) if losses else None,
        "loss_falls": loss_falls(losses),
    }


def prepare_device(env=os.environ) -> int | None:
    """Set this rank's GPU (LOCAL_RANK) before anything touches CUDA, then reset its peak-memory counter.

    Resetting first would open a context on cuda:0 in every rank of a multi-GPU launch.
    """
    if not torch.cuda.is_available():
        return None
    index = int(env.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    torch.cuda.reset_peak_memory_stats(index)
    return index


@contextlib.contextmanager
def one_rank_fsdp(world_size: int):
    """At world size 1, wrap the model in FSDP2 over a one-rank mesh and leave autocast off, as the FSDP run does."""
    if world_size != 1:
        yield
        return
    import torchtitan.distributed.utils as dist_utils
    from torch.distributed.device_mesh import init_device_mesh
    from torchtitan.config import TORCH_DTYPE_MAP
    from torchtitan.protocols.train_spec import get_train_spec

    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.config.custom_job_config import TRAIN_SPEC_NAME
    from molgen3D.training.pretraining.torchtitan_model.parallelize import apply_fsdp_tied, uses_gloo

    spec = get_train_spec(TRAIN_SPEC_NAME)
    original_fn, original_amp = spec.parallelize_fn, dist_utils.maybe_enable_amp
    wrapped: list[bool] = []

    def parallelize(model, parallel_dims, job_config):
        model = original_fn(model, parallel_dims, job_config)
        if not parallel_dims.fsdp_enabled and parallel_dims.world_size == 1:
            training = job_config.training
            cpu = patches.is_cpu_run()
            apply_fsdp_tied(
                model,
                init_device_mesh("cpu" if cpu else "cuda", (1,), mesh_dim_names=("fsdp",)),
                param_dtype=torch.float32 if cpu else TORCH_DTYPE_MAP[training.mixed_precision_param],
                reduce_dtype=TORCH_DTYPE_MAP[training.mixed_precision_reduce],
                reshard_after_forward_policy=job_config.parallelism.fsdp_reshard_after_forward,
                force_sum_reduction=uses_gloo(),
            )
            wrapped.append(True)
        return model

    def maybe_enable_amp(parallel_dims, mixed_precision_param, device_type):
        if wrapped:  # FSDP's mixed precision computes in bf16; autocast on top is not what the real run does
            return contextlib.nullcontext()
        return original_amp(parallel_dims, mixed_precision_param, device_type)

    spec.parallelize_fn, dist_utils.maybe_enable_amp = parallelize, maybe_enable_amp
    try:
        yield wrapped
    finally:
        spec.parallelize_fn, dist_utils.maybe_enable_amp = original_fn, original_amp


def run_here(args, overrides: list[str]) -> dict:
    """Train in this process (one rank of a torchrun launch, or the CPU run); rank 0's figures."""
    import torch.distributed as dist
    from torchtitan.models.qwen3 import Qwen3Model
    from torchtitan.train import Trainer

    from molgen3D.training.pretraining import flops
    from molgen3D.training.pretraining.config.loading import load_job_config
    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.torchtitan_runner import final_model_args, run_pretraining

    # The patches check TorchTitan's own train_step; install them before the timing wrappers below.
    patches.install()
    times: list[float] = []
    losses: list[float] = []
    tokens: list[int] = []
    original_step, original_fb = Trainer.train_step, Trainer.forward_backward_step
    micro: list[torch.Tensor] = []

    def forward_backward(self, **kwargs):
        loss = original_fb(self, **kwargs)
        micro.append(loss.detach())
        return loss

    def train_step(self, data_iterator):
        micro.clear()
        start = time.perf_counter()
        out = original_step(self, data_iterator)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        # Each micro-batch returns its local loss sum / the GLOBAL valid tokens: summed over the step
        # and scaled by the world size it is about the mean loss (rank 0's data only).
        world = dist.get_world_size() if dist.is_initialized() else 1
        losses.append(float(torch.stack(micro).sum().float()) * world)
        t = self.job_config.training
        tokens.append(t.local_batch_size * t.seq_len * self.gradient_accumulation_steps)
        return out

    Trainer.train_step, Trainer.forward_backward_step = train_step, forward_backward
    prepare_device()
    try:
        with one_rank_fsdp(int(os.environ.get("WORLD_SIZE", "1"))) as wrapped:
            run_pretraining(args.toml, overrides=overrides)
    finally:
        Trainer.train_step, Trainer.forward_backward_step = original_step, original_fb
        world = dist.get_world_size() if dist.is_initialized() else 1
        if dist.is_initialized():
            dist.destroy_process_group()

    job = load_job_config(args.toml, overrides)
    model_args = final_model_args(job)
    with torch.device("meta"):
        model = Qwen3Model(model_args)
    _, per_token = flops.model_flops_per_token(model_args, model, job.training.seq_len)
    if torch.cuda.is_available():
        from torchtitan.tools.utils import get_peak_flops

        peak = get_peak_flops(torch.cuda.get_device_name())
        memory = torch.cuda.max_memory_reserved() / 2**30
    else:
        import resource

        peak, memory = None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    figures = summarize(times, losses, tokens[-1] if tokens else 0, per_token, peak, memory, args.warmup, world)
    return {**figures, "fsdp": world > 1 or bool(wrapped)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toml", type=Path, default=PRETRAIN / ("qwen3_06b.toml" if cuda else "cpu_tiny.toml"))
    parser.add_argument("--flavor", default="0.6B" if cuda else "tiny")
    parser.add_argument("--tokenizer", default="tokenizers:qwen3_0.6b_custom" if cuda else "tokenizers:molgen_compact")
    parser.add_argument(
        "--data",
        default=EMBEDDED if cuda else "data:fixture_train",
        help=f'training data; "{EMBEDDED}": --molecules of RDKit\'s drug-like molecules, prepared once into the cache',
    )
    parser.add_argument("--valid-data", default="data:fixture_valid")
    parser.add_argument("--molecules", type=int, default=1000, help=f"molecules of --data {EMBEDDED} (4 conformers)")
    parser.add_argument("--init-mode", default="scratch", choices=("scratch", "hf_pretrain"))
    parser.add_argument("--steps", type=int, default=50 if cuda else 20)
    parser.add_argument("--warmup", type=int, default=10 if cuda else 3, help="first steps left out of the timing")
    parser.add_argument("--gpu-counts", default="1,all", help='comma list of GPU counts, "all" = every local GPU')
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_smoke.json")
    parser.add_argument("--worker-result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    return args


def embedded_data(molecules: int) -> tuple[str, str]:
    """(train, valid) folders of the embedded default with `molecules` molecules, prepared once into the cache."""
    from molgen3D.datasets.prepare import prepare_embedded_default
    from molgen3D.files import cache_root

    root = prepare_embedded_default(
        cache_root() / "gpu_smoke" / f"embedded-{molecules}", max_molecules=molecules, workers=os.cpu_count() or 1
    )
    return str(root / "train"), str(root / "valid")


def gpu_counts(spec: str, available: int) -> list[int]:
    counts = []
    for item in spec.split(","):
        n = available if item.strip() == "all" else int(item)
        if not 1 <= n <= available:
            raise SystemExit(f"--gpu-counts: {item} GPUs asked, {available} visible")
        if n not in counts:
            counts.append(n)
    return counts


def launch_workers(args, n: int, work: Path, tokenizer_dir: Path) -> dict:
    """One torchrun --standalone launch of this script on `n` local GPUs; rank 0 writes the figures."""
    result = work / f"result-{n}.json"
    forwarded = [
        "--toml",
        str(args.toml),
        "--flavor",
        args.flavor,
        "--data",
        args.data,
        "--valid-data",
        args.valid_data,
        "--init-mode",
        args.init_mode,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n}",
        __file__,
        *forwarded,
        "--worker-result",
        str(result),
        "--work",
        str(work / f"gpus-{n}"),
        "--tokenizer-dir",
        str(tokenizer_dir),
    ]
    env = {**os.environ, "PYTORCH_ALLOC_CONF": os.environ.get("PYTORCH_ALLOC_CONF", "expandable_segments:True")}
    print("+ " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, env=env)
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    if args.worker_result is not None:  # one rank of launch_workers
        figures = run_here(args, overrides_for(args, args.tokenizer_dir, args.work, "gpu-smoke"))
        if int(os.environ.get("RANK", "0")) == 0:
            args.worker_result.write_text(json.dumps(figures) + "\n")
        return 0

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from molgen3D.tokenization.build import tokenizer_dir_or_build

        tokenizer_dir = tokenizer_dir_or_build(args.tokenizer, work / "tokenizers")
        if args.data == EMBEDDED:
            args.data, args.valid_data = embedded_data(args.molecules)
        if torch.cuda.is_available():
            for n in gpu_counts(args.gpu_counts, torch.cuda.device_count()):
                runs.append(launch_workers(args, n, work, tokenizer_dir))
            device = torch.cuda.get_device_name()
        else:
            runs.append(run_here(args, overrides_for(args, tokenizer_dir, work, "cpu-smoke")))
            device = f"cpu ({torch.get_num_threads()} threads)"

    print(f"{device}, {args.flavor}, {args.steps} steps ({args.warmup} untimed)")
    print(f"{'GPUs':>5}{'tokens/s/GPU':>14}{'MFU':>9}{'peak GiB':>10}  loss (first -> last {WINDOW} steps)")
    for r in runs:
        mfu_text = f"{r['mfu_percent']:.1f}%" if r["mfu_percent"] is not None else "n/a"
        loss_text = f"{r['loss_first']} -> {r['loss_last']}" + (" ok" if r["loss_falls"] else " FLAT")
        figures = f"{r['gpus']:>5}{r['tokens_per_s_per_gpu']:>14,.0f}{mfu_text:>9}{r['peak_memory_gib']:>10.1f}"
        print(f"{figures}  {loss_text}")
    result = {
        "device": device,
        "torch": torch.__version__,
        "flavor": args.flavor,
        "toml": args.toml.name,
        "data": args.data,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(r["loss_falls"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel sampling: one process per GPU (or per CPU worker), batches sharded, results in molecule order.

The parent plans the batches once (`sampling.plan_jobs`: prompts grouped by length), so a
batch holds the same samples whatever the number of workers; every sample draws from its own
generator seeded by (seed, molecule, sample index). Workers take batches from a shared queue
and the parent puts the results back in batch order, so the samples of a seed do not depend
on the worker count (nor on which worker ran which batch).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from molgen3D.generation.decode_loops import run_with_cache
from molgen3D.generation.sampling import Job, SamplingConfig, assemble, plan_jobs, run_batches
from molgen3D.scoring.outcome import SampleOutcome
from molgen3D.generation.token_sampler import SequenceResult

_STATE: dict = {}


def worker_devices(device, workers: int) -> list[str]:
    """The device of each worker: CUDA workers take GPUs round-robin, CPU workers all use the CPU."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return ["cpu"] * workers
    if device.index is not None and workers == 1:
        return [str(device)]
    count = torch.cuda.device_count()
    return [f"cuda:{k % count}" for k in range(workers)]


def _init_worker(
    model_dir: str,
    tokenizer: str | None,
    smiles: list[str],
    cfg: SamplingConfig,
    ranks,
    devices: list[str],
    dtype: str,
    threads: int,
) -> None:
    import torch

    from molgen3D.generation.model_io import load_model

    torch.set_num_threads(threads)
    rank = ranks.get()
    model, tok, _ = load_model(model_dir, tokenizer, device=devices[rank], dtype=dtype)
    _STATE.update(model=model, tokenizer=tok, smiles=smiles, cfg=cfg)


def _run_batch(batch: list[Job]) -> list[SequenceResult]:
    model = _STATE["model"]
    runner = functools.partial(run_with_cache, model)
    return run_batches(runner, _STATE["tokenizer"], _STATE["smiles"], [batch], _STATE["cfg"], device=model.device)[0]


def sample_parallel(
    model_dir: str | Path,
    tokenizer_arg: str | None,
    smiles: Sequence[str],
    counts: Sequence[int],
    cfg: SamplingConfig,
    *,
    workers: int = 1,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    progress: bool = False,
    loaded=None,
) -> tuple[list[list[SampleOutcome]], float]:
    """Samples of every molecule (as `sample_molecules` returns them) and the wall time, over `workers` processes.

    With one worker the model runs in this process (`loaded` = an already loaded (model,
    tokenizer) pair is reused). Workers are spawned, so scripts need the `__main__` guard.
    """
    from molgen3D.generation.model_io import load_model, model_context, resolve_device

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    start = time.perf_counter()
    target = resolve_device(device)
    if workers == 1:
        model, tokenizer = (
            loaded if loaded is not None else load_model(model_dir, tokenizer_arg, device=str(target), dtype=dtype)[:2]
        )
        batches, failed = plan_jobs(tokenizer, smiles, counts, cfg, max_context=model_context(model))
        results = run_batches(
            functools.partial(run_with_cache, model),
            tokenizer,
            smiles,
            batches,
            cfg,
            progress=progress,
            device=model.device,
        )
        return assemble(tokenizer, smiles, batches, results, failed, cfg.positions), time.perf_counter() - start

    from transformers import AutoConfig

    from molgen3D.generation.model_io import model_directory
    from molgen3D.tokenization.load import load_tokenizer

    directory = model_directory(model_dir)
    tokenizer = load_tokenizer(tokenizer_arg if tokenizer_arg is not None else directory)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    context = getattr(config, "max_position_embeddings", None)
    batches, failed = plan_jobs(tokenizer, smiles, counts, cfg, max_context=context)
    ctx = mp.get_context("spawn")
    ranks = ctx.Queue()
    for rank in range(workers):
        ranks.put(rank)
    devices = worker_devices(target, workers)
    initargs = (str(directory), tokenizer_arg, list(smiles), cfg, ranks, devices, dtype, threads or 1)
    results = []
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        bar = tqdm(
            total=sum(map(len, batches)), desc=f"sampling ({workers} workers)", unit="sample", disable=not progress
        )
        for batch, res in zip(batches, pool.imap(_run_batch, batches, chunksize=1)):
            results.append(res)
            bar.update(len(batch))
        bar.close()
    return assemble(tokenizer, smiles, batches, results, failed, cfg.positions), time.perf_counter() - start

"""Data-parallel sampling: one process per GPU (or per CPU worker), batches sharded, results in molecule order.

The parent plans the batches once (`sampling.plan_jobs`: prompts grouped by length), so a
batch holds the same samples whatever the number of workers; every sample draws from its own
generator seeded by (seed, molecule, sample index). Workers take batches from a shared queue
and the parent puts the results back in batch order, so the samples of a seed do not depend
on the worker count (nor on which worker ran which batch).
"""

from __future__ import annotations

import functools
from collections import Counter
import multiprocessing as mp
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

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
    _STATE.update(model=model, tokenizer=tok, cfg=cfg)


def _run_batch(work: tuple[list[str], list[Job]]) -> tuple[list[SequenceResult], dict]:
    smiles, batch = work
    model = _STATE["model"]
    runner = functools.partial(run_with_cache, model)
    stats: dict = {}
    results = run_batches(runner, _STATE["tokenizer"], smiles, [batch], _STATE["cfg"], device=model.device, stats=stats)
    return results[0], stats


class PoolSettings(Protocol):
    """What a command's config (`GenerateConfig`, `EvaluateConfig`) holds for its sampler pool."""

    tokenizer: str | None
    workers: int
    device: str
    dtype: str
    threads: int | None


class SamplerPool:
    """The model loaded once per worker process for the whole run; `sample` may be called for chunk after chunk.

    With one worker the model runs in this process (`loaded` = an already loaded (model,
    tokenizer) pair is reused). More workers are spawned processes, so scripts need the
    `__main__` guard; `close` (or leaving the `with` block) ends them.
    """

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer_arg: str | None,
        cfg: SamplingConfig,
        *,
        workers: int = 1,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        loaded=None,
    ):
        from molgen3D.generation.model_io import load_model, model_context, model_directory, resolve_device

        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.cfg, self.workers, self._pool = cfg, workers, None
        self._steps: Counter = Counter()
        self._molecules: dict[str, dict[str, int]] = {}
        target = resolve_device(device)
        if workers == 1:
            self.model, self.tokenizer = (
                loaded
                if loaded is not None
                else load_model(model_dir, tokenizer_arg, device=str(target), dtype=dtype)[:2]
            )
            self.context = model_context(self.model)
            return
        from transformers import AutoConfig

        from molgen3D.tokenization.load import load_tokenizer

        directory = model_directory(model_dir)
        self.model = None
        self.tokenizer = load_tokenizer(tokenizer_arg if tokenizer_arg is not None else directory)
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        self.context = getattr(config, "max_position_embeddings", None)
        ctx = mp.get_context("spawn")
        ranks = ctx.Queue()
        for rank in range(workers):
            ranks.put(rank)
        devices = worker_devices(target, workers)
        initargs = (str(directory), tokenizer_arg, cfg, ranks, devices, dtype, threads or 1)
        self._pool = ctx.Pool(workers, initializer=_init_worker, initargs=initargs)

    @classmethod
    def from_config(cls, run: PoolSettings, model_dir: str | Path, cfg: SamplingConfig) -> "SamplerPool":
        """The pool a command's options ask for (--tokenizer, --workers, --device, --dtype, --threads)."""
        return cls(
            model_dir, run.tokenizer, cfg, workers=run.workers, device=run.device, dtype=run.dtype, threads=run.threads
        )

    def sample(
        self, smiles: Sequence[str], counts: Sequence[int], *, progress: bool = False
    ) -> tuple[list[list[SampleOutcome]], float]:
        """Samples of every molecule (as `sample_molecules` returns them) and the wall time."""
        start = time.perf_counter()
        smiles = list(smiles)
        batches, failed = plan_jobs(self.tokenizer, smiles, counts, self.cfg, max_context=self.context)
        if self._pool is None:
            runner = functools.partial(run_with_cache, self.model)
            stats: dict = {}
            results = run_batches(
                runner,
                self.tokenizer,
                smiles,
                batches,
                self.cfg,
                progress=progress,
                device=self.model.device,
                stats=stats,
            )
            self._add(stats)
        else:
            results = []
            bar = tqdm(
                total=sum(map(len, batches)),
                desc=f"sampling ({self.workers} workers)",
                unit="sample",
                disable=not progress,
            )
            work = [(smiles, batch) for batch in batches]
            for batch, (res, stats) in zip(batches, self._pool.imap(_run_batch, work, chunksize=1)):
                results.append(res)
                self._add(stats)
                bar.update(len(batch))
            bar.close()
        return assemble(
            self.tokenizer, smiles, batches, results, failed, self.cfg.positions
        ), time.perf_counter() - start

    def _add(self, stats: dict) -> None:
        """Take one `run_batches` call's counts: steps add up, a molecule's own counts (rules, bounded atoms) are
        kept once however many batches or workers it was spread over."""
        per = stats.pop("per_molecule", {})
        self._molecules.update(per)
        named = {name for counts in per.values() for name in counts}
        self._steps.update({k: v for k, v in stats.items() if k not in named})

    @property
    def stats(self) -> dict:
        """The sampler's counts over every `sample` call (canonical, stereo and geometry fallbacks, guarded steps,
        and the molecules' rules and bounded atoms)."""
        out = dict(self._steps)
        for counts in self._molecules.values():
            for name, value in counts.items():
                out[name] = out.get(name, 0) + value
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "SamplerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    """One call's samples over `workers` processes (a `SamplerPool` for this call alone)."""
    with SamplerPool(
        model_dir, tokenizer_arg, cfg, workers=workers, device=device, dtype=dtype, threads=threads, loaded=loaded
    ) as pool:
        return pool.sample(smiles, counts, progress=progress)

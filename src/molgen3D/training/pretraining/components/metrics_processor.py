"""Training metrics for `molgen_qwen3`: TorchTitan's set plus lr and the packed loader's counters.

Every `metrics.log_freq` steps the runtime log, TensorBoard and WandB get: loss,
global_max_loss, grad_norm, lr, tokens/s and units/s (per device, like TorchTitan's tps),
padding fraction of the window, skipped and truncated units (cumulative, all ranks), memory,
and MFU against the device's DENSE bf16 peak. FLOPs/token count the tied LM head (flops.py);
with document masking the attention part follows the window's real unit lengths.
TorchTitan 0.2.2's `get_peak_flops` table is dense (H100 SXM 989e12, not the 1979e12 sparse
figure an earlier MolGen used); on a CPU there is no meaningful peak, so no MFU ("n/a").

The loader counters are cumulative and restored on resume, so the processor measures windows
between snapshots. TorchTitan builds the processor through `TrainSpec.build_metrics_processor_fn`,
which is not given the train loader; `MolGenTrainer` hands the Trainer's `dataloader` over with
`attach_loader` once both exist. The loader tells the processor when it starts iterating (right
after the checkpoint load), which starts the first window.

`log` replaces TorchTitan's rather than extending it through `extra_metrics`: TorchTitan's
console line is fixed and its MFU divides by the peak, which is NaN on a CPU (no MFU there).
Every logged training loss is kept in `losses` for the runner's summary.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Mapping

import torch

import torchtitan.components.metrics as titan_metrics
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.config import JobConfig
from torchtitan.distributed import ParallelDims
from torchtitan.tools import utils
from torchtitan.tools.logging import logger

# Loader counters (cumulative, see dataloader.summarize) measured per log window ...
WINDOW_COUNTERS = ("units_packed", "tokens", "padding_tokens")
# ... and reported as running totals. Both are summed over data-parallel ranks.
TOTAL_COUNTERS = ("skipped_total", "truncated")


def usable_peak_flops(peak: float) -> float | None:
    """A usable peak FLOP/s, or None (the CPU layer in patches.py reports NaN: no MFU there)."""
    return peak if math.isfinite(peak) and peak > 0 else None


def counter_deltas(previous: Mapping[str, float], current: Mapping[str, float]) -> dict[str, float]:
    """How much each cumulative loader counter grew between two `metrics()` snapshots."""
    return {name: float(current.get(name, 0)) - float(previous.get(name, 0)) for name in WINDOW_COUNTERS}


def padding_fraction(tokens: float, padding_tokens: float) -> float:
    """Share of emitted positions that are padding (0 when nothing was emitted)."""
    emitted = tokens + padding_tokens
    return padding_tokens / emitted if emitted > 0 else 0.0


class RunFolderWandBLogger(titan_metrics.WandBLogger):
    """TorchTitan gives WandB its TensorBoard folder as `dir`, which beats $WANDB_DIR; the run
    layout keeps WandB files in $WANDB_DIR (`wandb/<run-name>`). The runner's `patches.install()` makes
    TorchTitan build it."""

    def __init__(self, log_dir: str, job_config: JobConfig, tag: str | None = None):
        super().__init__(os.environ.get("WANDB_DIR") or log_dir, job_config, tag)


class MolGenMetricsProcessor(MetricsProcessor):
    """TorchTitan's MetricsProcessor with lr, loader throughput/padding/skips, and honest MFU."""

    def __init__(self, job_config: JobConfig, parallel_dims: ParallelDims, tag: str | None = None):
        super().__init__(job_config, parallel_dims, tag)
        self.peak_flops = usable_peak_flops(self.gpu_peak_flops)
        self.loader_metrics: Callable[[], Mapping[str, float]] | None = None
        self._counters_at_window_start: dict[str, float] = {}
        self.losses: dict[int, float] = {}
        """Training loss of every logged step."""
        self.model_parts: list[Any] = []
        """The model parts (the Trainer sets them), whose unit-length counts make masked attention FLOPs exact."""

    def window_flops_per_token(self) -> tuple[float, float | None]:
        """FLOPs/token of this window, and the attention length used (None: the full seq_len).

        `num_flops_per_token` (set by the Trainer from the model args) counts attention over the
        full seq_len; a block-causal model reports sum(l^2)/sum(l) of the units it trained on.
        """
        attention_len = None
        for part in self.model_parts:
            pop = getattr(part, "pop_attention_len", None)
            attention_len = pop() if callable(pop) else None
        if attention_len is None or not self.model_parts:
            return float(self.num_flops_per_token), None
        from molgen3D.training.pretraining.flops import attention_flops_per_token

        args = self.model_parts[0].model_args
        seq_len = self.job_config.training.seq_len
        full = attention_flops_per_token(args.n_layers, args.n_heads, args.head_dim, seq_len)
        masked = attention_flops_per_token(args.n_layers, args.n_heads, args.head_dim, attention_len)
        return float(self.num_flops_per_token) - full + masked, attention_len

    def attach_loader(self, loader: Any) -> None:
        """Read unit/padding/skip counters from `loader.metrics()` (the packed train loader); a new
        window starts now and again whenever the loader starts iterating."""
        metrics = getattr(loader, "metrics", None)
        self.loader_metrics = metrics if callable(metrics) else None
        add_listener = getattr(loader, "add_iter_listener", None)
        if callable(add_listener):
            add_listener(self.start_window)
        self.start_window()

    def start_window(self) -> None:
        """Begin a measurement window now (after the checkpoint load: counters and clock)."""
        self._counters_at_window_start = dict(self.loader_metrics()) if self.loader_metrics else {}
        self.ntokens_since_last_log = 0
        self.data_loading_times.clear()
        self.time_last_log = time.perf_counter()

    def _loader_window(self) -> dict[str, float] | None:
        """This window's counter growth and the running totals, summed over data-parallel ranks.

        A collective when dp > 1: every rank calls `log` at the same steps.
        """
        if self.loader_metrics is None:
            return None
        current = dict(self.loader_metrics())
        delta = counter_deltas(self._counters_at_window_start, current)
        self._counters_at_window_start = current
        names = WINDOW_COUNTERS + TOTAL_COUNTERS
        values = [delta[n] for n in WINDOW_COUNTERS] + [float(current.get(n, 0)) for n in TOTAL_COUNTERS]
        if self.parallel_dims.dp_enabled:
            tensor = torch.tensor(values, dtype=torch.float64, device=torch.device(utils.device_type))
            torch.distributed.all_reduce(tensor, group=self.parallel_dims.get_mesh("batch").get_group())
            values = tensor.tolist()
        window = dict(zip(names, values))
        window["padding_fraction"] = padding_fraction(window["tokens"], window["padding_tokens"])
        return window

    def log(
        self,
        step: int,
        global_avg_loss: float,
        global_max_loss: float,
        grad_norm: float,
        extra_metrics: dict[str, Any] | None = None,
    ) -> None:
        assert self.num_flops_per_token > 0, "num_flops_per_token must be set"
        self.losses[int(step)] = float(global_avg_loss)
        extra = dict(extra_metrics or {})
        time_delta = max(time.perf_counter() - self.time_last_log, 1e-9)
        tps = self.ntokens_since_last_log / (time_delta * self.parallel_dims.non_data_parallel_size)
        flops_per_token, attention_len = self.window_flops_per_token()
        tflops = flops_per_token * tps / 1e12
        mfu = None if self.peak_flops is None else 100 * flops_per_token * tps / self.peak_flops
        data_time = sum(self.data_loading_times)
        n_loads = max(len(self.data_loading_times), 1)
        mem = self.device_memory_monitor.get_peak_stats()
        lr = extra.pop("lr", None)
        window = self._loader_window()

        metrics: dict[str, Any] = {
            "loss_metrics/global_avg_loss": global_avg_loss,
            "loss_metrics/global_max_loss": global_max_loss,
            "grad_norm": grad_norm,
            "throughput(tps)": tps,
            "tflops": tflops,
            "time_metrics/end_to_end(s)": time_delta / self.job_config.metrics.log_freq,
            "time_metrics/data_loading(s)": data_time / n_loads,
            "time_metrics/data_loading(%)": 100 * data_time / time_delta,
            "memory/max_active(GiB)": mem.max_active_gib,
            "memory/max_active(%)": mem.max_active_pct,
            "memory/max_reserved(GiB)": mem.max_reserved_gib,
            "memory/max_reserved(%)": mem.max_reserved_pct,
            "memory/num_alloc_retries": mem.num_alloc_retries,
            "memory/num_ooms": mem.num_ooms,
        }
        if mfu is not None:
            metrics["mfu(%)"] = mfu
        if attention_len is not None:
            metrics["attention_len_effective"] = attention_len
        if lr is not None:
            metrics["lr"] = lr
        if window is not None:
            world = max(self.parallel_dims.world_size, 1)
            metrics.update(
                {
                    "throughput(units/s)": window["units_packed"] / (time_delta * world),
                    "data/padding_fraction": window["padding_fraction"],
                    "data/skipped_units": window["skipped_total"],
                    "data/truncated_units": window["truncated"],
                }
            )
        metrics.update(extra)
        self.logger.log(metrics, step)

        c = self.color
        parts = [
            f"{c.red}step: {step:2}",
            f"{c.green}loss: {global_avg_loss:8.5f}",
            f"max_loss: {global_max_loss:8.5f}",
            f"{c.orange}grad_norm: {grad_norm:7.4f}",
            f"{c.yellow}lr: {lr:.3e}" if lr is not None else f"{c.yellow}lr: n/a",
            f"{c.turquoise}memory: {mem.max_reserved_gib:5.2f}GiB({mem.max_reserved_pct:.2f}%)",
            f"{c.blue}tps: {round(tps):,}",
        ]
        if window is not None:
            parts += [
                f"units/s: {metrics['throughput(units/s)']:.1f}",
                f"padding: {100 * window['padding_fraction']:.1f}%",
                f"skipped: {int(window['skipped_total'])}",
                f"truncated: {int(window['truncated'])}",
            ]
        parts += [
            f"{c.cyan}tflops: {tflops:,.3f}",
            f"{c.magenta}mfu: " + ("n/a" if mfu is None else f"{mfu:.2f}%") + c.reset,
        ]
        logger.info("  ".join(parts))

        self.ntokens_since_last_log = 0
        self.data_loading_times.clear()
        self.time_last_log = time.perf_counter()
        self.device_memory_monitor.reset_peak_stats()

    def log_validation(self, loss: float, step: int, extra_metrics: dict[str, Any] | None = None) -> None:
        """TorchTitan's validation log, plus the extra metrics on the console line.

        The next training window starts after validation. TorchTitan restarts only the clock and
        the token count; the loader counters and data-loading times restart too, so every figure
        of the next training log covers the same steps (else a validation step that is not a log
        step inflates units/s and data_loading(%)).
        """
        super().log_validation(loss=loss, step=step, extra_metrics=extra_metrics)
        if extra_metrics:
            logger.info(f"validate step: {step:2}  {_console_fields(extra_metrics)}")
        self.start_window()

    def log_sampling(self, step: int, metrics: dict[str, Any]) -> None:
        """Conformer-sampling metrics of a step without a validation loss; sampling time stays out of the
        training window."""
        self.logger.log(metrics, step)
        logger.info(f"validate step: {step:2}  {_console_fields(metrics)}")
        self.start_window()


def _console_fields(metrics: Mapping[str, Any]) -> str:
    """`name: value` pairs for a console line (the last path part of each name; floats to 4 digits)."""
    return "  ".join(
        f"{name.rpartition('/')[2]}: {value:.4g}" if isinstance(value, float) else f"{name.rpartition('/')[2]}: {value}"
        for name, value in metrics.items()
    )


def build_molgen_metrics_processor(
    job_config: JobConfig,
    parallel_dims: ParallelDims,
    model_args: Any = None,
    tag: str | None = None,
) -> MolGenMetricsProcessor:
    """TrainSpec.build_metrics_processor_fn."""
    del model_args
    return MolGenMetricsProcessor(job_config, parallel_dims, tag)

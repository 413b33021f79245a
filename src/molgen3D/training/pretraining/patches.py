"""Every change MolGen3D makes to TorchTitan 0.2.2's own modules, each guarded, in one place.

`install()` (called by the runner before it builds the Trainer; never on import) applies
the lasting ones:
- the CPU layer (`apply_cpu_layer`, only when there is no accelerator);
- `torchtitan.train.CheckpointManager` -> `MolGenCheckpointManager` (decay-end saves, complete
  HF folders, torn-step safety, tag-row re-init): the Trainer builds its checkpointer by that
  module-level name and TrainSpec has no hook for it;
- `torchtitan.components.metrics.WandBLogger` -> `RunFolderWandBLogger` (WandB files in
  $WANDB_DIR): `_build_metric_logger` builds it by that module-level name;
- `torchtitan.models.attention.VarlenAttentionWrapper.forward` -> `varlen_forward_with_gqa`:
  TorchTitan 0.2.2 never passes `enable_gqa`, and torch 2.13's `varlen_attn` refuses key/value
  with fewer heads than the query (Qwen3-0.6B: 16 and 8) before any kernel runs.
One is scoped to a single training step: `gradient_norm_check(check)` makes
`torchtitan.distributed.utils.clip_grad_norm_` (the Trainer calls it once per step between
backward and optimizer) hand the step's global gradient norm to `check`, and is undone when the
step ends; `MolGenTrainer.train_step` passes its non-finite loss guard. Reading the norm is one
scalar sync per step.
Each patch checks that its target is still TorchTitan's original (or already ours) and that the
code that uses it still looks the name up, and otherwise fails loudly naming the pinned version:
an upgrade that builds these objects another way must not silently drop our behaviour.
tests/training/test_torchtitan_contract.py lists every private member the project relies on.

The CPU layer: TorchTitan picks its device once, at import: `tools.utils.get_device_info` falls
back to "cuda" when no accelerator is found, and four modules copy `device_type` /
`device_module` into their own namespace with `from torchtitan.tools.utils import ...`:
`components.metrics`, `distributed.utils`, `distributed.parallel_dims`, `tools.profiling`.
`train` and `components.validate` read `utils.device_type` through the module at call time,
so patching `tools.utils` covers them. The layer rebinds those names to "cpu" and a small
stand-in device module, which also puts the process group on gloo (TorchTitan maps the
device type to its default backend). It also replaces:
- `distributed.utils.maybe_enable_amp`: bf16 autocast on a CPU without bf16 units is ~30x
  slower than fp32, so CPU runs compute in fp32 and say so once;
- `tools.utils.get_peak_flops`: its fallback is the A100 peak, meaningless on a CPU; NaN
  marks "no MFU" for the log line and for our metrics processor.
The FSDP fixes for gloo live in `torchtitan_model/parallelize.py` (they need the built model).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import platform
import resource
from types import SimpleNamespace
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch._utils import _get_available_device_type

from torchtitan.tools.logging import logger

CPU = "cpu"

# Every TorchTitan module that binds `device_type` and/or `device_module` at import time.
DEVICE_BINDINGS: dict[str, tuple[str, ...]] = {
    "torchtitan.tools.utils": ("device_type", "device_module"),
    "torchtitan.components.metrics": ("device_type", "device_module"),
    "torchtitan.distributed.utils": ("device_type", "device_module"),
    "torchtitan.distributed.parallel_dims": ("device_type",),
    "torchtitan.tools.profiling": ("device_module",),
}

_applied = False
_installed = False
_warned_amp = False
ORIGINALS: dict[str, object] = {}
"""TorchTitan's objects replaced here, by "module.name" (for tests and debugging)."""


def accelerator_available() -> bool:
    """True when torch sees CUDA (or any accelerator TorchTitan would pick itself)."""
    return torch.cuda.is_available() or _get_available_device_type() is not None


def is_cpu_run() -> bool:
    """True after `apply_cpu_layer()` switched TorchTitan to the CPU."""
    return _applied


def _unsupported(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError(
        "profiling.enable_memory_snapshot records the CUDA caching allocator; it has no CPU "
        "equivalent. Set [profiling] enable_memory_snapshot = false for CPU runs."
    )


def _total_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


class CpuDeviceModule:
    """The subset of `torch.cuda` TorchTitan calls, answered for the host CPU.

    Memory "peaks" are the process's peak resident set size (the allocator keeps no
    per-step peaks on CPU, so `reset_peak_memory_stats` cannot reset them).
    """

    memory = SimpleNamespace(_record_memory_history=_unsupported, _snapshot=_unsupported)

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def set_device(device: Any) -> None:
        del device

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def synchronize(device: Any = None) -> None:
        del device

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        del device

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        del device
        return f"CPU ({platform.processor() or platform.machine()})"

    @staticmethod
    def get_device_properties(device: Any = None) -> SimpleNamespace:
        del device
        return SimpleNamespace(total_memory=_total_memory_bytes() or 1, name=CpuDeviceModule.get_device_name())

    @staticmethod
    def memory_stats(device: Any = None) -> dict[str, int]:
        del device
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {"active_bytes.all.peak": peak_rss, "reserved_bytes.all.peak": peak_rss}


def cpu_peak_flops(device_name: str) -> float:
    """No meaningful bf16 peak on a CPU: NaN means "report no MFU"."""
    del device_name
    return math.nan


def cpu_maybe_enable_amp(
    parallel_dims: Any, mixed_precision_param: str, device_type: str
) -> contextlib.AbstractContextManager:
    """fp32 on CPU: no autocast; warn once when the config asked for bf16."""
    del parallel_dims, device_type
    global _warned_amp
    if mixed_precision_param != "float32" and not _warned_amp:
        logger.warning(
            f"training.mixed_precision_param = {mixed_precision_param!r} ignored on CPU: "
            "computing in float32 (bf16 autocast is ~30x slower on CPUs without bf16 units). "
            'Set it to "float32" in CPU configs to silence this warning.'
        )
        _warned_amp = True
    return contextlib.nullcontext()


PINNED = "torchtitan 0.2.2 (pinned in pyproject.toml)"


class TorchTitanPatchError(RuntimeError):
    """A patch target is not what TorchTitan 0.2.2 has there; the message names it and the pinned version."""


def _fail(what: str) -> TorchTitanPatchError:
    return TorchTitanPatchError(f"patches: {what}; MolGen3D patches {PINNED}, install that version")


def _replace(module_name: str, name: str, replacement: Any, is_original: Callable[[Any], bool]) -> None:
    """Rebind `module.name` to `replacement` if it is still TorchTitan's original (no-op if already ours)."""
    module = importlib.import_module(module_name)
    if not hasattr(module, name):
        raise _fail(f"{module_name} has no attribute {name!r}")
    current = getattr(module, name)
    if current is replacement:
        return
    if not is_original(current):
        raise _fail(f"{module_name}.{name} is {current!r}, not TorchTitan's original")
    ORIGINALS[f"{module_name}.{name}"] = current
    setattr(module, name, replacement)


def _defined_as(module_name: str, name: str) -> Callable[[Any], bool]:
    """A check that an object is the function or class `name` defined in `module_name`."""
    return lambda obj: getattr(obj, "__module__", None) == module_name and getattr(obj, "__qualname__", None) == name


def _require_lookup(function: Any, name: str, where: str) -> None:
    """`function` must read the global `name` at call time, or rebinding it would change nothing."""
    code = getattr(inspect.unwrap(function), "__code__", None)  # unwrap: Trainer.__init__ is wrapped by @record
    if name not in getattr(code, "co_names", ()):
        raise _fail(f"{where} no longer looks up {name!r} by name, so replacing it would be silently ignored")


def apply_cpu_layer() -> bool:
    """Switch TorchTitan to the CPU when no accelerator exists; returns True if it did.

    Idempotent; call it before `Trainer.__init__` picks the device (`install()` does).
    """
    global _applied
    if _applied:
        return True
    if accelerator_available():
        return False
    utils = importlib.import_module("torchtitan.tools.utils")
    originals = {name: getattr(utils, name, None) for name in ("device_type", "device_module")}
    device_module = CpuDeviceModule()
    for module_name, names in DEVICE_BINDINGS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if not hasattr(module, name):
                raise _fail(f"{module_name} has no attribute {name!r}")
            current, original = getattr(module, name), originals[name]
            if not (current == original if name == "device_type" else current is original):
                raise _fail(
                    f"{module_name}.{name} is {current!r}, not the device TorchTitan picked at import ({original!r})"
                )
    for module_name, names in DEVICE_BINDINGS.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, CPU if name == "device_type" else device_module)
    for module_name, name, replacement in (
        ("torchtitan.tools.utils", "get_peak_flops", cpu_peak_flops),
        ("torchtitan.distributed.utils", "maybe_enable_amp", cpu_maybe_enable_amp),
    ):
        _replace(module_name, name, replacement, _defined_as(module_name, name))
    _applied = True
    logger.info("No accelerator found: TorchTitan runs on the CPU (gloo process group, float32 compute, no MFU).")
    return True


def install_checkpoint_manager() -> None:
    """Make TorchTitan's Trainer build `MolGenCheckpointManager`."""
    import torchtitan.train
    from torchtitan.components.checkpoint import CheckpointManager

    from molgen3D.training.pretraining.components.checkpoint import MolGenCheckpointManager

    _require_lookup(torchtitan.train.Trainer.__init__, "CheckpointManager", "torchtitan.train.Trainer.__init__")
    _replace("torchtitan.train", "CheckpointManager", MolGenCheckpointManager, lambda obj: obj is CheckpointManager)


def install_wandb_folder() -> None:
    """Make TorchTitan's metric-logger factory build `RunFolderWandBLogger`."""
    import torchtitan.components.metrics as titan_metrics

    from molgen3D.training.pretraining.components.metrics_processor import RunFolderWandBLogger

    _require_lookup(
        titan_metrics._build_metric_logger, "WandBLogger", "torchtitan.components.metrics._build_metric_logger"
    )
    _replace(
        "torchtitan.components.metrics",
        "WandBLogger",
        RunFolderWandBLogger,
        _defined_as("torchtitan.components.metrics", "WandBLogger"),
    )


def check_gradient_norm_target() -> None:
    """The Trainer's train_step must still call `clip_grad_norm_` through its module, else the step's
    norm would silently stop reaching the non-finite loss guard."""
    import torchtitan.train

    _require_lookup(torchtitan.train.Trainer.train_step, "clip_grad_norm_", "torchtitan.train.Trainer.train_step")


@contextlib.contextmanager
def gradient_norm_check(check: Callable[[list[torch.Tensor], torch.Tensor], None]) -> Iterator[None]:
    """Within the block, TorchTitan's `clip_grad_norm_` is followed by `check(params, norm)` (one step's worth)."""
    module = importlib.import_module("torchtitan.distributed.utils")
    original = module.clip_grad_norm_
    if not _defined_as("torchtitan.distributed.utils", "clip_grad_norm_")(original):
        raise _fail(f"torchtitan.distributed.utils.clip_grad_norm_ is {original!r}, not TorchTitan's original")

    def clip_then_check(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
        norm = original(params, max_norm, *args, **kwargs)
        check(params, norm)
        return norm

    module.clip_grad_norm_ = clip_then_check
    try:
        yield
    finally:
        module.clip_grad_norm_ = original


VARLEN_FORWARD = "torchtitan.models.attention.VarlenAttentionWrapper.forward"


def varlen_forward_with_gqa(self, xq, xk, xv, attention_masks, scale=None):
    """TorchTitan 0.2.2's varlen forward, plus `enable_gqa` when key/value have fewer heads than the query."""
    from torchtitan.models.attention import VarlenAttentionWrapper

    del self
    # (bs, heads, seqlen, head_dim) -> (bs * seqlen, heads, head_dim), as TorchTitan packs them
    q, k, v = (t.transpose(1, 2).flatten(0, 1) for t in (xq, xk, xv))
    return VarlenAttentionWrapper._compiled_varlen_attn(
        q,
        k,
        v,
        attention_masks.cu_seq_q,
        attention_masks.cu_seq_k,
        attention_masks.max_q,
        attention_masks.max_k,
        scale=scale,
        window_size=(-1, 0),  # causal within each document
        enable_gqa=xq.shape[1] != xk.shape[1],
    )


def install_varlen_gqa() -> None:
    """Make TorchTitan's varlen attention wrapper pass `enable_gqa` (grouped-query attention)."""
    from torchtitan.models import attention

    wrapper = attention.VarlenAttentionWrapper
    current = wrapper.forward
    if current is varlen_forward_with_gqa:
        return
    if not _defined_as("torchtitan.models.attention", "VarlenAttentionWrapper.forward")(current):
        raise _fail(f"{VARLEN_FORWARD} is {current!r}, not TorchTitan's original")
    _require_lookup(current, "_compiled_varlen_attn", VARLEN_FORWARD)
    params = list(inspect.signature(current).parameters)
    if params != ["self", "xq", "xk", "xv", "attention_masks", "scale"]:
        raise _fail(f"{VARLEN_FORWARD} takes {params}, not (self, xq, xk, xv, attention_masks, scale)")
    ORIGINALS[VARLEN_FORWARD] = current
    wrapper.forward = varlen_forward_with_gqa


def install() -> None:
    """The lasting patches, and the check the per-step one relies on (once per process)."""
    global _installed
    if _installed:
        return
    apply_cpu_layer()
    install_checkpoint_manager()
    install_wandb_folder()
    install_varlen_gqa()
    check_gradient_norm_target()
    _installed = True

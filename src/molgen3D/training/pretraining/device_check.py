"""No silent CPU run for a GPU-sized model.

On a GPU node whose CUDA fails to initialise (driver mismatch, no device in the cgroup,
CUDA_VISIBLE_DEVICES pointing nowhere), `torch.cuda.is_available()` is just False and the CPU
layer would switch the 0.6B job to CPU/gloo/fp32 with one INFO line. Only the flavors made
for CPUs may do that silently; any other needs `[molgen_run] allow_cpu = true`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

CPU_FLAVORS = frozenset({"tiny", "small"})
OVERRIDE_KEY = "[molgen_run] allow_cpu"


class NoAcceleratorError(RuntimeError):
    """A GPU-sized flavor would run on the CPU; the message names the CUDA problem and the override."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Fix: {fix}")


def cuda_problem(env: Mapping[str, str] | None = None) -> str:
    """Why CUDA is unusable here, in words (what torch says when it tries, and the visible-devices setting)."""
    import torch

    env = os.environ if env is None else env
    reasons: list[str] = []
    if not torch.backends.cuda.is_built():
        reasons.append(f"this torch ({torch.__version__}) is built without CUDA")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.cuda.init()
        except Exception as exc:  # the exact driver/runtime message is the useful part
            reasons.append(f"torch.cuda.init() failed: {type(exc).__name__}: {str(exc).strip()}")
    reasons += [f"torch warned: {w.message}" for w in caught if "cuda" in str(w.message).lower()]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        reasons.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    if not reasons:
        reasons.append("torch.cuda.is_available() is False with no further message")
    return "; ".join(reasons)


FIX = (
    f"repair the node's CUDA (nvidia-smi, the driver, the allocation's GPUs), or set {OVERRIDE_KEY} = true "
    "(--molgen_run.allow_cpu) to run it on the CPU anyway (fp32, gloo, very slow)"
)


def cpu_fallback_problem(flavor: str, allow_cpu: bool, accelerator: bool, problem: str = "") -> str | None:
    """The error text when a non-CPU flavor is about to run on the CPU without the override, else None."""
    if accelerator or allow_cpu or flavor in CPU_FLAVORS:
        return None
    reason = problem or "CUDA unavailable"
    return f"[model] flavor = {flavor!r} is sized for GPUs, but no accelerator is usable: {reason}"


def check_device(flavor: str, allow_cpu: bool, accelerator: bool) -> None:
    """Raise `NoAcceleratorError` for a silent CPU run of a GPU flavor (asks torch why only then)."""
    if accelerator or allow_cpu or flavor in CPU_FLAVORS:
        return
    raise NoAcceleratorError(cpu_fallback_problem(flavor, allow_cpu, accelerator, cuda_problem()), FIX)

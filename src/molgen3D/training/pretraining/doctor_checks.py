"""The preflight checks of `molgen3d doctor`, one function each, on plain values (no probing here).

Each returns a `Check` (name, verdict, detail): "ok", "warn" (the run starts, but look), or
"BLOCKER" (the run would fail or mislead; doctor exits non-zero). `doctor.py` gathers the facts
(torch, srun, /sys/class/net, the loaded TOML, disk usage) and calls these.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from molgen3D.config.hub import HubRef
from molgen3D.training.pretraining.config.batch_geometry import BatchGeometryError, describe, resolve_batch_geometry
from molgen3D.training.pretraining.device_check import CPU_FLAVORS
from molgen3D.training.pretraining.document_masking import resolve_attention

OK, WARN, BLOCKER = "ok", "warn", "BLOCKER"
# A DCP step with optimizer state: fp32 weights + AdamW exp_avg + exp_avg_sq = 12 bytes per parameter.
CHECKPOINT_BYTES_PER_PARAM = 12
GIB = 2**30


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    detail: str


def gpu_flavor(flavor: str) -> bool:
    return flavor not in CPU_FLAVORS


def torch_build(
    flavor: str,
    torch_version: str,
    cuda_version: str | None,
    installed: Mapping[str, str | None],
    pins: Mapping[str, str],
) -> Check:
    """A CUDA build of torch for a GPU flavor, and the pinned versions of torch/torchtitan/torchdata."""
    build = f"torch {torch_version}, " + (f"CUDA {cuda_version}" if cuda_version else "CPU-only build")
    if gpu_flavor(flavor) and not cuda_version:
        return Check(
            "torch build",
            BLOCKER,
            f"{build}: flavor {flavor!r} needs a CUDA build; install the CUDA wheel of torch "
            f"{pins.get('torch', '')} (e.g. `pip install torch=={pins.get('torch', '<pin>')} --index-url "
            "https://download.pytorch.org/whl/cu128`)",
        )
    wrong = [
        f"{name} {installed.get(name) or 'missing'} (pinned {pin})"
        for name, pin in sorted(pins.items())
        if (installed.get(name) or "").split("+")[0] != pin
    ]
    if any(w.startswith("torchtitan") for w in wrong):
        return Check("torch build", BLOCKER, f"{build}; {', '.join(wrong)}: patches.py targets the pinned torchtitan")
    if wrong:
        return Check("torch build", WARN, f"{build}; {', '.join(wrong)}; install the pinned versions (pyproject.toml)")
    return Check("torch build", OK, build + ", pins match: " + ", ".join(f"{k} {v}" for k, v in sorted(pins.items())))


def parse_srun_listing(text: str) -> dict[int, int]:
    """`srun --label nvidia-smi -L` output -> GPUs listed per task ("3: GPU 0: ..." lines)."""
    counts: dict[int, int] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(\d+):\s*(.*)$", line)
        if match:
            task = int(match.group(1))
            counts.setdefault(task, 0)
            counts[task] += match.group(2).startswith("GPU ")
    return counts


def gpus(flavor: str, per_node: Sequence[int], expected: int, where: str, problem: str = "") -> Check:
    """Every node sees the GPUs the launch will start ranks for."""
    seen = ", ".join(map(str, per_node)) or "none"
    if not gpu_flavor(flavor) and not any(per_node):
        return Check("GPUs per node", OK, f"none ({where}); flavor {flavor!r} runs on CPUs")
    if len(per_node) == 0 or min(per_node) < expected:
        fix = (
            "the launcher's srun passes --gpus-per-node; check the allocation (sbatch --gpus-per-node), "
            "CUDA_VISIBLE_DEVICES and the driver (nvidia-smi)"
        )
        return Check("GPUs per node", BLOCKER, f"{seen} seen {where}, {expected} needed per node. {problem}{fix}")
    return Check("GPUs per node", OK, f"{seen} {where} ({expected} ranks per node)")


def nccl(
    flavor: str,
    nccl_version: str | None,
    env: Mapping[str, str],
    interfaces: Sequence[str],
    infiniband: Sequence[str],
    nodes: int,
) -> Check:
    """NCCL present for GPU runs, and the network interface it would use."""
    if not gpu_flavor(flavor):
        return Check("NCCL / network", OK, "gloo on CPU (no NCCL needed)")
    if not nccl_version:
        return Check("NCCL / network", BLOCKER, "torch has no NCCL (CPU build or NCCL missing); install CUDA torch")
    wanted = env.get("NCCL_SOCKET_IFNAME", "")
    names = [n for n in re.split(r",", wanted.lstrip("^=")) if n]
    real = [n for n in interfaces if n != "lo"]
    if wanted and not wanted.startswith("^") and not any(any(i.startswith(n) for i in interfaces) for n in names):
        return Check(
            "NCCL / network",
            BLOCKER,
            f"NCCL {nccl_version}: NCCL_SOCKET_IFNAME={wanted} matches no interface here ({', '.join(interfaces)}); "
            "set it to one of them or unset it",
        )
    chosen = f"NCCL_SOCKET_IFNAME={wanted}" if wanted else f"auto among {', '.join(real) or 'lo only'}"
    ib = f"InfiniBand {', '.join(infiniband)}" if infiniband else "no InfiniBand device"
    detail = f"NCCL {nccl_version}; sockets: {chosen}; {ib}"
    if nodes > 1 and not infiniband:
        return Check("NCCL / network", WARN, detail + f": {nodes} nodes talk over TCP sockets (slow gradient sync)")
    if nodes > 1 and not real:
        return Check("NCCL / network", BLOCKER, detail + ": no network interface besides lo for other nodes")
    return Check("NCCL / network", OK, detail)


def bf16(flavor: str, mixed_precision: str, cuda: bool, bf16_supported: bool) -> Check:
    """bf16 compute asked for, and what the hardware does with it."""
    if mixed_precision != "bfloat16":
        return Check("bf16", OK, f"mixed_precision_param = {mixed_precision!r}")
    if not cuda:
        verdict = BLOCKER if gpu_flavor(flavor) else WARN
        return Check("bf16", verdict, "bf16 asked for, no GPU: the CPU layer computes in float32")
    if not bf16_supported:
        return Check(
            "bf16",
            BLOCKER,
            'this GPU has no bf16 (pre-Ampere); set [training] mixed_precision_param = "float32" or use A100/H100',
        )
    return Check("bf16", OK, "bf16 autocast/FSDP mixed precision supported")


def attention(document_masking: bool, backend: str, cuda: bool, n_heads: int, n_kv_heads: int) -> Check:
    """The attention backend the TOML asks for on this hardware (resolve_attention's rule)."""
    try:
        attn_type, mask = resolve_attention(document_masking, backend, cuda)
    except ValueError as err:
        return Check("attention", BLOCKER, str(err))
    detail = f"[model] attention_backend = {backend!r}, document_masking = {document_masking}: {attn_type} ({mask})"
    if attn_type == "varlen" and n_kv_heads < n_heads:
        detail += f"; {n_heads} query / {n_kv_heads} KV heads: enable_gqa passed by patches.varlen_forward_with_gqa"
    return Check("attention", OK, detail)


def batch(local: int, global_batch: int, rounding: str, nodes: int, per_node: int, seq_len: int) -> Check:
    """The global batch for `nodes` x `per_node` data-parallel ranks (the rule finalize applies at launch)."""
    try:
        geometry = resolve_batch_geometry(global_batch, local, nodes * per_node, rounding, gpus_per_node=per_node)
    except BatchGeometryError as err:
        return Check("batch geometry", BLOCKER, f"{nodes} node(s) x {per_node}: {err}")
    verdict = WARN if geometry.rounded else OK
    return Check("batch geometry", verdict, f"{nodes} node(s) x {per_node}: " + describe(geometry, seq_len, "doctor"))


def checkpoint_saves(enabled: bool, keep_latest_k: int, interval: int, steps: int, decay_ends: Sequence[int]) -> int:
    """DCP steps with optimizer state kept at the end: the rolling `keep_latest_k` + the decay ends (never purged)."""
    if not enabled:
        return 0
    rolling = {s for s in range(interval, steps + 1, interval)} - set(decay_ends)
    kept = len(rolling) if keep_latest_k <= 0 else min(keep_latest_k, len(rolling))
    return kept + len(set(decay_ends))


def checkpoint_disk(params: int, saves: int, hf_bytes: int, free_bytes: int, where: Path) -> Check:
    """Free space for the checkpoints the run keeps (12 bytes per parameter per save) and its HF export."""
    need = saves * params * CHECKPOINT_BYTES_PER_PARAM + hf_bytes
    detail = (
        f"{saves} save(s) x {params * CHECKPOINT_BYTES_PER_PARAM / GIB:.1f} GiB ({params:,} parameters x "
        f"{CHECKPOINT_BYTES_PER_PARAM} B: fp32 weights + AdamW moments) + HF export {hf_bytes / GIB:.1f} GiB = "
        f"{need / GIB:.1f} GiB; {free_bytes / GIB:.1f} GiB free at {where}"
    )
    if free_bytes < need:
        return Check("checkpoint disk", BLOCKER, detail + "; free space or lower [checkpoint] keep_latest_k")
    if free_bytes < 1.5 * need:
        return Check("checkpoint disk", WARN, detail + " (less than 1.5x headroom)")
    return Check("checkpoint disk", OK, detail)


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable(folders: Mapping[str, Path]) -> Check:
    """Each output folder exists and takes a file, or its nearest existing parent can create it."""
    problems = []
    for label, folder in folders.items():
        base = existing_ancestor(folder)
        if not base.is_dir():
            problems.append(f"{label} {folder}: {base} is not a folder")
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=base, prefix=".molgen3d-doctor-"):
                pass
        except OSError as exc:
            problems.append(f"{label} {folder}: cannot write in {base} ({exc.strerror or exc})")
    if problems:
        return Check("outputs writable", BLOCKER, "; ".join(problems))
    return Check("outputs writable", OK, ", ".join(f"{k} {v}" for k, v in folders.items()))


def hub_model(
    name: str,
    location: Path,
    ref: HubRef | None,
    cached: bool,
    offline: bool,
    reachable: str | None,
    need_weights: bool,
) -> Check:
    """A folder that exists, or a hub snapshot that is cached or downloadable from here."""
    if ref is None:
        if not location.is_dir():
            return Check(name, BLOCKER, f"{location} is not a folder")
        if need_weights and not any(location.glob("*.safetensors")):
            return Check(name, BLOCKER, f"{location} holds no *.safetensors")
        return Check(name, OK, str(location))
    pin = "" if ref.pinned else f"; revision {ref.revision!r} is a branch: pin a commit in paths.yaml"
    verdict_if_fine = OK if ref.pinned else WARN
    if cached:
        return Check(name, verdict_if_fine, f"{ref} cached at {location}{pin}")
    command = f"pre-download: `{ref.download_command()}`"
    if offline:
        return Check(name, BLOCKER, f"{ref} not in the cache and HF_HUB_OFFLINE is set; {command}{pin}")
    if reachable is not None:
        return Check(name, BLOCKER, f"{ref} not in the cache and the hub is unreachable ({reachable}); {command}")
    return Check(name, WARN, f"{ref} not cached; the run downloads it once at start (or {command}){pin}")


def data(name: str, location: Path | None, files: int | None, problem: str = "") -> Check:
    if location is None:
        return Check(name, OK, "not used")
    if files is None:
        return Check(name, BLOCKER, f"no data at {location} ({problem}); prepare it with `molgen3d prepare-data`")
    return Check(name, OK, f"{files} JSONL file(s) at {location}")

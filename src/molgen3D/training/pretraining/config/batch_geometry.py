"""Global batch vs local batch x data-parallel degree, decided from the launch environment.

TorchTitan asserts `global_batch_size % (local_batch_size * dp) == 0` only after the data
index and the model are built; checking here, at config load, turns a wasted allocation
into one message naming the keys and the node counts that work. Pure: the environment is
passed in as a mapping.

`global_batch_rounding` says what a global batch that does not divide means:
- "exact": an error (the default: the batch is a hyperparameter);
- "up": the smallest multiple of local x dp that is >= the target, so one TOML runs on
  1, 2 and 4 nodes of 8 GPUs: 48 stays 48 on 1 (and 3) nodes, becomes 64 on 2 and 4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ROUNDING_RULES = ("exact", "up")
GLOBAL_KEY = "[training] global_batch_size"
LOCAL_KEY = "[training] local_batch_size"
RULE_KEY = "[training] global_batch_rounding"


class BatchGeometryError(ValueError):
    """The batch keys do not fit the launch; the message names the keys, the node counts that work and the fix."""

    def __init__(self, problem: str, fix: str = "", key: str = "training.global_batch_size") -> None:
        self.problem, self.fix, self.key = problem, fix, key
        super().__init__(f"{problem}. Fix: {fix}" if fix else problem)


@dataclass(frozen=True)
class BatchGeometry:
    local_batch: int
    dp_degree: int
    global_batch: int
    """Sequences per optimizer step (after rounding)."""
    target_global_batch: int
    """What the config asked for (-1: local x dp)."""

    @property
    def grad_accum_steps(self) -> int:
        return self.global_batch // (self.local_batch * self.dp_degree)

    @property
    def rounded(self) -> bool:
        return self.target_global_batch not in (-1, self.global_batch)

    def tokens_per_step(self, seq_len: int) -> int:
        return self.global_batch * seq_len


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value.split("(")[0].split(",")[0])  # SLURM_GPUS_ON_NODE may read "8(x2)"
    except ValueError as exc:
        raise BatchGeometryError(f"${name} = {value!r} is not a count", "launch with torchrun or the launcher") from exc
    if number < 1:
        raise BatchGeometryError(f"${name} = {value!r} must be >= 1", "launch with torchrun or the launcher")
    return number


def launch_world_size(env: Mapping[str, str]) -> tuple[int, str]:
    """Ranks of this launch and where the figure came from.

    WORLD_SIZE (set by torchrun for every rank) wins; before torchrun, Slurm's node count
    times the GPUs per node (SLURM_GPUS_ON_NODE or NGPU_PER_NODE); else one process.
    """
    world = _positive_int(env, "WORLD_SIZE")
    if world is not None:
        return world, "$WORLD_SIZE"
    nodes = _positive_int(env, "SLURM_NNODES")
    per_node = _positive_int(env, "NGPU_PER_NODE") or _positive_int(env, "SLURM_GPUS_ON_NODE")
    if nodes is not None and per_node is not None:
        return nodes * per_node, f"$SLURM_NNODES ({nodes}) x GPUs per node ({per_node})"
    return 1, "one process (no $WORLD_SIZE or Slurm allocation)"


def dp_degree(world_size: int, *, tp: int = 1, cp: int = 1, pp: int = 1, ep: int = 1) -> int:
    """Data-parallel ranks (replicate x shard) left after the model-parallel degrees."""
    del ep  # experts are sharded within the data-parallel ranks: they do not reduce dp
    model_parallel = tp * cp * pp
    if model_parallel < 1 or world_size % model_parallel:
        raise BatchGeometryError(
            f"world size {world_size} is not a multiple of tensor x context x pipeline parallel = {model_parallel}",
            "change the [parallelism] degrees",
            key="parallelism.tensor_parallel_degree",
        )
    return world_size // model_parallel


def working_node_counts(global_batch: int, local_batch: int, gpus_per_node: int, max_nodes: int = 16) -> list[int]:
    """Node counts (1..max_nodes) on which `global_batch` divides exactly."""
    return [n for n in range(1, max_nodes + 1) if global_batch % (local_batch * gpus_per_node * n) == 0]


def resolve_batch_geometry(
    global_batch: int, local_batch: int, dp: int, rounding: str = "exact", *, gpus_per_node: int = 8, where: str = ""
) -> BatchGeometry:
    """The global batch for `dp` data-parallel ranks, or `BatchGeometryError` naming the keys and the fix."""
    located = f" ({where})" if where else ""
    if rounding not in ROUNDING_RULES:
        raise BatchGeometryError(
            f"{RULE_KEY} = {rounding!r}{located} is not one of {', '.join(ROUNDING_RULES)}",
            'set "exact" or "up"',
            key="training.global_batch_rounding",
        )
    if local_batch < 1:
        raise BatchGeometryError(
            f"{LOCAL_KEY} = {local_batch}{located} must be >= 1",
            "set a positive value",
            key="training.local_batch_size",
        )
    if dp < 1:
        raise BatchGeometryError(f"data-parallel degree {dp} must be >= 1", "check the launch")
    per_step = local_batch * dp
    if global_batch == -1:
        return BatchGeometry(local_batch, dp, per_step, -1)
    if global_batch < 1:
        raise BatchGeometryError(
            f"{GLOBAL_KEY} = {global_batch}{located} must be -1 (local x dp) or >= 1",
            "set -1 or a positive multiple of local_batch_size",
        )
    if global_batch % per_step == 0:
        return BatchGeometry(local_batch, dp, global_batch, global_batch)
    if rounding == "up":
        return BatchGeometry(local_batch, dp, -(-global_batch // per_step) * per_step, global_batch)
    nodes = working_node_counts(global_batch, local_batch, gpus_per_node)
    node_text = ", ".join(map(str, nodes)) if nodes else "none up to 16"
    raise BatchGeometryError(
        f"{GLOBAL_KEY} = {global_batch}{located} is not a multiple of {LOCAL_KEY} ({local_batch}) x data-parallel "
        f"degree ({dp}) = {per_step}. Node counts of {gpus_per_node} GPUs where it divides: {node_text}",
        f'use a multiple of {per_step}, -1 (= {per_step}, no accumulation), or {RULE_KEY} = "up" '
        f"(rounds to {-(-global_batch // per_step) * per_step})",
    )


def describe(geometry: BatchGeometry, seq_len: int, source: str) -> str:
    """One log line: the geometry and, when rounded, what changed."""
    line = (
        f"Batch: global {geometry.global_batch} = local {geometry.local_batch} x dp {geometry.dp_degree} "
        f"x {geometry.grad_accum_steps} accumulation step(s); {geometry.tokens_per_step(seq_len):,} tokens/step "
        f"(dp from {source})"
    )
    if geometry.rounded:
        line += f'; rounded up from {geometry.target_global_batch} ({RULE_KEY} = "up")'
    return line


def gpus_per_node(env: Mapping[str, str], world_size: int) -> int:
    """Ranks per node: torchrun's LOCAL_WORLD_SIZE, else NGPU_PER_NODE / SLURM_GPUS_ON_NODE, else all on one node."""
    for name in ("LOCAL_WORLD_SIZE", "NGPU_PER_NODE", "SLURM_GPUS_ON_NODE"):
        value = _positive_int(env, name)
        if value is not None:
            return value
    return world_size


def hsdp_degrees(world_size: int, per_node: int) -> tuple[int, int]:
    """(replicate, shard) for HSDP: shard over a node's GPUs (NVLink), replicate across nodes (InfiniBand)."""
    if per_node < 1 or world_size % per_node:
        raise BatchGeometryError(
            f"world size {world_size} is not a whole number of nodes of {per_node} ranks",
            "launch the same number of GPUs on every node, or set [parallelism] hsdp_across_nodes = false",
            key="parallelism.hsdp_across_nodes",
        )
    return world_size // per_node, per_node


def resolve_launch_geometry(cfg, env: Mapping[str, str], log=None) -> tuple[BatchGeometry, tuple[int, int] | None]:
    """(the batch in force, the HSDP (replicate, shard) degrees or None) of a job config for this launch.

    Reads the config, changes nothing: finalize keeps the result and `finalize.write_titan_config` writes
    TorchTitan's global batch and degrees from it.
    """
    world, source = launch_world_size(env)
    par = cfg.parallelism
    degrees = None
    if getattr(par, "hsdp_across_nodes", False):
        degrees = hsdp_degrees(world, gpus_per_node(env, world))
    dp = dp_degree(
        world, tp=par.tensor_parallel_degree, cp=par.context_parallel_degree, pp=par.pipeline_parallel_degree
    )
    t = cfg.training
    geometry = resolve_batch_geometry(
        t.global_batch_size,
        t.local_batch_size,
        dp,
        getattr(t, "global_batch_rounding", "exact"),
        gpus_per_node=gpus_per_node(env, world) if world > 1 else 8,
    )
    if log is not None:
        log(describe(geometry, t.seq_len, source))
    return geometry, degrees

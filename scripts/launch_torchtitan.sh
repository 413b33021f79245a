#!/usr/bin/env bash
# Launch MolGen3D pretraining with TorchTitan.
#   One node:   bash scripts/launch_torchtitan.sh [--skip-doctor] [--section.key value ...]
#   Slurm:      sbatch --nodes=2 scripts/launch_torchtitan.sh [...]   (srun starts one torchrun per node)
# First it runs `molgen3d doctor --train-toml TRAIN_TOML --nodes N --gpus-per-node G` (seconds; inside
# an allocation it counts each node's GPUs through srun) and stops on a BLOCKER; skip it with
# --skip-doctor (first argument) or MOLGEN3D_SKIP_DOCTOR=1. It checks the TOML as written (not the
# --section.key overrides).
# Environment (defaults in brackets):
#   TRAIN_TOML     [src/molgen3D/config/pretrain/qwen3_06b.toml]  must exist (relative to the repo root)
#   RUN_DESC       [the TOML's [job] description] part of the run name
#   NGPU_PER_NODE  [GPUs in CUDA_VISIBLE_DEVICES, else listed by nvidia-smi -L; none is an error]
#                  processes per node; set it (e.g. 1) for a CPU run with a CPU TOML
#   MASTER_PORT    [one node: a free port (torchrun --standalone); Slurm: 20000 + job id mod 10000]
#   TORCHRUN_LOG_DIR [outputs/torchrun_logs/<job id or time>]  every rank's stdout/stderr as files;
#                  the console shows global rank 0 only
#   PYTORCH_ALLOC_CONF [expandable_segments:True]  less fragmentation with FSDP's varying buffers
#   WANDB_PROJECT [molgen3d]  WANDB_ENTITY [unset]  WANDB_GROUP [pretrain]
#   WANDB_RUN_NAME                               reuse a run's name (and folders) to continue it
#   TORCHRUN       [.venv/bin/torchrun if present, else torchrun on PATH]
#   PYTHON         [.venv/bin/python if present, else python3]  runs the doctor
#   MOLGEN3D_SKIP_DOCTOR [0]  1: launch without the preflight check
#   HF_HUB_OFFLINE [unset]  unset: an `hf:` base model/tokenizer missing from the Hugging Face cache is
#                  downloaded once at start (one process per cache); 1 on nodes without network (then
#                  pre-download it: the doctor and the error print the `hf download` command)
# Slurm: srun inside sbatch does not inherit --cpus-per-task (Slurm >= 22.05); it is passed as
# `srun -c` and SRUN_CPUS_PER_TASK so each node's 8 ranks and their loader workers get the cores.
# In a GPU allocation the step asks for the GPUs explicitly (srun --gpus-per-node): a step that
# requests none may see none.
#SBATCH --job-name=molgen3d-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

die() {
    echo "launch_torchtitan.sh: error: $*" >&2
    exit 2
}

repo_root() {
    if [[ -n "${MOLGEN3D_ROOT:-}" ]]; then
        echo "$MOLGEN3D_ROOT"
        return
    fi
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # Under sbatch the script runs from a spool copy: fall back to the submission directory.
    if [[ -f "$here/pyproject.toml" ]]; then
        echo "$here"
    elif [[ -n "${SLURM_SUBMIT_DIR:-}" && -f "$SLURM_SUBMIT_DIR/pyproject.toml" ]]; then
        echo "$SLURM_SUBMIT_DIR"
    else
        pwd
    fi
}

is_count() {
    [[ "$1" =~ ^[1-9][0-9]*$ ]]
}

# GPUs this node can use; 0 when none is visible (the caller reports it).
visible_gpus() {
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        local ids
        IFS=',' read -ra ids <<< "$CUDA_VISIBLE_DEVICES"
        echo "${#ids[@]}"
        return
    fi
    local listing
    if ! command -v nvidia-smi > /dev/null 2>&1; then
        echo 0
    elif ! listing="$(nvidia-smi -L 2>&1)"; then
        echo "nvidia-smi -L failed: ${listing//$'\n'/ }" >&2
        echo 0
    else
        grep -c '^GPU' <<< "$listing" || true   # grep -c exits 1 on a zero count
    fi
}

# First host of a Slurm node list ("gpu[03-05,09],cpu1" -> gpu03).
first_node() {
    local list="$1"
    if command -v scontrol > /dev/null 2>&1; then
        scontrol show hostnames "$list" | sed -n 1p
    elif [[ "$list" =~ ^([^,\[]+)\[([^],-]+) ]]; then
        echo "${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
    else
        echo "${list%%,*}"
    fi
}

REPO="$(repo_root)"
cd "$REPO"

SKIP_DOCTOR="${MOLGEN3D_SKIP_DOCTOR:-0}"
if [[ "${1:-}" == "--skip-doctor" ]]; then
    SKIP_DOCTOR=1
    shift
fi

TRAIN_TOML="${TRAIN_TOML:-src/molgen3D/config/pretrain/qwen3_06b.toml}"
[[ -f "$TRAIN_TOML" ]] || die "TRAIN_TOML=$TRAIN_TOML does not exist (relative to $REPO); set TRAIN_TOML to a training TOML"

if [[ -z "${NGPU_PER_NODE:-}" ]]; then
    NGPU_PER_NODE="$(visible_gpus)"
    [[ "$NGPU_PER_NODE" != 0 ]] || die "no GPU visible on $(hostname) (CUDA_VISIBLE_DEVICES unset, nvidia-smi -L lists none);" \
        "check the allocation (--gpus-per-node) and the driver, or set NGPU_PER_NODE=1 for a CPU run with a CPU TOML"
fi
is_count "$NGPU_PER_NODE" || die "NGPU_PER_NODE=$NGPU_PER_NODE is not a positive integer"

NNODES=1
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    NNODES="${SLURM_NNODES:-1}"
    is_count "$NNODES" || die "SLURM_NNODES=$NNODES is not a positive node count; submit with sbatch --nodes=N"
    if [[ "$NNODES" -gt 1 ]] && command -v scontrol > /dev/null 2>&1; then
        listed="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-}")" \
            || die "scontrol cannot expand SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST:-}"
        listed="$(grep -c . <<< "$listed" || true)"
        [[ "$listed" -eq "$NNODES" ]] || die "SLURM_NNODES=$NNODES but SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST:-} names $listed hosts"
    fi
fi

export WANDB_PROJECT="${WANDB_PROJECT:-molgen3d}"
export WANDB_GROUP="${WANDB_GROUP:-pretrain}"
export WANDB_RUN_GROUP="$WANDB_GROUP"   # the name wandb and TorchTitan read
if [[ -n "${WANDB_ENTITY:-}" ]]; then
    export WANDB_ENTITY
fi
export PYTORCH_ALLOC_CONF="${PYTORCH_ALLOC_CONF:-expandable_segments:True}"

if [[ -z "${TORCHRUN:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/torchrun" ]]; then
        TORCHRUN="$REPO/.venv/bin/torchrun"
    else
        TORCHRUN="torchrun"
    fi
fi

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then
        PYTHON="$REPO/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi
if [[ "$SKIP_DOCTOR" != 1 ]]; then
    echo "+ $PYTHON -m molgen3D.cli doctor --train-toml $TRAIN_TOML --nodes $NNODES --gpus-per-node $NGPU_PER_NODE" >&2
    "$PYTHON" -m molgen3D.cli doctor --train-toml "$TRAIN_TOML" --nodes "$NNODES" --gpus-per-node "$NGPU_PER_NODE" \
        || die "molgen3d doctor found a BLOCKER (table above): fix it, or launch anyway with MOLGEN3D_SKIP_DOCTOR=1 or --skip-doctor"
fi

LOG_DIR="${TORCHRUN_LOG_DIR:-$REPO/outputs/torchrun_logs/${SLURM_JOB_ID:-local-$(date +%y%m%d-%H%M%S)}}"
mkdir -p "$LOG_DIR"
# Every rank tees to files under LOG_DIR; the console gets local rank 0 (and, across nodes,
# only on node 0: the per-node wrapper below hides the rest). torchrun reads PET_<OPTION>.
export PET_LOCAL_RANKS_FILTER=0
TORCHRUN_LOGS=(--log-dir="$LOG_DIR" --tee=3)

RUNNER_ARGS=(-m molgen3D.training.pretraining.torchtitan_runner)
if [[ -n "${RUN_DESC:-}" ]]; then
    RUNNER_ARGS+=(--run-desc "$RUN_DESC")
fi
RUNNER_ARGS+=(--train-toml "$TRAIN_TOML" "$@")

if [[ "$NNODES" -gt 1 ]]; then
    HEAD_NODE="$(first_node "$SLURM_JOB_NODELIST")"
    # Below the Linux ephemeral range (32768+); two jobs sharing a head node get different ports.
    MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 10000))}"
    SRUN=(srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1)
    if [[ -n "${SLURM_GPUS_ON_NODE:-}${SLURM_GPUS_PER_NODE:-}${SLURM_JOB_GPUS:-}" ]]; then
        SRUN+=(--gpus-per-node="$NGPU_PER_NODE")
    fi
    if [[ -n "${SLURM_CPUS_PER_TASK:-}" ]]; then
        export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
        SRUN+=(-c "$SLURM_CPUS_PER_TASK")
    fi
    NODE_WRAPPER='[[ "${SLURM_NODEID:-0}" == 0 ]] || export PET_LOCAL_RANKS_FILTER=-1; exec "$@"'
    CMD=("${SRUN[@]}" bash -c "$NODE_WRAPPER" node0-console
        "$TORCHRUN" --nnodes="$NNODES" --nproc-per-node="$NGPU_PER_NODE"
        --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$MASTER_PORT"
        "${TORCHRUN_LOGS[@]}" "${RUNNER_ARGS[@]}")
elif [[ -n "${MASTER_PORT:-}" ]]; then
    CMD=("$TORCHRUN" --nnodes=1 --nproc-per-node="$NGPU_PER_NODE"
        --rdzv-backend=c10d --rdzv-endpoint="localhost:$MASTER_PORT"
        "${TORCHRUN_LOGS[@]}" "${RUNNER_ARGS[@]}")
else
    CMD=("$TORCHRUN" --standalone --nnodes=1 --nproc-per-node="$NGPU_PER_NODE"
        "${TORCHRUN_LOGS[@]}" "${RUNNER_ARGS[@]}")
fi

echo "+ ${CMD[*]}" >&2
echo "+ logs of every rank: $LOG_DIR" >&2
exec "${CMD[@]}"

#!/usr/bin/env bash
# Launch MolGen3D pretraining with TorchTitan.
#   One node:   bash scripts/launch_torchtitan.sh [--section.key value ...]
#   Slurm:      sbatch --nodes=3 scripts/launch_torchtitan.sh [...]   (srun starts one torchrun per node)
# Environment (defaults in brackets):
#   TRAIN_TOML     [src/molgen3D/config/pretrain/qwen3_06b.toml]
#   RUN_DESC       [the TOML's [job] description] part of the run name
#   NGPU_PER_NODE  [visible GPUs, else 1]        processes per node
#   MASTER_PORT    [29500]                       rendezvous port (change it for a second job on a node)
#   WANDB_PROJECT [molgen3d]  WANDB_ENTITY [unset]  WANDB_GROUP [pretrain]
#   WANDB_RUN_NAME                               reuse a run's name (and folders) to continue it
#   TORCHRUN       [.venv/bin/torchrun if present, else torchrun on PATH]
#SBATCH --job-name=molgen3d-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

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

visible_gpus() {
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        local ids
        IFS=',' read -ra ids <<< "$CUDA_VISIBLE_DEVICES"
        echo "${#ids[@]}"
    elif command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
        nvidia-smi -L | grep -c '^GPU'
    else
        echo 1
    fi
}

# First host of a Slurm node list ("gpu[03-05,09],cpu1" -> gpu03).
first_node() {
    local list="$1"
    if command -v scontrol > /dev/null 2>&1; then
        scontrol show hostnames "$list" | head -n 1
    elif [[ "$list" =~ ^([^,\[]+)\[([^],-]+) ]]; then
        echo "${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
    else
        echo "${list%%,*}"
    fi
}

REPO="$(repo_root)"
cd "$REPO"

TRAIN_TOML="${TRAIN_TOML:-src/molgen3D/config/pretrain/qwen3_06b.toml}"
NGPU_PER_NODE="${NGPU_PER_NODE:-$(visible_gpus)}"
MASTER_PORT="${MASTER_PORT:-29500}"
export WANDB_PROJECT="${WANDB_PROJECT:-molgen3d}"
export WANDB_GROUP="${WANDB_GROUP:-pretrain}"
export WANDB_RUN_GROUP="$WANDB_GROUP"   # the name wandb and TorchTitan read
if [[ -n "${WANDB_ENTITY:-}" ]]; then
    export WANDB_ENTITY
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # weights and tokenizers are local; never download at run time

if [[ -z "${TORCHRUN:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/torchrun" ]]; then
        TORCHRUN="$REPO/.venv/bin/torchrun"
    else
        TORCHRUN="torchrun"
    fi
fi

RUNNER_ARGS=(-m molgen3D.training.pretraining.torchtitan_runner)
if [[ -n "${RUN_DESC:-}" ]]; then
    RUNNER_ARGS+=(--run-desc "$RUN_DESC")
fi
RUNNER_ARGS+=(--train-toml "$TRAIN_TOML" "$@")

if [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NNODES:-1}" -gt 1 ]]; then
    HEAD_NODE="$(first_node "$SLURM_JOB_NODELIST")"
    CMD=(srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1
        "$TORCHRUN" --nnodes="$SLURM_NNODES" --nproc-per-node="$NGPU_PER_NODE"
        --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$MASTER_PORT"
        "${RUNNER_ARGS[@]}")
else
    CMD=("$TORCHRUN" --nnodes=1 --nproc-per-node="$NGPU_PER_NODE"
        --rdzv-backend=c10d --rdzv-endpoint="localhost:$MASTER_PORT"
        "${RUNNER_ARGS[@]}")
fi

echo "+ ${CMD[*]}" >&2
exec "${CMD[@]}"

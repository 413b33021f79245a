#!/usr/bin/env bash
# The first GPU check, in one call: one H200 (or any CUDA GPU) in at most ~8 minutes.
#   bash benchmarks/gpu_check.sh
# Steps (each under its own time limit; output in logs, not on the console):
#   1. molgen3d doctor on the shipped qwen3_06b.toml for 1 node x the visible GPUs (informational:
#      a bare machine has no prepared data or base model, which the table shows);
#   2. benchmarks/gpu_smoke.py: the 0.6B flavor with the shipped TOML's settings, compile on, sharded
#      with FSDP (one rank too), on the embedded default data: tokens/s per GPU, MFU against the dense
#      bf16 peak, peak memory, whether the loss falls;
#   3. benchmarks/gpu_check.py masking: document masking (explicit mask, flex, varlen with GQA) forward
#      and backward against the same units run one by one, padded: loss and gradient norm, bf16;
#   4. benchmarks/gpu_check.py sampling: constrained vs free decoding tokens/s at batch 256 in bf16.
# Then ONE table on the console and ONE JSON: benchmarks/results/gpu_check.json (the steps' logs
# stay in $GPU_CHECK_WORK, default a temporary folder, named at the end).
# Without a GPU it says so and exits 2 at once. Exit 1 when a step failed or a figure is off.
# Environment: PYTHON [.venv/bin/python, else python3], GPU_CHECK_WORK, GPU_CHECK_STEPS [smoke steps, 30].
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if ! command -v nvidia-smi > /dev/null 2>&1; then
    echo "gpu_check.sh: no GPU on $(hostname): nvidia-smi is not installed. Run this check on a machine with a CUDA GPU." >&2
    exit 2
fi
NGPU="$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)"
if [[ "${NGPU:-0}" == 0 ]]; then
    echo "gpu_check.sh: no GPU on $(hostname): nvidia-smi -L lists none. Run this check on a machine with a CUDA GPU." >&2
    exit 2
fi

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
    echo "gpu_check.sh: $NGPU GPU(s) listed, but $PYTHON's torch cannot use CUDA (a CPU build or a driver mismatch);" \
        "\`$PYTHON -m molgen3D.cli doctor\` says which" >&2
    exit 2
fi

WORK="${GPU_CHECK_WORK:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$WORK/logs"
: > "$WORK/steps.txt"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
export MOLGEN3D_CACHE="${MOLGEN3D_CACHE:-$WORK/cache}"
export PYTORCH_ALLOC_CONF="${PYTORCH_ALLOC_CONF:-expandable_segments:True}"

# step NAME SECONDS CMD...: run CMD under a time limit, its output to logs/NAME.log, its status to steps.txt.
step() {
    local name="$1" limit="$2" start rc
    shift 2
    echo "gpu_check.sh: $name (at most ${limit} s) ..." >&2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    echo "$name $rc $(($(date +%s) - start))" >> "$WORK/steps.txt"
}

step doctor 45 "$PYTHON" -m molgen3D.cli doctor --train-toml src/molgen3D/config/pretrain/qwen3_06b.toml \
    --nodes 1 --gpus-per-node "$NGPU" --json "$WORK/doctor.json"
step smoke 240 "$PYTHON" benchmarks/gpu_smoke.py --steps "${GPU_CHECK_STEPS:-30}" --warmup 10 --gpu-counts all \
    --molecules 600 --out "$WORK/gpu_smoke.json"
step masking 120 "$PYTHON" benchmarks/gpu_check.py masking --out "$WORK/masking.json"
step sampling 60 "$PYTHON" benchmarks/gpu_check.py sampling --out "$WORK/sampling.json"

mkdir -p benchmarks/results
"$PYTHON" benchmarks/gpu_check.py report --work "$WORK" --out benchmarks/results/gpu_check.json || exit 1
# The doctor's blockers describe the machine's setup; every other step must pass.
if grep -v '^doctor ' "$WORK/steps.txt" | grep -qv ' 0 '; then
    exit 1
fi
exit 0

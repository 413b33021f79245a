#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job on the embedded default data set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/molgen3d demo "$@"

#!/usr/bin/env bash
# Set up .venv on a fresh machine and run the built-in demo (tiny generated checkpoints, nothing downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh "llama,plot"
exec "${LONGROPE_VENV:-.venv}/bin/longrope-convert" demo "$@"

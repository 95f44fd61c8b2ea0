#!/usr/bin/env bash
# Create .venv (or $LONGROPE_VENV) and install longrope-convert with the given extras. Idempotent.
# Uses ../shared/wheels for the prebuilt llama-cpp-python wheel when it exists (else pip builds it, ~6 min).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-llama,plot}"
venv="${LONGROPE_VENV:-.venv}"
# torch is pinned to a release with a CPU wheel so a fresh machine does not pull several GB of CUDA packages;
# set LONGROPE_TORCH="torch" (or another spec) to choose yourself, e.g. on a GPU machine.
torch_spec="${LONGROPE_TORCH:-torch==2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pip_args=(-q --disable-pip-version-check)
if [ -d ../shared/wheels ]; then
  pip_args+=(--find-links ../shared/wheels)
fi
"$venv/bin/python" -m pip install "${pip_args[@]}" "$torch_spec" 2>&1 | grep -v "is ignored: it is neither" || true
"$venv/bin/python" -m pip install "${pip_args[@]}" -e ".[$extras]" 2>&1 | grep -v "is ignored: it is neither" || true
"$venv/bin/python" -c "import longrope_convert.formats.spec, torch, transformers" \
  || { echo "bootstrap: install failed" >&2; exit 1; }

#!/usr/bin/env bash
# Set up .venv (with test extras) and a transformers 4.57 side environment, then run the test suite.
# Extra arguments go to pytest (e.g. -m slow, -k gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh "test,llama,plot"
venv="${LONGROPE_VENV:-.venv}"
tf4=".venv-compat/tf4"
if [ ! -d "$tf4/transformers" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --target "$tf4" --no-deps \
    "transformers==4.57.6" "huggingface-hub>=0.34,<1.0" "tokenizers>=0.22,<=0.23" 2>&1 \
    | grep -v "is ignored: it is neither" || true
fi
export LONGROPE_TF4_PATH="$PWD/$tf4"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"

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
# llama.cpp's own converter (from the llama-cpp-python sdist) for the GGUF metadata comparison test.
llama_src=".venv-compat/llama-cpp-src"
if [ ! -f "$llama_src/convert_hf_to_gguf.py" ]; then
  tmp=$(mktemp -d)
  if "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
       "llama-cpp-python==0.3.36" -d "$tmp" 2>/dev/null; then
    mkdir -p "$llama_src"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$llama_src" --strip-components=3 --wildcards \
      '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
  fi
  rm -rf "$tmp"
fi
export LONGROPE_LLAMA_CPP_SRC="$PWD/$llama_src"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"

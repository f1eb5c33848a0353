#!/usr/bin/env bash
# llama.cpp's greedy answers and tokens for fixtures/models/kjv.gguf and kjv-spm.gguf
# (tools/py/llm_reference.py):
#
#   scripts/llm-reference.sh           write fixtures/models/<model>.reference.json
#   scripts/llm-reference.sh --check   compare llama.cpp's answers with the committed ones
#
# llama-cpp-python comes from PyPI as source and is compiled here (CPU only, a few minutes on
# 2 cores; pip brings CMake and Ninja from PyPI too), into tools/py/.venv-llm.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=tools/py/.venv-llm
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# No native-CPU tuning: the same instructions on every machine that builds it.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/py/requirements-llm.txt
exec "$VENV/bin/python" tools/py/llm_reference.py "$@"

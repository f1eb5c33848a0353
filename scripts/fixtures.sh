#!/usr/bin/env bash
# Generate the ONNX model fixtures in fixtures/models/ and their onnxruntime reference outputs.
#
#   scripts/fixtures.sh           regenerate every fixtures/models/*.onnx and reference.json
#   scripts/fixtures.sh --check   regenerate into a temp dir and verify the committed fixtures:
#                                 the committed .onnx files must load in onnxruntime and
#                                 reproduce reference.json on its inputs (fails otherwise);
#                                 retrained models differing from it only warn.
#
# Installs the pinned Python packages (tools/py/requirements.txt) into tools/py/.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=tools/py/.venv
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/py/requirements.txt

exec "$VENV/bin/python" tools/py/make_fixtures.py "$@"

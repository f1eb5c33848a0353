#!/usr/bin/env bash
# scripts/fuzz.sh TARGET [SECONDS] — run one cargo-fuzz target (libFuzzer) for a while.
#   Targets: tx_decode, inference_abi, model_load (fuzz/fuzz_targets/).
#   Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine's toolchain is stable, so the
#   sanitizer flags cargo-fuzz passes are enabled with RUSTC_BOOTSTRAP=1.
#   Corpus: fuzz/corpus/TARGET (kept out of git), seeded from fuzz/seeds/TARGET and, for
#   model_load, from fixtures/models/*.onnx. Crashes land in fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}"
seconds="${2:-60}"
corpus="fuzz/corpus/$target"
mkdir -p "$corpus"
if [[ -d "fuzz/seeds/$target" ]]; then cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true; fi
if [[ "$target" == model_load ]]; then cp -n fixtures/models/*.onnx "$corpus"/ 2>/dev/null || true; fi
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "../$corpus" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1

"""llama.cpp's greedy answers for the dev chain's language model: an independent
implementation of the `llama` architecture and of GGUF's byte-level BPE tokenizer, reading the
same file pipe reads.

    llm_reference.py            write fixtures/models/kjv.reference.json
    llm_reference.py --check    compute again and compare with the committed file (exit 1 if
                                any prompt's tokens or text differ)

pipe's side of the comparison is crates/llm/tests/dev_model.rs, which decodes the same prompts
with pipe's runtime and must produce exactly these tokens.

Greedy here is pipe's rule: the highest logit, the lowest token id on a tie (numpy's argmax),
one thread, the end token ends the answer and is not part of it.
"""

import hashlib
import json
import pathlib
import sys

import llama_cpp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "models" / "kjv.gguf"
REFERENCE = ROOT / "fixtures" / "models" / "kjv.reference.json"
MAX_TOKENS = 32
PROMPTS = [
    "In the beginning God",
    "And the LORD said unto Moses,",
    "Blessed are the",
    "The LORD is my shepherd;",
    "And Jesus answered and said unto them,",
    "For God so loved the world,",
    "Love is",
    "a b c 1 2 3",
]


def answer(llm, eos, prompt):
    prompt_tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
    llm.reset()
    llm.eval(prompt_tokens)
    tokens = []
    for _ in range(MAX_TOKENS):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        best = int(np.argmax(logits))
        if best == eos:
            break
        tokens.append(best)
        llm.eval([best])
    text = llm.detokenize(tokens).decode("utf-8", errors="replace")
    return {"prompt": prompt, "prompt_tokens": prompt_tokens, "tokens": tokens, "text": text}


def main():
    check = "--check" in sys.argv[1:]
    data = MODEL.read_bytes()
    llm = llama_cpp.Llama(
        model_path=str(MODEL), n_ctx=128, n_batch=128, n_threads=1, n_threads_batch=1,
        seed=0, verbose=False,
        # Without it, llama-cpp-python keeps no logits in `scores` for us to read.
        logits_all=True,
    )
    eos = llm.token_eos()
    result = {
        "model": MODEL.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "engine": f"llama.cpp through llama-cpp-python {llama_cpp.__version__}",
        "max_tokens": MAX_TOKENS,
        "eos": eos,
        "cases": [answer(llm, eos, p) for p in PROMPTS],
    }
    if not check:
        REFERENCE.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        for c in result["cases"]:
            print(f"{c['prompt']!r} -> {c['text']!r}")
        return 0
    committed = json.loads(REFERENCE.read_text())
    failed = 0
    if committed["sha256"] != result["sha256"]:
        print(f"{MODEL.name}: sha256 {result['sha256']} but the reference is of {committed['sha256']}")
        failed += 1
    for ours, theirs in zip(result["cases"], committed["cases"]):
        for key in ("prompt", "prompt_tokens", "tokens", "text"):
            if ours[key] != theirs[key]:
                print(f"{ours['prompt']!r}: {key} differs: llama.cpp {ours[key]!r}, committed {theirs[key]!r}")
                failed += 1
    if len(result["cases"]) != len(committed["cases"]):
        print("the committed reference has other prompts")
        failed += 1
    print(f"llama.cpp reference: {len(result['cases'])} prompts, {failed} differences")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

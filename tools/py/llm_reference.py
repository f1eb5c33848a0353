"""llama.cpp's greedy answers for the dev chain's language model: an independent
implementation of the `llama` architecture and of GGUF's tokenizers, reading the same files
pipe reads: kjv.gguf (byte-level BPE) and kjv-spm.gguf (the same weights with a SentencePiece
vocabulary, the kind Llama 2, TinyLlama and Mistral files carry), and the test kit's tiny
random models of each family pipe runs (tiny-llama, tiny-qwen2, tiny-phi3: noise, but the same
architecture, so their logits must agree even where their greedy answers cannot be compared).

    llm_reference.py            write fixtures/models/<model>.reference.json
    llm_reference.py --check    compute again and compare with the committed files (exit 1 if
                                any prompt's tokens or text differ)

pipe's side of the comparison is crates/llm/tests/dev_model.rs, which decodes the same prompts
with pipe's runtime and must produce exactly these tokens, and tokenizes the `texts` (spaces,
line breaks, characters no token covers) into exactly these tokens.

Greedy here is pipe's rule: the highest logit, the lowest token id on a tie (numpy's argmax),
one thread, the end token ends the answer and is not part of it. Each step's margin (the
chosen logit minus the next highest) is recorded: where it is within float rounding (under
0.001), two correct engines may choose differently, and the comparison ends there.
"""

import hashlib
import json
import pathlib
import sys

import llama_cpp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ["kjv", "kjv-spm", "tiny-llama", "tiny-qwen2", "tiny-phi3", "tiny-gemma3"]
# Logits recorded per prompt: the highest few after the prompt, (token, logit).
TOP = 8
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
# Texts only tokenized: what a tokenizer gets wrong first.
TEXTS = [
    "",
    "In the beginning God",
    "  two  spaces and a trailing one ",
    "line\nbreak\n\nand a tab\there",
    "caf\u00e9 \u65e5\u672c \U0001f642",
    "The LORD's 12,000 (and 3.5) [x] {y}!?",
    "unto\r\nthem",
]


def tokens_of(llm, text):
    # add_bos=True adds the file's BOS only where the file asks for one.
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)


def text_of(llm, tokens):
    if tokens and tokens[0] == llm.token_bos() and llm._model.add_bos_token():
        tokens = tokens[1:]
    return llm.detokenize(tokens).decode("utf-8", errors="replace")


def answer(llm, ends, prompt):
    prompt_tokens = tokens_of(llm, prompt)
    llm.reset()
    llm.eval(prompt_tokens)
    first = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    top = [[int(i), round(float(first[i]), 4)] for i in np.argsort(-first, kind="stable")[:TOP]]
    tokens = []
    margins = []
    for _ in range(MAX_TOKENS):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        best = int(np.argmax(logits))
        top2 = np.sort(logits)[-2:]
        # How far the chosen logit is above the next: two engines may pick differently only
        # where this is within their rounding.
        margins.append(round(float(top2[1] - top2[0]), 5))
        if best in ends:
            break
        tokens.append(best)
        llm.eval([best])
    text = text_of(llm, tokens)
    return {
        "prompt": prompt, "prompt_tokens": prompt_tokens, "tokens": tokens, "text": text,
        "margins": margins, "top_logits": top,
    }


def tokenized(llm, text):
    tokens = tokens_of(llm, text)
    return {"text": text, "tokens": tokens, "decoded": text_of(llm, tokens)}


def main():
    check = "--check" in sys.argv[1:]
    failed = sum(reference(name, check) for name in MODELS)
    return 1 if failed else 0


def reference(name, check):
    """Writes or checks one model's reference; the number of differences."""
    model = ROOT / "fixtures" / "models" / f"{name}.gguf"
    reference_file = ROOT / "fixtures" / "models" / f"{name}.reference.json"
    data = model.read_bytes()
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=128, n_batch=128, n_threads=1, n_threads_batch=1,
        seed=0, verbose=False,
        # An f32 attention cache (llama.cpp's default is f16), as pipe's: the logits then
        # differ by summation order only.
        type_k=0, type_v=0,
        # Without it, llama-cpp-python keeps no logits in `scores` for us to read.
        logits_all=True,
    )
    eos = llm.token_eos()
    # Every token that ends an answer (llama.cpp's end-of-generation set: the metadata's ids
    # and tokens it knows by their text, Phi-3's <|end|> say).
    ends = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)]
    result = {
        "model": model.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "engine": f"llama.cpp through llama-cpp-python {llama_cpp.__version__}",
        "max_tokens": MAX_TOKENS,
        "eos": eos,
        "end_tokens": ends,
        "cases": [answer(llm, ends, p) for p in PROMPTS],
        "texts": [tokenized(llm, t) for t in TEXTS],
    }
    if not check:
        reference_file.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        for c in result["cases"]:
            print(f"{name}: {c['prompt']!r} -> {c['text']!r}")
        return 0
    committed = json.loads(reference_file.read_text())
    failed = 0
    if committed["sha256"] != result["sha256"]:
        print(f"{model.name}: sha256 {result['sha256']} but the reference is of {committed['sha256']}")
        failed += 1
    for ours, theirs in zip(result["cases"], committed["cases"]):
        for key in ("prompt", "prompt_tokens", "tokens", "text"):
            if ours[key] != theirs[key]:
                print(f"{ours['prompt']!r}: {key} differs: llama.cpp {ours[key]!r}, committed {theirs[key]!r}")
                failed += 1
    for ours, theirs in zip(result["texts"], committed.get("texts", [])):
        if ours != theirs:
            print(f"{ours['text']!r}: llama.cpp {ours!r}, committed {theirs!r}")
            failed += 1
    if len(result["cases"]) != len(committed["cases"]) or len(result["texts"]) != len(committed.get("texts", [])):
        print("the committed reference has other prompts")
        failed += 1
    print(f"llama.cpp reference, {name}: {len(result['cases'])} prompts, {len(result['texts'])} texts, {failed} differences")
    return failed


if __name__ == "__main__":
    sys.exit(main())

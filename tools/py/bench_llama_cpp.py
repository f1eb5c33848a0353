"""llama.cpp's decoding speed on a GGUF file, the baseline of `pipe bench llm --llama-cpp`.

    bench_llama_cpp.py MODEL THREADS MAX_TOKENS PROMPT...

Answers each prompt greedily (the highest logit) for up to MAX_TOKENS tokens with THREADS
threads, as pipe's runtime does: the prompt in one pass, then one token at a time, the end
token ending the answer. Prints one JSON object: tokens generated, seconds (model load
excluded; tokenizing, the prompt pass and every step included) and the token ids.
"""

import json
import sys
import time

import llama_cpp
import numpy as np


def main():
    model, threads, max_tokens, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    llm = llama_cpp.Llama(
        model_path=model, n_ctx=0, n_batch=512, n_threads=threads, n_threads_batch=threads,
        seed=0, verbose=False,
        # Without it, llama-cpp-python keeps no logits in `scores` for us to read.
        logits_all=True,
    )
    eos = llm.token_eos()
    answers, tokens, seconds = [], 0, 0.0
    for prompt in prompts:
        started = time.perf_counter()
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
        llm.reset()
        llm.eval(ids)
        out = []
        for _ in range(max_tokens):
            best = int(np.argmax(np.asarray(llm.scores[llm.n_tokens - 1])))
            if best == eos:
                break
            out.append(best)
            if len(out) == max_tokens:
                break
            llm.eval([best])
        seconds += time.perf_counter() - started
        tokens += len(out)
        answers.append(out)
    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "threads": threads, "tokens": tokens, "seconds": seconds, "answers": answers,
    }))


if __name__ == "__main__":
    main()

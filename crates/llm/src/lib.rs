//! pipe's language-model runtime: a GGUF file in, a deterministic answer out.
//!
//! # What it runs
//! GGUF files (the llama.cpp / ollama format, quantized or not) whose tokenizer the file itself
//! describes, of the families `general.architecture` names: `llama` (Llama 2 and 3,
//! TinyLlama, Mistral, SmolLM), `qwen2` (Qwen 2 and 2.5), `phi3` (Phi-3 mini with its 4k
//! rotary embedding) and `gemma3`; with a byte-level BPE tokenizer (`tokenizer.ggml.model`
//! `gpt2`: GPT-2, Llama 3, Qwen 2 pre-tokenizers) or a SentencePiece one (`llama`). Anything
//! else is refused at load with the reason ([`LlmError::Unsupported`]). The transformers are
//! candle's (`candle-transformers`), except Gemma 3, which candle gets wrong and which is
//! written here on candle's kernels (`gemma3.rs` says how it differs); the tokenizer is Hugging
//! Face's (`tokenizers`, built from the file's vocabulary: `tokenizer.rs`). Every family is
//! checked against llama.cpp's logits on the same file (`tests/dev_model.rs`).
//!
//! # Determinism
//! A request decodes the same tokens on every run ([`Sampling`]):
//! - temperature 0 is greedy: the highest logit, the lowest token id on a tie;
//! - temperature `t > 0` (hundredths) samples from `softmax(logits / (t / 100))`, with the
//!   uniform numbers drawn from `keccak256(seed ‖ step)`; the seed is the request key, so the
//!   same request gives the same tokens and a different request other ones;
//! - `max_tokens` bounds the tokens generated exactly; a stop sequence ends the answer at its
//!   first occurrence in the decoded text and is not part of it; an end-of-sequence token
//!   ends it too.
//!
//! Logits come from candle's CPU kernels, one thread per run unless the operator says
//! otherwise ([`pin_threads`]); whether they are bit-identical across thread counts is a
//! property of those kernels, measured rather than assumed (`pipe bench llm`, `docs/llm.md`).
//! Replay never depends on it: blocks carry the committed answer.
//!
//! # Chats
//! Messages become a prompt through the model's own chat template, run by minijinja
//! ([`LlmModel::render_chat`]); tool calls come back out of the answer in the
//! forms Qwen / Hermes, Llama 3.x and Mistral models write them ([`parse_tool_calls`]).
//!
//! # Hostile files and inputs
//! A model file is attacker-chosen bytes: candle's GGUF reader bounds what it allocates by
//! the file's size, and loading and generation also run under `catch_unwind`, so a file that
//! trips a panic in a dependency is an error, never a crash of the node. What `catch_unwind`
//! cannot stop is an allocation too large to make, which aborts: the shapes candle allocates
//! from before it reads a weight (layers, widths, context) are checked or capped first, and a
//! SentencePiece vocabulary's pieces are bounded in length (finding their splits is quadratic).
//! candle also keeps an attention mask per shape of run it has seen, for the life of the
//! loaded model: prompts run in pieces of power-of-two lengths at aligned positions, so that is
//! at most 54 MB of masks at a context of 4096, never one mask per prompt length.

mod chat;
mod describe;
mod error;
mod gemma3;
mod generate;
mod model;
#[cfg(feature = "test-utils")]
pub mod test_utils;
mod threads;
mod tokenizer;

pub use chat::{MAX_RENDERED_BYTES, Message, Tool, ToolCall, parse_tool_calls};
pub use describe::{MAX_TOKENS_CAP, derived_units_per_token, describe};
pub use error::LlmError;
pub use generate::{Finish, Generation, Request, Sampling};
pub use model::{Architecture, LlmMeta, LlmModel, is_gguf};
pub use threads::{DEFAULT_THREADS, pin_threads, threads};

//! Loading a GGUF file: the family's weights through candle, the tokenizer from the file's own
//! vocabulary, and what generation needs to know (context, end tokens, chat template).

use std::io::Cursor;

use candle_core::{Device, Tensor, quantized::gguf_file};
use candle_transformers::models::{quantized_llama, quantized_phi3, quantized_qwen2};
use parking_lot::Mutex;

use crate::{LlmError, error::guarded};

/// The families this runtime runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `llama`: Llama 2 and 3, TinyLlama, Mistral, SmolLM (byte-level BPE or SentencePiece
    /// vocabularies).
    Llama,
    /// `qwen2`: Qwen 2 and 2.5.
    Qwen2,
    /// `phi3`: Phi-3 mini with its 4k-context rotary embedding (the long-context
    /// files' scaled rotary factors are refused).
    Phi3,
    /// `gemma3`: Gemma 3 (our model on candle's operators: candle's own differs from it).
    Gemma3,
}

impl Architecture {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// What a loaded model says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmMeta {
    pub architecture: Architecture,
    /// Most tokens (prompt and answer together) one run may hold.
    pub context_length: usize,
    pub vocab_size: usize,
    /// Tokens that end an answer (end of sequence, end of turn).
    pub end_tokens: Vec<u32>,
    /// The chat template the file carries (`tokenizer.chat_template`), Jinja.
    pub chat_template: Option<String>,
    /// The beginning-of-sequence token, when the file names one.
    pub bos_token: Option<u32>,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// Weights in the file (elements, whatever their quantization): what a token costs.
    pub parameters: u64,
}

/// Whether `bytes` start as a GGUF file does (its magic, `GGUF`): how an upload is told
/// apart from an ONNX file before either parser sees it.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"GGUF")
}

/// candle's weights of one family. Generation holds them one run at a time: the attention
/// cache lives inside them.
enum Weights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
    Gemma3(Box<crate::gemma3::Gemma3>),
}

impl Weights {
    pub(crate) fn clear(&mut self) {
        match self {
            Self::Llama(w) => w.clear_kv_cache(),
            Self::Qwen2(w) => w.clear_kv_cache(),
            // Its cache starts over at position 0, which every run begins with.
            Self::Phi3(_) => {}
            Self::Gemma3(w) => w.clear_kv_cache(),
        }
    }

    /// The logits of the position after `tokens`, which start at position `index`.
    fn forward(&mut self, tokens: &[u32], index: usize) -> Result<Vec<f32>, LlmError> {
        let mut run = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
            let logits = match self {
                Self::Llama(w) => w.forward(&x, index)?,
                Self::Qwen2(w) => w.forward(&x, index)?,
                Self::Phi3(w) => w.forward(&x, index)?,
                Self::Gemma3(w) => w.forward(&x, index)?,
            };
            logits
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()
        };
        run().map_err(|e| LlmError::Run(e.to_string()))
    }
}

/// A language model ready to answer.
pub struct LlmModel {
    meta: LlmMeta,
    tokenizer: crate::tokenizer::TextCodec,
    weights: Mutex<Weights>,
}

impl std::fmt::Debug for LlmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmModel")
            .field("meta", &self.meta)
            .finish()
    }
}

/// The largest context candle's Llama runs (its rotary tables are this long), and the most a
/// Phi-3 or Gemma 3 is given (candle's Phi-3 allocates its attention cache for the whole
/// context up front; rotary tables are this long).
const LLAMA_MAX_CONTEXT: usize = quantized_llama::MAX_SEQ_LEN;

/// Texts of tokens that end an answer wherever a file has them, whatever its metadata says
/// (llama.cpp's list: Phi-3's `<|end|>` follows its `<|endoftext|>` end token, say).
const END_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
];

/// Most layers a file may declare (candle allocates per declared layer before it reads one).
const MAX_LAYERS: u64 = 1024;
/// Largest width, head size or rotary size a file may declare (tables are allocated from them
/// before any weight is read).
const MAX_WIDTH: u64 = 1 << 16;

/// The rotary base candle's Phi-3 is written for (it does not read the file's).
const PHI3_ROPE_BASE: f32 = 10_000.0;

impl LlmModel {
    /// Loads a GGUF file from memory.
    pub fn load(bytes: &[u8]) -> Result<Self, LlmError> {
        guarded("loading the model", || Self::load_unguarded(bytes))
    }

    fn load_unguarded(bytes: &[u8]) -> Result<Self, LlmError> {
        let mut reader = Cursor::new(bytes);
        let mut content = gguf_file::Content::read(&mut reader)
            .map_err(|e| LlmError::Malformed(e.to_string()))?;
        let text = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_string().ok())
                .cloned()
        };
        let number = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
        };
        let arch_name = text("general.architecture")
            .ok_or_else(|| LlmError::Malformed("no general.architecture".into()))?;
        let architecture = match arch_name.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "phi3" => Architecture::Phi3,
            "gemma3" => Architecture::Gemma3,
            other => {
                return Err(LlmError::Unsupported(format!(
                    "architecture `{other}` (this node runs llama, qwen2, phi3 and gemma3)"
                )));
            }
        };
        sane_shape(&content, &arch_name)?;
        let tokenizer = crate::tokenizer::from_gguf(&content)?;
        let vocab_size = tokenizer.vocab_size();
        let declared = number(&format!("{arch_name}.context_length")).map(|n| n as usize);
        let context_length = match architecture {
            Architecture::Llama => declared.unwrap_or(LLAMA_MAX_CONTEXT).min(LLAMA_MAX_CONTEXT),
            Architecture::Qwen2 => declared
                .ok_or_else(|| LlmError::Malformed("no qwen2.context_length".into()))?
                .min(LLAMA_MAX_CONTEXT),
            Architecture::Phi3 => phi3_context(&content, declared)?,
            Architecture::Gemma3 => declared
                .ok_or_else(|| LlmError::Malformed("no gemma3.context_length".into()))?
                .min(LLAMA_MAX_CONTEXT),
        };
        let mut end_tokens: Vec<u32> = [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ]
        .iter()
        .filter_map(|k| number(k))
        .filter_map(|n| u32::try_from(n).ok())
        .chain(END_TEXTS.iter().filter_map(|t| tokenizer.token_id(t)))
        .collect();
        end_tokens.sort_unstable();
        end_tokens.dedup();
        let parameters = content
            .tensor_infos
            .values()
            .map(|t| t.shape.elem_count() as u64)
            .fold(0u64, u64::saturating_add);
        let meta = LlmMeta {
            architecture,
            context_length,
            vocab_size,
            end_tokens,
            chat_template: text("tokenizer.chat_template"),
            bos_token: number("tokenizer.ggml.bos_token_id").and_then(|n| u32::try_from(n).ok()),
            name: text("general.name"),
            parameters,
        };
        let device = Device::Cpu;
        let weights = match architecture {
            Architecture::Llama => {
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, &device)
                    .map(Weights::Llama)
            }
            Architecture::Qwen2 => {
                // candle sizes its rotary tables by the declared context: the one served.
                content.metadata.insert(
                    "qwen2.context_length".into(),
                    gguf_file::Value::U32(context_length as u32),
                );
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &device)
                    .map(Weights::Qwen2)
            }
            Architecture::Phi3 => {
                // candle sizes its rotary tables and attention cache by the declared context:
                // declare the one this runtime serves.
                content.metadata.insert(
                    "phi3.context_length".into(),
                    gguf_file::Value::U32(context_length as u32),
                );
                quantized_phi3::ModelWeights::from_gguf(false, content, &mut reader, &device)
                    .map(Weights::Phi3)
            }
            Architecture::Gemma3 => {
                crate::gemma3::Gemma3::from_gguf(&content, &mut reader, context_length)
                    .map(|w| Weights::Gemma3(Box::new(w)))
            }
        }
        .map_err(|e| LlmError::Malformed(e.to_string()))?;
        Ok(Self {
            meta,
            tokenizer,
            weights: Mutex::new(weights),
        })
    }

    /// The logits of the position after `tokens` (a fresh run: the attention cache is cleared
    /// first). What generation picks from; tests compare them with other engines'.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        if tokens.is_empty() || tokens.len() > self.meta.context_length {
            return Err(LlmError::Context {
                prompt: tokens.len(),
                max_tokens: 0,
                context: self.meta.context_length,
            });
        }
        guarded("running the model", || {
            self.with_weights(|forward| prefill(forward, tokens))
        })
    }

    pub fn meta(&self) -> &LlmMeta {
        &self.meta
    }

    /// The tokens of `text`, as a prompt is encoded (with the file's BOS rule; a text that
    /// already begins with the BOS token, as chat templates write it, gets no second one).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        guarded("tokenizing", || {
            let mut ids = self.tokenizer.encode(text)?;
            if ids.len() >= 2 && ids[0] == ids[1] && Some(ids[0]) == self.meta.bos_token {
                ids.remove(0);
            }
            Ok(ids)
        })
    }

    /// The text of one token, special or not.
    pub(crate) fn token_text(&self, id: u32) -> Option<String> {
        self.tokenizer.token_text(id)
    }

    /// The text of `tokens`, special tokens left out: the pieces joined, as llama.cpp writes
    /// them.
    pub fn detokenize(&self, tokens: &[u32]) -> Result<String, LlmError> {
        self.tokenizer.decode(tokens)
    }

    /// Runs `f` with the weights, their attention cache cleared: one run at a time.
    pub(crate) fn with_weights<T>(&self, f: impl FnOnce(&mut Forward<'_>) -> T) -> T {
        let mut weights = self.weights.lock();
        weights.clear();
        let mut forward = |tokens: &[u32], index: usize| weights.forward(tokens, index);
        f(&mut forward)
    }
}

/// The context a Phi-3 file is served with, or why it is refused. candle's Phi-3 has a fixed
/// rotary base and no scaled rotary factors, and attends to the whole context: files that say
/// otherwise would be answered differently from the model's own definition (and llama.cpp's).
fn phi3_context(content: &gguf_file::Content, declared: Option<usize>) -> Result<usize, LlmError> {
    let declared = declared.ok_or_else(|| LlmError::Malformed("no phi3.context_length".into()))?;
    if content
        .tensor_infos
        .keys()
        .any(|k| k.starts_with("rope_factors"))
    {
        return Err(LlmError::Unsupported(
            "a long-context Phi-3 (scaled rotary factors); its 4k-context sibling runs".into(),
        ));
    }
    if let Some(base) = content
        .metadata
        .get("phi3.rope.freq_base")
        .and_then(|v| v.to_f32().ok())
        && base != PHI3_ROPE_BASE
    {
        return Err(LlmError::Unsupported(format!(
            "a Phi-3 with rotary base {base} (this runtime's Phi-3 uses {PHI3_ROPE_BASE})"
        )));
    }
    let window = content
        .metadata
        .get("phi3.attention.sliding_window")
        .and_then(|v| v.to_u32().ok())
        .filter(|w| *w > 0)
        .map_or(usize::MAX, |w| w as usize);
    // Within the sliding window, windowed and full attention are the same thing.
    Ok(declared.min(window).min(LLAMA_MAX_CONTEXT))
}

/// Refuses shapes candle would allocate from before reading a weight: more layers than the file
/// has, or widths no model has (an allocation that large aborts the process, which no
/// `catch_unwind` stops).
fn sane_shape(content: &gguf_file::Content, arch: &str) -> Result<(), LlmError> {
    let get = |key: &str| {
        content
            .metadata
            .get(&format!("{arch}.{key}"))
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
    };
    let malformed = |why: String| Err(LlmError::Malformed(why));
    let layers = get("block_count").unwrap_or(0);
    if layers == 0 || layers > MAX_LAYERS {
        return malformed(format!("{layers} layers"));
    }
    let last = format!("blk.{}.", layers - 1);
    if !content.tensor_infos.keys().any(|k| k.starts_with(&last)) {
        return malformed(format!("{layers} layers declared, fewer in the file"));
    }
    for key in [
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
        "rope.dimension_count",
    ] {
        if let Some(n) = get(key)
            && (n == 0 || n > MAX_WIDTH)
        {
            return malformed(format!("{arch}.{key} is {n}"));
        }
    }
    Ok(())
}

/// One step of a run: the logits after `tokens`, which start at the given position.
pub(crate) type Forward<'a> = dyn FnMut(&[u32], usize) -> Result<Vec<f32>, LlmError> + 'a;

/// The logits after `tokens`, run from position 0 in pieces whose lengths are the powers of
/// two that sum to the prompt's length, largest first (13 tokens: 8, 4, 1).
///
/// Why not one pass: candle keeps an attention mask for every (tokens at once, positions so
/// far) pair it has seen, for as long as the model is loaded, so one pass per prompt would
/// keep a mask per distinct prompt length (gigabytes at a context of 4096, were every length
/// to come by). In these pieces a piece of 2^k tokens starts at a multiple of 2^(k+1), so a
/// model holds at most (context / 2)^2 bytes of masks per power of two: 54 MB at 4096. And the
/// prompt still takes at most 13 passes. Every run of a prompt goes the same way, so its
/// logits are the same on every node.
pub(crate) fn prefill(forward: &mut Forward<'_>, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
    let mut logits = Vec::new();
    let mut start = 0;
    for bit in (0..usize::BITS).rev() {
        let piece = 1usize << bit;
        if tokens.len() & piece != 0 {
            logits = forward(&tokens[start..start + piece], start)?;
            start += piece;
        }
    }
    if logits.is_empty() {
        return Err(LlmError::Tokenizer("no tokens to run".into()));
    }
    Ok(logits)
}

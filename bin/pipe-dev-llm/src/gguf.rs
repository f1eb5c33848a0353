//! Writing the trained model as a GGUF file of the `llama` architecture, f32 weights, with its
//! tokenizer (`gpt2` byte-level BPE, pre-tokenizer `qwen2`), its end token and a chat
//! template: everything a GGUF reader (pipe's, llama.cpp's) needs, nothing read from
//! elsewhere.

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

use crate::{
    model::{Llama, RMS_EPS, ROPE_BASE},
    tokenizer::Vocabulary,
};

/// A chat is the conversation's turns, each ended by the end token, so the model answers a
/// chat with the verse it finds most likely to follow.
pub const CHAT_TEMPLATE: &str =
    "{%- for message in messages %}{{ message.content }}<|endoftext|>{%- endfor %}";

/// The GGUF bytes of `model` with `vocab`, named `name`.
pub fn write(model: &Llama, vocab: &Vocabulary, name: &str) -> anyhow::Result<Vec<u8>> {
    use gguf_file::Value;
    let s = model.shape;
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    // llama.cpp's token types: 1 normal, 3 control (the end token).
    let types = Value::Array(
        (0..vocab.tokens.len())
            .map(|i| Value::I32(if i as u32 == vocab.eos { 3 } else { 1 }))
            .collect(),
    );
    let u32v = |n: usize| Value::U32(n as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String(name.into())),
        ("general.license", Value::String("MIT OR Apache-2.0".into())),
        ("llama.context_length", u32v(s.context)),
        ("llama.embedding_length", u32v(s.dim)),
        ("llama.feed_forward_length", u32v(s.hidden)),
        ("llama.block_count", u32v(s.layers)),
        ("llama.attention.head_count", u32v(s.heads)),
        ("llama.attention.head_count_kv", u32v(s.kv_heads)),
        ("llama.rope.dimension_count", u32v(s.head_dim())),
        ("llama.rope.freq_base", Value::F32(ROPE_BASE)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(RMS_EPS as f32),
        ),
        ("llama.vocab_size", u32v(vocab.tokens.len())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("qwen2".into())),
        ("tokenizer.ggml.tokens", strings(&vocab.tokens)),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.merges", strings(&vocab.merges)),
        ("tokenizer.ggml.eos_token_id", Value::U32(vocab.eos)),
        ("tokenizer.ggml.bos_token_id", Value::U32(vocab.eos)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        (
            "tokenizer.chat_template",
            Value::String(CHAT_TEMPLATE.into()),
        ),
    ];
    let tensors = model
        .weights
        .iter()
        .map(|w| {
            Ok((
                w.name.as_str(),
                QTensor::quantize(w.var.as_tensor(), GgmlDType::F32)?,
            ))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors)?;
    Ok(out.into_inner())
}

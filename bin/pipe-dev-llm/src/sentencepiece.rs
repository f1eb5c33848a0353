//! The dev model again, with a SentencePiece vocabulary: the form Llama 2, TinyLlama and
//! Mistral files take (`tokenizer.ggml.model = llama`), so that path is checked against
//! llama.cpp on a model that writes real text, not on noise.
//!
//! The weights are the trained model's, unchanged, and every token keeps its id: a byte-level
//! BPE token becomes the SentencePiece piece of the same text (`▁` for a space), ranked by its
//! id (a later merge scores lower, as SentencePiece's BPE trainer ranks pieces). Single bytes
//! that are not printable ASCII become byte tokens (`<0x0A>`); a token that is only part of a
//! UTF-8 character cannot be a piece and is marked unused. The end token also begins a text
//! (`add_bos_token`), as a verse followed one in training.

use anyhow::{Context, bail};
use candle_core::{
    Device,
    quantized::{QTensor, gguf_file},
};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The pieces, scores and types for the byte-level tokens `tokens` (`control` ids kept).
pub fn pieces(tokens: &[String], control: &[u32]) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let chars = pipe_llm::test_utils::byte_chars();
    let byte_of = |c: char| chars.iter().position(|x| *x == c).map(|b| b as u8);
    let mut pieces = Vec::with_capacity(tokens.len());
    let mut scores = Vec::with_capacity(tokens.len());
    let mut types = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let bytes: Option<Vec<u8>> = token.chars().map(byte_of).collect();
        let (piece, kind) = match bytes {
            _ if control.contains(&(i as u32)) => (token.clone(), CONTROL),
            Some(b) if b.len() == 1 && !(0x20..=0x7E).contains(&b[0]) => {
                (format!("<0x{:02X}>", b[0]), BYTE)
            }
            Some(b) => match String::from_utf8(b) {
                Ok(text) if !text.chars().any(char::is_control) => {
                    (text.replace(' ', "\u{2581}"), NORMAL)
                }
                _ => (format!("<unused{i}>"), UNUSED),
            },
            None => (format!("<unused{i}>"), UNUSED),
        };
        scores.push(if kind == NORMAL { -(i as f32) } else { 0.0 });
        pieces.push(piece);
        types.push(kind);
    }
    (pieces, scores, types)
}

/// `gguf` (the dev model) rewritten with a SentencePiece vocabulary.
pub fn rewrite(gguf: &[u8]) -> anyhow::Result<Vec<u8>> {
    use gguf_file::Value;
    let mut reader = std::io::Cursor::new(gguf);
    let content = gguf_file::Content::read(&mut reader)?;
    let meta = |k: &str| content.metadata.get(k).with_context(|| format!("no {k}"));
    let Value::Array(tokens) = meta("tokenizer.ggml.tokens")? else {
        bail!("tokenizer.ggml.tokens is not a list");
    };
    let tokens: Vec<String> = tokens
        .iter()
        .map(|t| Ok(t.to_string()?.clone()))
        .collect::<candle_core::Result<_>>()?;
    let eos = meta("tokenizer.ggml.eos_token_id")?.to_u32()?;
    let (pieces, scores, types) = pieces(&tokens, &[eos]);
    let mut metadata: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer.ggml.") && *k != "general.name")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let list = |v: Vec<Value>| Value::Array(v);
    metadata.extend([
        (
            "general.name".into(),
            Value::String("pipe dev KJV llama, SentencePiece vocabulary".into()),
        ),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            list(pieces.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            list(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            list(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(eos)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(true)),
    ]);
    // Keys and tensors in name order: the same input writes the same bytes.
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors = names
        .iter()
        .map(|n| Ok(((*n).clone(), content.tensor(&mut reader, n, &Device::Cpu)?)))
        .collect::<candle_core::Result<Vec<(String, QTensor)>>>()?;
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_ids_and_become_pieces() {
        let chars = pipe_llm::test_utils::byte_chars();
        let bl = |s: &[u8]| s.iter().map(|b| chars[*b as usize]).collect::<String>();
        let tokens = vec![
            bl(b"a"),
            bl(b" "),
            bl(b"\n"),
            bl(b" the"),
            bl(&[0xC3]),
            bl("é".as_bytes()),
            "<|endoftext|>".to_string(),
        ];
        let (p, s, t) = pieces(&tokens, &[6]);
        assert_eq!(
            p,
            ["a", "▁", "<0x0A>", "▁the", "<0xC3>", "é", "<|endoftext|>"]
        );
        assert_eq!(t, [NORMAL, NORMAL, BYTE, NORMAL, BYTE, NORMAL, CONTROL]);
        assert!(s[3] > s[5], "an earlier token scores higher");
    }
}

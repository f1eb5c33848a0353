//! The tokenizer a GGUF file describes, as a Hugging Face `tokenizers` pipeline.
//!
//! Two kinds of vocabulary are in the files people have (`tokenizer.ggml.model`):
//! - `gpt2`: byte-level BPE with its merges (Llama 3, Qwen 2, SmolLM). candle builds it.
//! - `llama`: SentencePiece (Llama 2, TinyLlama, Mistral, Vicuna). The file keeps pieces
//!   (`▁` for a space), a score per piece and its type, and no merges: llama.cpp tokenizes by
//!   repeatedly joining the adjacent pair whose join is a piece, the highest-scoring join
//!   first (the leftmost on a tie), and spells characters no piece covers as byte tokens
//!   (`<0x0A>`). That is byte-pair encoding whose merge ranks follow the joined piece's
//!   score, which is how it is built here: every split of every piece into two pieces is a
//!   merge, ranked by the whole piece's score. The text is prefixed with a space (unless the
//!   file says `add_space_prefix` false) and its spaces written as `▁`. Decoding is
//!   llama.cpp's: every token's bytes (a byte token's byte, a piece's text with `▁` as a
//!   space, nothing for a special) joined, then read as UTF-8, each invalid sequence one
//!   U+FFFD.
//!
//! Both are checked against llama.cpp on the same files (`fixtures/models/*.reference.json`,
//! `tests/dev_model.rs`).

use candle_core::quantized::{gguf_file, tokenizer::TokenizerFromGguf};
use tokenizers::{
    AddedToken, NormalizerWrapper, Tokenizer,
    models::bpe::{BPE, Vocab},
    normalizers::{Prepend, Replace, Sequence as Normalizers},
    processors::template::TemplateProcessing,
};

use crate::LlmError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const BYTE: i64 = 6;

/// SentencePiece's space.
const SPACE: &str = "\u{2581}";

/// The most merges a SentencePiece vocabulary may expand to: every split of every piece is
/// one, so a hostile file of long pieces could otherwise ask for a quadratic table.
const MAX_MERGES: usize = 4_000_000;
/// The longest piece read, in bytes: finding a piece's splits hashes each half, so the work
/// grows with the square of its length (real vocabularies' longest pieces are tens of bytes).
const MAX_PIECE_BYTES: usize = 256;

/// A file's tokenizer: text to tokens through `tokenizers`, tokens to text as llama.cpp
/// writes it.
pub(crate) struct TextCodec {
    tokenizer: Tokenizer,
    /// Every token's bytes in an answer: a normal token's text (byte-level characters mapped
    /// back to bytes; SentencePiece's `▁` as a space; a byte token its byte), a user-defined
    /// token's text as it is (Qwen's `<tool_call>` is one: a model's words, not markup), and
    /// nothing for control, unknown and unused tokens.
    pieces: Vec<Vec<u8>>,
}

impl TextCodec {
    /// The tokens of `text`, with the file's BOS rule.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// The text of `tokens`, special tokens left out.
    pub(crate) fn decode(&self, tokens: &[u32]) -> Result<String, LlmError> {
        let mut bytes = Vec::new();
        for t in tokens {
            let piece = self
                .pieces
                .get(*t as usize)
                .ok_or_else(|| LlmError::Tokenizer(format!("no token {t}")))?;
            bytes.extend_from_slice(piece);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The id of the token whose text is `text`.
    pub(crate) fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }

    /// The text of one token, special or not.
    pub(crate) fn token_text(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// The tokenizer `content` describes.
pub(crate) fn from_gguf(content: &gguf_file::Content) -> Result<TextCodec, LlmError> {
    let kind = content
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    match kind.as_str() {
        "gpt2" => {
            let tokenizer =
                Tokenizer::from_gguf(content).map_err(|e| LlmError::Malformed(e.to_string()))?;
            let (tokens, types) = tokens_and_types(content)?;
            // The byte of each byte-level character, looked up once per character of the
            // vocabulary (a linear search of the table would be 256 steps each).
            let bytes: std::collections::HashMap<char, u8> = byte_chars()
                .into_iter()
                .enumerate()
                .map(|(b, c)| (c, b as u8))
                .collect();
            let byte_of_char = |c: char| bytes.get(&c).copied();
            let pieces = tokens
                .iter()
                .zip(&types)
                .map(|(t, ty)| match *ty {
                    NORMAL => {
                        let mut out = Vec::with_capacity(t.len());
                        for c in t.chars() {
                            match byte_of_char(c) {
                                Some(b) => out.push(b),
                                None => {
                                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                                }
                            }
                        }
                        out
                    }
                    USER_DEFINED => t.as_bytes().to_vec(),
                    _ => vec![],
                })
                .collect();
            Ok(TextCodec { tokenizer, pieces })
        }
        "llama" => sentencepiece(content),
        other => Err(LlmError::Unsupported(format!(
            "tokenizer `{other}` (this node reads byte-level BPE, `gpt2`, and SentencePiece, `llama`)"
        ))),
    }
}

fn sentencepiece(content: &gguf_file::Content) -> Result<TextCodec, LlmError> {
    let malformed = |what: &str| LlmError::Malformed(format!("SentencePiece vocabulary: {what}"));
    let meta = |key: &str| content.metadata.get(key);
    let array = |key: &str| match meta(key) {
        Some(gguf_file::Value::Array(a)) => Some(a),
        _ => None,
    };
    let (pieces, types) = tokens_and_types(content)?;
    if let Some(long) = pieces.iter().find(|p| p.len() > MAX_PIECE_BYTES) {
        return Err(LlmError::Unsupported(format!(
            "a SentencePiece piece of {} bytes (at most {MAX_PIECE_BYTES})",
            long.len()
        )));
    }
    let n = pieces.len();
    let scores: Vec<f32> = match array("tokenizer.ggml.scores") {
        Some(a) if a.len() == n => a
            .iter()
            .map(|v| v.to_f32().map_err(|_| malformed("a score is not a number")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("scores and tokens differ in number")),
        None => vec![0.0; n],
    };
    let id = |key: &str| {
        meta(key)
            .and_then(|v| v.to_u32().ok())
            .filter(|i| (*i as usize) < n)
    };
    let flag =
        |key: &str, default: bool| meta(key).and_then(|v| v.to_bool().ok()).unwrap_or(default);
    let decoded: Vec<Vec<u8>> = pieces
        .iter()
        .zip(&types)
        .map(|(p, t)| match *t {
            BYTE => byte_of(p).map_or_else(|| p.as_bytes().to_vec(), |b| vec![b]),
            NORMAL => p.replace(SPACE, " ").into_bytes(),
            // Written as they are, as llama.cpp writes them.
            USER_DEFINED => p.as_bytes().to_vec(),
            _ => vec![],
        })
        .collect();

    // The last of equal pieces has the text, as in llama.cpp's lookup.
    let mut vocab = Vocab::default();
    for (i, p) in pieces.iter().enumerate() {
        vocab.insert(p.clone(), i as u32);
    }
    let merges = merges(&pieces, &scores, &types, &vocab)?;
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = id("tokenizer.ggml.unknown_token_id") {
        builder = builder.unk_token(pieces[unk as usize].clone());
    }
    let bpe = builder.build().map_err(|e| malformed(&e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let space = Replace::new(" ", SPACE).map_err(|e| malformed(&e.to_string()))?;
    let normalizer: NormalizerWrapper = if flag("tokenizer.ggml.add_space_prefix", true) {
        Normalizers::new(vec![Prepend::new(SPACE.into()).into(), space.into()]).into()
    } else {
        space.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| malformed(&e.to_string()))?;

    // llama.cpp's SentencePiece default BOS is token 1.
    let bos = meta("tokenizer.ggml.bos_token_id")
        .map_or(Some(1), |_| id("tokenizer.ggml.bos_token_id"))
        .filter(|b| (*b as usize) < n);
    if flag("tokenizer.ggml.add_bos_token", true)
        && let Some(bos) = bos
    {
        let text = pieces[bos as usize].clone();
        let template = TemplateProcessing::builder()
            .try_single(format!("{text}:0 $A:0"))
            .and_then(|b| b.try_pair(format!("{text}:0 $A:0 {text}:1 $B:1")))
            .map_err(|e| malformed(&e.to_string()))?
            .special_tokens(vec![(text, bos)])
            .build()
            .map_err(|e| malformed(&e.to_string()))?;
        tokenizer.with_post_processor(Some(template));
    }
    // Control, unknown and user-defined pieces are found as wholes in text (a rendered chat's
    // markup), as llama.cpp finds them; unused ones are not. A file named Phi-3 gets
    // llama.cpp's rule for Phi-3: whitespace after a special token (but `<unk>`, `<s>`,
    // `<|endoftext|>`) belongs to it.
    let name = meta("general.name")
        .and_then(|v| v.to_string().ok())
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    let phi3 = name.contains("phi3") || name.contains("phi-3");
    let specials: Vec<AddedToken> = pieces
        .iter()
        .zip(&types)
        .filter(|(_, t)| matches!(**t, UNKNOWN | CONTROL | USER_DEFINED))
        .map(|(p, _)| {
            let strip = phi3 && !matches!(p.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
            AddedToken::from(p.clone(), true).rstrip(strip)
        })
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| malformed(&e.to_string()))?;
    // An answer's text is its tokens' bytes joined, as llama.cpp writes them: a leading space
    // stays (a completion continues the prompt's text).
    Ok(TextCodec {
        tokenizer,
        pieces: decoded,
    })
}

/// The file's tokens and their llama.cpp types (normal where the file gives none).
fn tokens_and_types(content: &gguf_file::Content) -> Result<(Vec<String>, Vec<i64>), LlmError> {
    let malformed = |what: &str| LlmError::Malformed(format!("vocabulary: {what}"));
    let array = |key: &str| match content.metadata.get(key) {
        Some(gguf_file::Value::Array(a)) => Some(a),
        _ => None,
    };
    let tokens: Vec<String> = array("tokenizer.ggml.tokens")
        .ok_or_else(|| malformed("no tokenizer.ggml.tokens"))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|_| malformed("a token is not text"))
        })
        .collect::<Result<_, _>>()?;
    let types: Vec<i64> = match array("tokenizer.ggml.token_type") {
        Some(a) if a.len() == tokens.len() => a
            .iter()
            .map(|v| {
                v.to_i32()
                    .map(i64::from)
                    .or_else(|_| v.to_u32().map(i64::from))
                    .map_err(|_| malformed("a token type is not a number"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("token types and tokens differ in number")),
        None => vec![NORMAL; tokens.len()],
    };
    Ok((tokens, types))
}

/// GPT-2's byte-to-character table: each byte as the printable character byte-level BPE
/// tokenizers write it as.
pub(crate) fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).expect("a valid char");
    }
    table
}

/// The byte of a byte token's text (`<0x0A>`).
fn byte_of(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// Every split of a piece into two pieces, ranked by the whole piece's score (highest first;
/// then the lower id, then the shorter left part, so the order never depends on a hash).
///
/// llama.cpp joins any two symbols whose text is a piece, and of equal scores the leftmost
/// pair first. Ranks cannot say "leftmost", so a vocabulary whose normal pieces tie in score
/// (files converted without SentencePiece scores give them all one value) is refused rather
/// than tokenized differently.
fn merges(
    pieces: &[String],
    scores: &[f32],
    types: &[i64],
    vocab: &Vocab,
) -> Result<Vec<(String, String)>, LlmError> {
    let mut ranked: Vec<(f32, u32, usize)> = Vec::new();
    let mut joined_scores: Vec<u32> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if vocab.get(piece) != Some(&(i as u32)) {
            continue;
        }
        let before = ranked.len();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                ranked.push((scores[i], i as u32, cut));
                if ranked.len() > MAX_MERGES {
                    return Err(LlmError::Unsupported(format!(
                        "a SentencePiece vocabulary of over {MAX_MERGES} merges"
                    )));
                }
            }
        }
        if ranked.len() > before && types[i] == NORMAL {
            joined_scores.push(scores[i].to_bits());
        }
    }
    joined_scores.sort_unstable();
    if joined_scores.windows(2).any(|w| w[0] == w[1]) {
        return Err(LlmError::Unsupported(
            "a SentencePiece vocabulary whose pieces tie in score (llama.cpp's leftmost-first order among them cannot be reproduced)".into(),
        ));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(ranked
        .into_iter()
        .map(|(_, i, cut)| {
            let (l, r) = pieces[i as usize].split_at(cut);
            (l.to_string(), r.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use gguf_file::Value;

    /// A SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte tokens, then pieces with
    /// descending scores.
    fn content(pieces: &[&str], add_bos: bool) -> gguf_file::Content {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![UNKNOWN, CONTROL, CONTROL];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for p in pieces {
            tokens.push(p.to_string());
            types.push(NORMAL);
        }
        let scores: Vec<Value> = (0..tokens.len())
            .map(|i| Value::F32(if types[i] == NORMAL { -(i as f32) } else { 0.0 }))
            .collect();
        let mut metadata = HashMap::new();
        metadata.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        metadata.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        );
        metadata.insert("tokenizer.ggml.scores".into(), Value::Array(scores));
        metadata.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|t| Value::I32(*t as i32)).collect()),
        );
        metadata.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
        metadata.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(0));
        metadata.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos));
        gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn pieces_of(t: &TextCodec, text: &str) -> Vec<String> {
        let ids = t.encode(text).unwrap();
        ids.iter().map(|i| t.token_text(*i).unwrap()).collect()
    }

    #[test]
    fn higher_scoring_joins_win_and_spaces_become_pieces() {
        // Joins go on while the join is a piece: "▁" + "t", "h" + "e", then "▁t" + "he".
        let t = from_gguf(&content(
            &["▁", "t", "h", "e", "a", "▁t", "he", "▁the", "▁a"],
            false,
        ))
        .unwrap();
        assert_eq!(pieces_of(&t, "the a"), ["▁the", "▁a"]);
        assert_eq!(pieces_of(&t, "ta"), ["▁t", "a"]);
        // A character no piece covers is spelled in bytes (é is C3 A9).
        assert_eq!(pieces_of(&t, "é"), ["▁", "<0xC3>", "<0xA9>"]);
        let ids = t.encode("the é").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), " the é");
        // Bytes are joined before they are read: a character split over byte tokens is
        // whole, a lone invalid byte is one U+FFFD, and control bytes stay.
        let id = |p: &str| t.tokenizer.token_to_id(p).unwrap();
        let split = [
            id("<0xC3>"),
            id("<0x1E>"),
            id("<0xC3>"),
            id("<0xA9>"),
            id("<0x0A>"),
        ];
        assert_eq!(t.decode(&split).unwrap(), "\u{FFFD}\u{1E}é\n");
    }

    #[test]
    fn the_score_not_the_order_of_discovery_ranks_a_join() {
        // "ab" scores above "bc" (a lower id), so "abc" splits as "ab" + "c".
        let t = from_gguf(&content(&["a", "b", "c", "ab", "bc", "▁"], false)).unwrap();
        assert_eq!(pieces_of(&t, "abc"), ["▁", "ab", "c"]);
        let t = from_gguf(&content(&["a", "b", "c", "bc", "ab", "▁"], false)).unwrap();
        assert_eq!(pieces_of(&t, "abc"), ["▁", "a", "bc"]);
    }

    #[test]
    fn the_bos_rule_and_control_pieces() {
        let t = from_gguf(&content(&["▁", "a"], true)).unwrap();
        assert_eq!(pieces_of(&t, "a"), ["<s>", "▁", "a"]);
        let ids = t.encode("a").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), " a", "<s> is left out");
    }

    /// A byte-level BPE vocabulary's user-defined tokens are text in an answer (Qwen's
    /// `<tool_call>`), its control tokens are not, and bytes are joined before UTF-8 is read.
    #[test]
    fn byte_level_answers_keep_user_defined_tokens() {
        let chars = byte_chars();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        let mut types = vec![NORMAL; 256];
        for (t, ty) in [("<tool_call>", USER_DEFINED), ("<|im_end|>", CONTROL)] {
            tokens.push(t.into());
            types.push(ty);
        }
        let mut metadata = HashMap::new();
        metadata.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        metadata.insert("tokenizer.ggml.pre".into(), Value::String("qwen2".into()));
        metadata.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        );
        metadata.insert("tokenizer.ggml.merges".into(), Value::Array(vec![]));
        metadata.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|t| Value::I32(*t as i32)).collect()),
        );
        let t = from_gguf(&gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        })
        .unwrap();
        let (call, end) = (256, 257);
        let ids = t.encode("a<tool_call>é").unwrap();
        assert_eq!(
            ids,
            [u32::from(b'a'), call, 0xC3, 0xA9],
            "the tag is one token"
        );
        let mut answer = ids.clone();
        answer.push(end);
        assert_eq!(t.decode(&answer).unwrap(), "a<tool_call>é");
        assert_eq!(t.decode(&[0xC3, u32::from(b'a')]).unwrap(), "\u{FFFD}a");
    }

    #[test]
    fn hostile_vocabularies_are_refused_not_trusted() {
        let mut c = content(&["a"], false);
        c.metadata.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(vec![Value::F32(0.0)]),
        );
        assert!(matches!(from_gguf(&c), Err(LlmError::Malformed(_))));
        let mut c = content(&["a"], false);
        c.metadata
            .insert("tokenizer.ggml.model".into(), Value::String("t5".into()));
        assert!(matches!(from_gguf(&c), Err(LlmError::Unsupported(_))));
        // Pieces tied in score cannot be ranked as llama.cpp orders them.
        let mut c = content(&["a", "b", "ab", "ba"], false);
        let n = 3 + 256 + 4;
        c.metadata.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(vec![Value::F32(-1000.0); n]),
        );
        assert!(matches!(from_gguf(&c), Err(LlmError::Unsupported(_))));
        // A piece long enough to make finding its splits costly is refused.
        let long = "x".repeat(MAX_PIECE_BYTES + 1);
        let c = content(&["x", long.as_str()], false);
        assert!(matches!(from_gguf(&c), Err(LlmError::Unsupported(_))));
        // An out-of-range BOS id is ignored, not indexed.
        let mut c = content(&["a"], true);
        c.metadata
            .insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1 << 30));
        assert!(from_gguf(&c).is_ok());
    }
}

//! The tokenizer: byte-level BPE trained by Hugging Face `tokenizers` on the corpus, with the
//! pre-tokenizer GGUF files call `qwen2` (Qwen 2's split regex, then GPT-2's byte-to-character
//! map). That is the pipeline candle builds from a GGUF file that says `tokenizer.ggml.pre =
//! qwen2`, and one llama.cpp implements, so both read the exported vocabulary as trained.

use std::collections::HashMap;

use anyhow::Context;
use tokenizers::{
    AddedToken, Tokenizer,
    models::{
        ModelWrapper, TrainerWrapper,
        bpe::{BPE, BpeTrainer},
    },
    normalizers::unicode::NFC,
    pre_tokenizers::{
        byte_level::ByteLevel,
        sequence::Sequence,
        split::{Split, SplitPattern},
    },
};

/// The end-of-sequence token: it ends every verse in training, so an answer ends with one.
pub const EOS: &str = "<|endoftext|>";

/// Qwen 2's pre-tokenizer split (as llama.cpp and candle write it).
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A trained tokenizer, and what a GGUF file says of it.
pub struct Vocabulary {
    pub tokenizer: Tokenizer,
    /// Every token by id, as byte-level strings.
    pub tokens: Vec<String>,
    /// Merges in rank order, `"left right"`.
    pub merges: Vec<String>,
    pub eos: u32,
}

/// Trains a vocabulary of `size` tokens (the 256 bytes and [`EOS`] included) on `texts`.
pub fn train(texts: &[String], size: usize) -> anyhow::Result<Vocabulary> {
    let split = Split::new(
        SplitPattern::Regex(QWEN2_SPLIT.into()),
        tokenizers::SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow::anyhow!("the split pattern: {e}"))?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_normalizer(Some(NFC))
        .map_err(|e| anyhow::anyhow!("the normalizer: {e}"))?;
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, false)));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    let model = serde_json::to_value(tokenizer.get_model())?;
    let vocab: HashMap<String, u32> = serde_json::from_value(model["vocab"].clone())?;
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in &vocab {
        *tokens
            .get_mut(*id as usize)
            .context("vocabulary ids are not dense")? = token.clone();
    }
    let merges = model["merges"]
        .as_array()
        .context("no merges")?
        .iter()
        .map(|m| match m {
            // Newer versions write a pair, older ones one string with a space.
            serde_json::Value::Array(pair) => pair
                .iter()
                .map(|s| s.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .map(|p| p.join(" ")),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .context("a merge that is neither a pair nor a string")?;
    let eos = *vocab.get(EOS).context("EOS is not in the vocabulary")?;
    anyhow::ensure!(
        matches!(tokenizer.get_model(), ModelWrapper::BPE(_)),
        "not a BPE model"
    );
    Ok(Vocabulary {
        tokenizer,
        tokens,
        merges,
        eos,
    })
}

impl Vocabulary {
    /// The corpus as one token stream: each text, then [`EOS`].
    pub fn encode_all(&self, texts: &[String]) -> anyhow::Result<Vec<u32>> {
        let mut out = Vec::new();
        for t in texts {
            let e = self
                .tokenizer
                .encode(t.as_str(), false)
                .map_err(|e| anyhow::anyhow!("encoding: {e}"))?;
            out.extend_from_slice(e.get_ids());
            out.push(self.eos);
        }
        Ok(out)
    }
}

//! Decoding: the loop that turns a prompt into an answer, deterministically.

use alloy_primitives::{B256, keccak256};

use crate::{LlmError, LlmModel, error::guarded};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// The highest logit (the lowest token id on a tie): temperature 0.
    Greedy,
    /// From `softmax(logits / (temperature / 100))`, with uniform numbers drawn from
    /// `keccak256(seed ‖ step)`.
    Seeded {
        /// Hundredths, 1..=100 (OpenGradient's `uint32 temperature`).
        temperature: u32,
        seed: B256,
    },
}

impl Sampling {
    /// The rule for a request's temperature (hundredths) and key.
    pub fn new(temperature: u32, seed: B256) -> Self {
        if temperature == 0 {
            Self::Greedy
        } else {
            Self::Seeded { temperature, seed }
        }
    }
}

/// One generation.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub prompt: &'a str,
    /// Tokens generated at most.
    pub max_tokens: u32,
    /// The answer ends before the first occurrence of any of these (empty ones are ignored).
    pub stop: &'a [String],
    pub sampling: Sampling,
}

/// Why the answer ended (OpenGradient's `finish_reason` words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end token or a stop sequence.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

impl Finish {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub text: String,
    /// The tokens generated (an end token is not among them; tokens after a stop sequence
    /// began may be).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish: Finish,
}

impl LlmModel {
    /// Answers `request`. The same request gives the same answer every time.
    pub fn generate(&self, request: &Request<'_>) -> Result<Generation, LlmError> {
        self.generate_until(request, None)
    }

    /// [`LlmModel::generate`], asking `stop` before each token: once it answers true the run
    /// ends with [`LlmError::Cancelled`] (a deadline passed; nobody waits for the answer).
    pub fn generate_until(
        &self,
        request: &Request<'_>,
        stop: Option<&dyn Fn() -> bool>,
    ) -> Result<Generation, LlmError> {
        guarded("generating", || self.generate_unguarded(request, stop))
    }

    fn generate_unguarded(
        &self,
        request: &Request<'_>,
        stop: Option<&dyn Fn() -> bool>,
    ) -> Result<Generation, LlmError> {
        let stopped = || stop.is_some_and(|f| f());
        let prompt = self.tokenize(request.prompt)?;
        if prompt.is_empty() {
            return Err(LlmError::Tokenizer("the prompt has no tokens".into()));
        }
        let max_tokens = request.max_tokens as usize;
        let context = self.meta().context_length;
        if prompt.len().saturating_add(max_tokens) > context {
            return Err(LlmError::Context {
                prompt: prompt.len(),
                max_tokens,
                context,
            });
        }
        let end = &self.meta().end_tokens;
        let stops: Vec<&str> = request
            .stop
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        self.with_weights(|forward| {
            let mut tokens: Vec<u32> = Vec::new();
            let mut text = String::new();
            if max_tokens == 0 {
                return Ok(self.answer(text, tokens, prompt.len(), Finish::Length));
            }
            // The prompt in power-of-two pieces; then one token at a time.
            let mut logits = crate::model::prefill(forward, &prompt)?;
            for step in 0..max_tokens {
                if stopped() {
                    return Err(LlmError::Cancelled);
                }
                let next = pick(&logits, request.sampling, step as u64)?;
                if end.contains(&next) {
                    return Ok(self.answer(text, tokens, prompt.len(), Finish::Stop));
                }
                tokens.push(next);
                text = self.detokenize(&tokens)?;
                if let Some(cut) = stops.iter().filter_map(|s| text.find(s)).min() {
                    text.truncate(cut);
                    return Ok(self.answer(text, tokens, prompt.len(), Finish::Stop));
                }
                if tokens.len() == max_tokens {
                    break;
                }
                logits = forward(&[next], prompt.len() + tokens.len() - 1)?;
            }
            Ok(self.answer(text, tokens, prompt.len(), Finish::Length))
        })
    }

    fn answer(
        &self,
        text: String,
        tokens: Vec<u32>,
        prompt_tokens: usize,
        finish: Finish,
    ) -> Generation {
        Generation {
            text,
            tokens,
            prompt_tokens,
            finish,
        }
    }
}

/// The next token by `sampling` at decoding step `step`.
fn pick(logits: &[f32], sampling: Sampling, step: u64) -> Result<u32, LlmError> {
    if logits.is_empty() || logits.iter().any(|l| l.is_nan()) {
        return Err(LlmError::Run("the model's logits are not numbers".into()));
    }
    let argmax = || {
        let mut best = 0usize;
        for (i, l) in logits.iter().enumerate() {
            if *l > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    let Sampling::Seeded { temperature, seed } = sampling else {
        return Ok(argmax());
    };
    let t = f64::from(temperature.min(100)) / 100.0;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|l| ((*l as f64 - max) / t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if !total.is_finite() || total <= 0.0 {
        return Ok(argmax());
    }
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(seed.as_slice());
    input[32..].copy_from_slice(&step.to_be_bytes());
    let draw = keccak256(input);
    let bits = u64::from_be_bytes(draw.0[..8].try_into().expect("8 bytes")) >> 11;
    let mut target = (bits as f64 / (1u64 << 53) as f64) * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return Ok(i as u32);
        }
        target -= w;
    }
    // Rounding left the draw past the end: the last token with any weight.
    Ok(weights.iter().rposition(|w| *w > 0.0).unwrap_or(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_highest() {
        assert_eq!(pick(&[1.0, 3.0, 3.0, 2.0], Sampling::Greedy, 0), Ok(1));
        assert!(pick(&[1.0, f32::NAN], Sampling::Greedy, 0).is_err());
        assert!(pick(&[], Sampling::Greedy, 0).is_err());
    }

    #[test]
    fn seeded_sampling_repeats_and_follows_the_weights() {
        let logits = [0.0f32, 1.0, 2.0, 0.5];
        let s = |seed: u8| Sampling::new(100, B256::repeat_byte(seed));
        let draws = |seed: u8| -> Vec<u32> {
            (0..2000)
                .map(|step| pick(&logits, s(seed), step).unwrap())
                .collect()
        };
        assert_eq!(draws(1), draws(1), "same seed, same draws");
        assert_ne!(draws(1), draws(2), "another seed, other draws");
        // The frequencies follow softmax(logits): token 2 is e^2 / sum ≈ 0.57.
        let twos = draws(3).iter().filter(|t| **t == 2).count() as f64 / 2000.0;
        assert!((twos - 0.574).abs() < 0.05, "{twos}");
        // A low temperature is nearly greedy.
        let cold = Sampling::new(1, B256::ZERO);
        assert!((0..200).all(|step| pick(&logits, cold, step) == Ok(2)));
    }
}

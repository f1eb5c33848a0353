//! A GGUF file as the chain describes a stored model: its id, kind and terms.

use pipe_primitives::{LlmSpec, ModelId, ModelKind, ModelMeta};

use crate::{LlmError, LlmModel};

/// The largest `max_tokens` any language model accepts: a bound on one run's time whatever
/// the model's context.
pub const MAX_TOKENS_CAP: u32 = 2048;

/// Cost units per token a model of `parameters` weights is worth at least: one per million
/// weights (a token reads every weight once), and at least one.
pub fn derived_units_per_token(parameters: u64) -> u64 {
    (parameters / 1_000_000).max(1)
}

/// Loads a GGUF file and derives the metadata a stored language model has: kind `llm`, its
/// architecture, context and `max_tokens` cap, and cost units per token (the uploader may
/// raise them above [`derived_units_per_token`], never lower them).
pub fn describe(
    bytes: &[u8],
    name: &str,
    cost_units: Option<u64>,
) -> Result<(LlmModel, ModelMeta), LlmError> {
    let model = LlmModel::load(bytes)?;
    let meta = model.meta();
    let context_length = u32::try_from(meta.context_length).unwrap_or(u32::MAX);
    let derived = derived_units_per_token(meta.parameters);
    let described = ModelMeta {
        id: ModelId::of(bytes),
        name: name.to_string(),
        size_bytes: bytes.len() as u64,
        inputs: vec![],
        outputs: vec![],
        decimals: 0,
        cost_units: cost_units.unwrap_or(0).max(derived),
        operators: vec![],
        kind: ModelKind::Llm,
        llm: Some(LlmSpec {
            architecture: meta.architecture.name().to_string(),
            context_length,
            max_tokens: context_length.min(MAX_TOKENS_CAP),
            parameters: meta.parameters,
        }),
    };
    Ok((model, described))
}

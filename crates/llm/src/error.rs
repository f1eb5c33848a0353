//! Why a model did not load or answer.

/// Why a model did not load or answer. Every variant but [`LlmError::Cancelled`] is a fact
/// about the file or the request (a contract's revert reason), not about the machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The bytes are not a GGUF file this runtime can read.
    #[error("not a readable GGUF model: {0}")]
    Malformed(String),
    /// A GGUF file of a family or tokenizer this runtime does not run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The prompt and the answer would not fit the model's context.
    #[error(
        "the prompt has {prompt} tokens and max_tokens is {max_tokens}: over the model's context of {context} tokens"
    )]
    Context {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    /// The text could not be tokenized, or tokens decoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model failed while running.
    #[error("model error: {0}")]
    Run(String),
    /// The run was stopped from outside (its deadline passed) before it ended: not a fact
    /// about the request, never an answer.
    #[error("stopped before the answer was complete")]
    Cancelled,
}

/// Runs `f`, turning a panic inside it (a dependency tripped by a crafted file) into an error.
pub(crate) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, LlmError>,
) -> Result<T, LlmError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(LlmError::Run(format!("{what} failed: {msg}")))
    })
}

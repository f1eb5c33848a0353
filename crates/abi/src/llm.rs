//! OpenGradient's language-model functions at the same address: `runLLMCompletion` and
//! `runLLMChat`, decoded, checked against the model's terms, keyed and billed from the request
//! alone.
//!
//! # Keys
//! A language-model request's canonical encoding is its function's selector followed by
//! `abi.encode(request)` (the call's calldata, re-encoded from the decoded request), and its
//! key is the keccak256 of that. The selector keeps a completion, a chat and a model request
//! apart even if their encodings could ever coincide, and tells a worker which function it is
//! given: a `ModelInferenceRequest` encoding starts with a zero word, a selector never does.
//!
//! # Checks (each failure is the revert reason)
//! `mode` is `LLMInferenceMode` (0 VANILLA, 1 TEE); the model is stored and is a language
//! model; `1 ≤ max_tokens ≤` the model's cap; `temperature ≤ 100` (hundredths); at most
//! [`MAX_STOP_SEQUENCES`] stop sequences of at most [`MAX_STOP_BYTES`] bytes; a chat has 1 to
//! [`MAX_MESSAGES`] messages, at most [`MAX_TOOLS`] tools, and a `tool_choice` of `""`,
//! `"auto"` or `"none"` (a model cannot be forced to call a tool, so `"required"` and named
//! tools are refused rather than silently ignored). Strings are valid UTF-8: the validating
//! decoder refuses anything else. Whether the prompt fits the context is known only once it is
//! tokenized: the runtime answers that with a committed failure, a fact about the request.
//!
//! # Gas
//! A language model's `cost_units` are per token. A request is billed for
//! [`billed_tokens`]: `max_tokens` plus the prompt's bytes, an upper bound on the text's own
//! tokens for the tokenizers this node runs (every token covers at least one byte, or one
//! character; a BOS token and SentencePiece's leading `▁` are not billed). It is
//! counted from the request alone, so every node, the follower without the model file
//! included, derives the same gas before anything runs, and the answer's length never changes
//! it. The chat template's own markup is not billed.

use alloy_primitives::{B256, Bytes, keccak256};
use alloy_sol_types::SolCall;
use pipe_primitives::{
    InferenceResult,
    inference::{InferenceMode, ModelId, ModelKind, ModelMeta},
};

use crate::{
    ChatMessage, InferenceCall, LLMChatRequest, LLMChatResponse, LLMCompletionResponse, Task,
    ToolCall, named_model, runLLMChatCall, runLLMCompletionCall,
};

/// Most stop sequences a request may give.
pub const MAX_STOP_SEQUENCES: usize = 8;
/// Most bytes of one stop sequence.
pub const MAX_STOP_BYTES: usize = 64;
/// Most messages in a chat.
pub const MAX_MESSAGES: usize = 64;
/// Most tools a chat may offer.
pub const MAX_TOOLS: usize = 32;

/// Whether `data` (calldata, or a canonical encoding) is a language-model call.
pub fn is_llm_call(data: &[u8]) -> bool {
    data.starts_with(&runLLMCompletionCall::SELECTOR) || data.starts_with(&runLLMChatCall::SELECTOR)
}

/// Decodes and checks a language-model call (calldata or canonical encoding: they are the
/// same bytes).
pub(crate) fn decode(
    data: &[u8],
    models: &dyn Fn(&ModelId) -> Option<ModelMeta>,
) -> Result<InferenceCall, String> {
    let (task, encoded) = if data.starts_with(&runLLMCompletionCall::SELECTOR) {
        let request = runLLMCompletionCall::abi_decode_validate(data)
            .map_err(|e| format!("malformed runLLMCompletion request: {e}"))?
            .request;
        let encoded = runLLMCompletionCall {
            request: request.clone(),
        }
        .abi_encode();
        (Task::Completion(request), encoded)
    } else {
        let request = runLLMChatCall::abi_decode_validate(data)
            .map_err(|e| format!("malformed runLLMChat request: {e}"))?
            .request;
        let encoded = runLLMChatCall {
            request: request.clone(),
        }
        .abi_encode();
        (Task::Chat(request), encoded)
    };
    let (mode, model) = check_common(&Common::of(&task), models)?;
    if let Task::Chat(request) = &task {
        check_chat(request)?;
    }
    Ok(InferenceCall {
        key: keccak256(&encoded),
        request: Bytes::from(encoded),
        mode,
        model,
        task,
    })
}

/// The fields both language-model requests have.
struct Common<'a> {
    mode: u8,
    cid: &'a str,
    max_tokens: u32,
    temperature: u32,
    stops: &'a [String],
}

impl<'a> Common<'a> {
    /// A model request has no tokens to bound (zeros).
    fn of(task: &'a Task) -> Self {
        match task {
            Task::Completion(r) => Self {
                mode: r.mode,
                cid: &r.modelCID,
                max_tokens: r.max_tokens,
                temperature: r.temperature,
                stops: &r.stop_sequence,
            },
            Task::Chat(r) => Self {
                mode: r.mode,
                cid: &r.modelCID,
                max_tokens: r.max_tokens,
                temperature: r.temperature,
                stops: &r.stop_sequence,
            },
            Task::Model { request, .. } => Self {
                mode: request.mode,
                cid: &request.modelCID,
                max_tokens: 0,
                temperature: 0,
                stops: &[],
            },
        }
    }
}

/// The `modelCID` of a language-model request, before anything else is checked.
pub(crate) fn requested_model(encoded: &[u8]) -> Result<String, String> {
    if encoded.starts_with(&runLLMCompletionCall::SELECTOR) {
        Ok(runLLMCompletionCall::abi_decode_validate(encoded)
            .map_err(|e| format!("malformed runLLMCompletion request: {e}"))?
            .request
            .modelCID)
    } else {
        Ok(runLLMChatCall::abi_decode_validate(encoded)
            .map_err(|e| format!("malformed runLLMChat request: {e}"))?
            .request
            .modelCID)
    }
}

/// The checks both functions share; the mode and the model.
fn check_common(
    request: &Common<'_>,
    models: &dyn Fn(&ModelId) -> Option<ModelMeta>,
) -> Result<(InferenceMode, ModelMeta), String> {
    let Common {
        mode,
        cid,
        max_tokens,
        temperature,
        stops,
    } = *request;
    let mode = match mode {
        0 => InferenceMode::Vanilla,
        1 => InferenceMode::Tee,
        other => return Err(format!("unknown LLMInferenceMode {other}")),
    };
    let model = named_model(cid, models)?;
    let spec = match (&model.kind, &model.llm) {
        (ModelKind::Llm, Some(spec)) => spec,
        _ => {
            return Err(format!(
                "model {} is not a language model: call runModelInference",
                model.id
            ));
        }
    };
    if max_tokens == 0 {
        return Err("max_tokens must be at least 1".into());
    }
    if max_tokens > spec.max_tokens {
        return Err(format!(
            "max_tokens {max_tokens} is over the model's cap of {}",
            spec.max_tokens
        ));
    }
    if temperature > 100 {
        return Err(format!(
            "temperature {temperature} is over 100 (it is in hundredths: 0 to 100)"
        ));
    }
    if stops.len() > MAX_STOP_SEQUENCES {
        return Err(format!(
            "{} stop sequences: at most {MAX_STOP_SEQUENCES}",
            stops.len()
        ));
    }
    if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(format!(
            "a stop sequence of {} bytes: at most {MAX_STOP_BYTES}",
            long.len()
        ));
    }
    Ok((mode, model))
}

fn check_chat(request: &LLMChatRequest) -> Result<(), String> {
    if request.messages.is_empty() {
        return Err("a chat needs at least one message".into());
    }
    if request.messages.len() > MAX_MESSAGES {
        return Err(format!(
            "{} messages: at most {MAX_MESSAGES}",
            request.messages.len()
        ));
    }
    if request.tools.len() > MAX_TOOLS {
        return Err(format!(
            "{} tools: at most {MAX_TOOLS}",
            request.tools.len()
        ));
    }
    match request.tool_choice.as_str() {
        "" | "auto" | "none" => Ok(()),
        other => Err(format!(
            "tool_choice `{other}` is not supported: \"\", \"auto\" or \"none\" (a model cannot be forced to call a tool)"
        )),
    }
}

/// The tokens a request is billed for: `max_tokens` plus the bytes of its text (the prompt;
/// a chat's message fields and tool definitions). Zero for a model request.
pub fn billed_tokens(task: &Task) -> u64 {
    let prompt: usize = match task {
        Task::Model { .. } => return 0,
        Task::Completion(r) => r.prompt.len(),
        Task::Chat(r) => {
            let calls = |m: &ChatMessage| -> usize {
                m.tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                    .sum()
            };
            let messages: usize = r
                .messages
                .iter()
                .map(|m| {
                    m.role.len() + m.content.len() + m.name.len() + m.tool_call_id.len() + calls(m)
                })
                .sum();
            let tools: usize = if r.tool_choice == "none" {
                0
            } else {
                r.tools
                    .iter()
                    .map(|t| t.description.len() + t.name.len() + t.parameters.len())
                    .sum()
            };
            messages + tools
        }
    };
    (prompt as u64).saturating_add(u64::from(Common::of(task).max_tokens))
}

/// The committed result of a completion: `LLMCompletionResponse { answer }`.
pub fn completion_result(key: B256, answer: String) -> InferenceResult {
    let response = LLMCompletionResponse { answer };
    InferenceResult::output(
        key,
        runLLMCompletionCall::abi_encode_returns(&response).into(),
    )
}

/// The committed result of a chat: the assistant's message, with the tool calls it made
/// (`finish_reason` `"tool_calls"` then).
pub fn chat_result(
    key: B256,
    finish_reason: &str,
    content: String,
    tool_calls: Vec<ToolCall>,
) -> InferenceResult {
    let finish_reason = if tool_calls.is_empty() {
        finish_reason.to_string()
    } else {
        "tool_calls".to_string()
    };
    let response = LLMChatResponse {
        finish_reason,
        message: ChatMessage {
            role: "assistant".into(),
            content,
            name: String::new(),
            tool_call_id: String::new(),
            tool_calls,
        },
    };
    InferenceResult::output(key, runLLMChatCall::abi_encode_returns(&response).into())
}

#[cfg(test)]
mod tests {
    use pipe_primitives::LlmSpec;

    use super::*;
    use crate::{LLMCompletionRequest, ToolDefinition, decode_encoded_request, decode_request};

    fn llm() -> ModelMeta {
        ModelMeta {
            id: ModelId::of(b"llm"),
            name: "tiny".into(),
            size_bytes: 3,
            inputs: vec![],
            outputs: vec![],
            decimals: 0,
            cost_units: 2,
            operators: vec![],
            kind: ModelKind::Llm,
            llm: Some(LlmSpec {
                architecture: "llama".into(),
                context_length: 128,
                max_tokens: 64,
                parameters: 1000,
            }),
        }
    }

    fn onnx() -> ModelMeta {
        ModelMeta {
            id: ModelId::of(b"onnx"),
            kind: ModelKind::Onnx,
            llm: None,
            ..llm()
        }
    }

    fn lookup(id: &ModelId) -> Option<ModelMeta> {
        [llm(), onnx()].into_iter().find(|m| m.id == *id)
    }

    fn completion(edit: impl FnOnce(&mut LLMCompletionRequest)) -> Vec<u8> {
        let mut request = LLMCompletionRequest {
            mode: 0,
            modelCID: llm().id.to_string(),
            prompt: "In the beginning".into(),
            max_tokens: 10,
            stop_sequence: vec!["\n".into()],
            temperature: 0,
        };
        edit(&mut request);
        runLLMCompletionCall { request }.abi_encode()
    }

    fn chat(edit: impl FnOnce(&mut LLMChatRequest)) -> Vec<u8> {
        let mut request = LLMChatRequest {
            mode: 1,
            modelCID: llm().id.to_string(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "hi".into(),
                name: String::new(),
                tool_call_id: String::new(),
                tool_calls: vec![],
            }],
            tools: vec![ToolDefinition {
                description: "d".into(),
                name: "n".into(),
                parameters: "{}".into(),
            }],
            tool_choice: "auto".into(),
            max_tokens: 5,
            stop_sequence: vec![],
            temperature: 70,
        };
        edit(&mut request);
        runLLMChatCall { request }.abi_encode()
    }

    #[test]
    fn keys_bills_and_round_trips() {
        let data = completion(|_| {});
        let call = decode_request(&data, &lookup).unwrap();
        assert_eq!(
            call.request.as_ref(),
            data.as_slice(),
            "calldata is canonical"
        );
        assert_eq!(call.key, keccak256(&data));
        assert_eq!(call.mode, InferenceMode::Vanilla);
        // 16 prompt bytes + 10 max tokens, 2 units each.
        assert_eq!(call.units(), 52);
        // A worker decodes the canonical encoding into the same call.
        let again = decode_encoded_request(&call.request, &lookup).unwrap();
        assert_eq!(again.key, call.key);
        assert_eq!(crate::requested_model(&call.request).unwrap(), llm().id);

        let call = decode_request(&chat(|_| {}), &lookup).unwrap();
        assert_eq!(call.mode, InferenceMode::Tee);
        // role 4 + content 2 + tool 1 + 1 + 2, + 5 max tokens.
        assert_eq!(call.units(), 2 * 15);
        let none = decode_request(&chat(|r| r.tool_choice = "none".into()), &lookup).unwrap();
        assert_eq!(none.units(), 2 * 11);
        assert_ne!(none.key, call.key);
    }

    #[test]
    fn every_bad_request_has_a_reason() {
        let bad = |data: Vec<u8>, why: &str| {
            let e = decode_request(&data, &lookup).unwrap_err();
            assert!(e.contains(why), "{e} should say {why}");
        };
        bad(completion(|r| r.mode = 2), "unknown LLMInferenceMode 2");
        bad(
            completion(|r| r.modelCID = ModelId::of(b"x").to_string()),
            "unknown model",
        );
        bad(completion(|r| r.modelCID = "nope".into()), "");
        bad(
            completion(|r| r.modelCID = onnx().id.to_string()),
            "is not a language model",
        );
        bad(completion(|r| r.max_tokens = 0), "at least 1");
        bad(
            completion(|r| r.max_tokens = 65),
            "over the model's cap of 64",
        );
        bad(completion(|r| r.temperature = 101), "temperature 101");
        bad(
            completion(|r| r.stop_sequence = vec!["x".into(); 9]),
            "stop sequences",
        );
        bad(
            completion(|r| r.stop_sequence = vec!["x".repeat(65)]),
            "65 bytes",
        );
        bad(chat(|r| r.messages.clear()), "at least one message");
        bad(chat(|r| r.tool_choice = "required".into()), "tool_choice");
        // An ONNX request naming a language model.
        let onnx_call = crate::runModelInferenceCall {
            request: crate::ModelInferenceRequest {
                mode: 0,
                modelCID: llm().id.to_string(),
                input: crate::ModelInput {
                    numbers: vec![],
                    strings: vec![],
                },
            },
        }
        .abi_encode();
        bad(onnx_call, "is a language model");
        // Invalid UTF-8 in the prompt.
        let mut data = completion(|r| r.prompt = "abcd".into());
        let at = data.windows(4).position(|w| w == b"abcd").unwrap();
        data[at] = 0xff;
        bad(data, "malformed runLLMCompletion");
    }

    #[test]
    fn results_encode_and_event_checks_them() {
        let call = decode_request(&completion(|_| {}), &lookup).unwrap();
        let result = completion_result(call.key, "answer".into());
        assert!(call.event(result.as_result().unwrap()).is_ok());
        assert!(call.event(b"junk").is_err());
        let call = decode_request(&chat(|_| {}), &lookup).unwrap();
        let tool = ToolCall {
            id: "call_0".into(),
            name: "n".into(),
            arguments: "{}".into(),
        };
        let result = chat_result(call.key, "stop", String::new(), vec![tool]);
        let response =
            runLLMChatCall::abi_decode_returns_validate(result.as_result().unwrap()).unwrap();
        assert_eq!(response.finish_reason, "tool_calls");
        assert_eq!(response.message.role, "assistant");
        assert!(call.event(result.as_result().unwrap()).is_ok());
    }
}

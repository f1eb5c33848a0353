//! A language-model request run: the prompt (a completion's text, or a chat rendered by the
//! model's template), the deterministic decoding rule, and the answer as the function's
//! return data.

use pipe_abi::{
    InferenceCall, InferenceFailure, Task, ToolCall, failure_result,
    llm::{chat_result, completion_result},
};
use pipe_inference::InferenceError;
use pipe_llm::{LlmError, LlmModel, Message, Request, Sampling, Tool};
use pipe_primitives::InferenceResult;

/// The committed result of `call` on `model`: the answer, or the reason there is none (a
/// prompt over the context, a template that fails on these messages: facts about the
/// request). `Err` only when the run was stopped before its end.
pub(crate) fn answer(
    model: &LlmModel,
    call: &InferenceCall,
    stop: Option<&dyn Fn() -> bool>,
) -> Result<InferenceResult, InferenceError> {
    let answered = match &call.task {
        Task::Completion(r) => generate(
            model,
            call,
            &r.prompt,
            r.max_tokens,
            &r.stop_sequence,
            r.temperature,
            stop,
        )
        .map(|g| completion_result(call.key, g.text)),
        Task::Chat(r) => {
            let messages: Vec<Message> = r
                .messages
                .iter()
                .map(|m| Message {
                    role: m.role.clone(),
                    content: m.content.clone(),
                    name: m.name.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                    tool_calls: m
                        .tool_calls
                        .iter()
                        .map(|c| pipe_llm::ToolCall {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        })
                        .collect(),
                })
                .collect();
            // "none": the model is not told about the tools at all.
            let tools: Vec<Tool> = if r.tool_choice == "none" {
                vec![]
            } else {
                r.tools
                    .iter()
                    .map(|t| Tool {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: t.parameters.clone(),
                    })
                    .collect()
            };
            model.render_chat(&messages, &tools).and_then(|prompt| {
                let g = generate(
                    model,
                    call,
                    &prompt,
                    r.max_tokens,
                    &r.stop_sequence,
                    r.temperature,
                    stop,
                )?;
                let (content, calls) = if tools.is_empty() {
                    (g.text, vec![])
                } else {
                    pipe_llm::parse_tool_calls(&g.text, &tools)
                };
                let calls = calls
                    .into_iter()
                    .map(|c| ToolCall {
                        id: c.id,
                        name: c.name,
                        arguments: c.arguments,
                    })
                    .collect();
                Ok(chat_result(call.key, g.finish.as_str(), content, calls))
            })
        }
        Task::Model { .. } => Err(LlmError::Unsupported(
            "a language model does not answer runModelInference".into(),
        )),
    };
    match answered {
        Ok(result) => Ok(result),
        Err(LlmError::Cancelled) => {
            Err(InferenceError::Cancelled("stopped at its deadline".into()))
        }
        Err(e) => Ok(failure_result(
            call.key,
            &InferenceFailure::BadInput(e.to_string()),
        )),
    }
}

/// One generation by the rule: greedy at temperature 0, else sampled with the request key as
/// the seed.
fn generate(
    model: &LlmModel,
    call: &InferenceCall,
    prompt: &str,
    max_tokens: u32,
    stops: &[String],
    temperature: u32,
    stop: Option<&dyn Fn() -> bool>,
) -> Result<pipe_llm::Generation, LlmError> {
    let request = Request {
        prompt,
        max_tokens,
        stop: stops,
        sampling: Sampling::new(temperature, call.key),
    };
    model.generate_until(&request, stop)
}

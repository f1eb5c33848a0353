//! Chats: messages rendered into a prompt with the model's own chat template, and the tool
//! calls a model writes read back out of its answer.
//!
//! The template is the Jinja text the GGUF file carries (`tokenizer.chat_template`), run by
//! minijinja with Python's string and dict methods (`minijinja-contrib`'s pycompat), as Hugging
//! Face's `apply_chat_template` runs it: `messages`, `tools` (when there are any),
//! `add_generation_prompt` true, `bos_token` and `eos_token`. Tool calls in messages are
//! given in the OpenAI shape templates expect (`{id, type: "function", function: {name,
//! arguments}}`, arguments parsed from their JSON); a tool's `parameters` likewise.
//!
//! A model announces a tool call in its family's words; the format read here is the one
//! Qwen 2 / 2.5 and Hermes-style templates teach: `<tool_call>{"name": ..., "arguments":
//! {...}}</tool_call>`, any number of them. Text outside the tags is the message's content.

use serde_json::{Value as Json, json};

use crate::{LlmError, LlmModel};

/// One message of a chat (OpenGradient's `ChatMessage`; empty strings mean "absent").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
    pub name: String,
    pub tool_call_id: String,
    pub tool_calls: Vec<ToolCall>,
}

/// A tool call (OpenGradient's `ToolCall`): `arguments` is JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A tool the model may call (OpenGradient's `ToolDefinition`): `parameters` is a JSON
/// schema, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: String,
}

/// Most bytes a rendered prompt may have (a template is code from a file: bounded output).
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

fn json_or_text(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

impl LlmModel {
    /// The prompt for `messages` (and `tools`) by the model's chat template.
    pub fn render_chat(&self, messages: &[Message], tools: &[Tool]) -> Result<String, LlmError> {
        let template = self
            .meta()
            .chat_template
            .as_deref()
            .ok_or_else(|| LlmError::Unsupported("the model has no chat template".into()))?;
        let messages: Vec<Json> = messages
            .iter()
            .map(|m| {
                let mut v = json!({"role": m.role, "content": m.content});
                if !m.name.is_empty() {
                    v["name"] = json!(m.name);
                }
                if !m.tool_call_id.is_empty() {
                    v["tool_call_id"] = json!(m.tool_call_id);
                }
                if !m.tool_calls.is_empty() {
                    v["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function", "function": {
                                "name": c.name, "arguments": json_or_text(&c.arguments)}})
                        })
                        .collect();
                }
                v
            })
            .collect();
        let tools: Vec<Json> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t.name,
                    "description": t.description, "parameters": json_or_text(&t.parameters)}})
            })
            .collect();
        let special = |id: Option<u32>| id.and_then(|id| self.token_text(id)).unwrap_or_default();
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // Templates that print today's date get a fixed one: a prompt must not depend on when
        // (or where) it was rendered.
        env.add_function("strftime_now", |_format: String| "01 Jan 2025".to_string());
        env.add_template("chat", template)
            .map_err(|e| LlmError::Unsupported(format!("chat template: {e}")))?;
        let ctx = minijinja::context! {
            messages => minijinja::Value::from_serialize(&messages),
            tools => if tools.is_empty() { minijinja::Value::UNDEFINED } else { minijinja::Value::from_serialize(&tools) },
            add_generation_prompt => true,
            bos_token => special(self.meta().bos_token),
            eos_token => special(self.meta().end_tokens.first().copied()),
        };
        let rendered = env
            .get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| LlmError::Tokenizer(format!("chat template: {e}")))?;
        if rendered.len() > MAX_RENDERED_BYTES {
            return Err(LlmError::Tokenizer(format!(
                "the chat renders to {} bytes, over {MAX_RENDERED_BYTES}",
                rendered.len()
            )));
        }
        Ok(rendered)
    }
}

/// The tool calls in a model's answer, and the text around them. Calls are numbered
/// `call_0`, `call_1`, ... in order; a tag whose JSON has no `name` is left as text.
pub fn parse_tool_calls(answer: &str) -> (String, Vec<ToolCall>) {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let body = after[..end].trim();
        let parsed: Option<(String, String)> =
            serde_json::from_str::<Json>(body).ok().and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                let args = v.get("arguments").cloned().unwrap_or(json!({}));
                let args = match args {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                Some((name, args))
            });
        match parsed {
            Some((name, arguments)) => {
                content.push_str(&rest[..start]);
                calls.push(ToolCall {
                    id: format!("call_{}", calls.len()),
                    name,
                    arguments,
                });
            }
            None => content.push_str(&rest[..start + OPEN.len() + end + CLOSE.len()]),
        }
        rest = &after[end + CLOSE.len()..];
    }
    content.push_str(rest);
    (content.trim().to_string(), calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_read_out_of_the_answer() {
        let (content, calls) = parse_tool_calls(
            "Let me look.\n<tool_call>\n{\"name\": \"price\", \"arguments\": {\"asset\": \"ETH\"}}\n</tool_call><tool_call>{\"name\":\"time\"}</tool_call>",
        );
        assert_eq!(content, "Let me look.");
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "price".into(),
                    arguments: "{\"asset\":\"ETH\"}".into()
                },
                ToolCall {
                    id: "call_1".into(),
                    name: "time".into(),
                    arguments: "{}".into()
                },
            ]
        );
        let (content, calls) = parse_tool_calls("no calls <tool_call>not json</tool_call> here");
        assert!(calls.is_empty());
        assert_eq!(content, "no calls <tool_call>not json</tool_call> here");
        let (content, calls) = parse_tool_calls("unclosed <tool_call>{\"name\":\"x\"}");
        assert!(calls.is_empty());
        assert_eq!(content, "unclosed <tool_call>{\"name\":\"x\"}");
    }
}

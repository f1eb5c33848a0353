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
//! A model announces a tool call in its family's words ([`parse_tool_calls`]):
//! - Qwen 2 / 2.5 and Hermes-style templates: `<tool_call>{"name": ..., "arguments": {...}}
//!   </tool_call>`, any number of them; text outside the tags is the message's content;
//! - Llama 3.x: the whole answer is the call, `{"name": ..., "parameters": {...}}` (after
//!   `<|python_tag|>` when the template asks for it), or several separated by `;`;
//! - Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (the marker is a control
//!   token, so an answer usually holds just the list); from the v11 tokenizer on (Mistral
//!   Small 3.1, Devstral), `[TOOL_CALLS]name[ARGS]{...}` per call, which reads
//!   `name{...}name{...}` once the control tokens are left out.
//!
//! The last two are bare JSON (or names and JSON), which an ordinary answer can be too: they
//! count as calls only when every name is one of the tools the request offered.

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

/// The tool calls in a model's answer to a chat that offered `tools`, and the text around
/// them, in any of the families' forms (module docs). Calls are numbered `call_0`, `call_1`,
/// ... in order; a tag whose JSON has no `name` is left as text.
pub fn parse_tool_calls(answer: &str, tools: &[Tool]) -> (String, Vec<ToolCall>) {
    let offered = |name: &str| tools.iter().any(|t| t.name == name);
    let (content, calls) = tagged_calls(answer, &offered);
    if !calls.is_empty() {
        return (content, calls);
    }
    let body = answer.trim();
    let body = body.strip_prefix("[TOOL_CALLS]").unwrap_or(body).trim();
    let body = body.strip_prefix("<|python_tag|>").unwrap_or(body).trim();
    match bare_calls(body).or_else(|| named_calls(answer)) {
        Some(calls) if !calls.is_empty() && calls.iter().all(|c| offered(&c.name)) => {
            (String::new(), calls)
        }
        _ => (content, calls),
    }
}

/// A call's name and arguments (JSON text) from its object: `arguments` (Qwen, Mistral) or
/// `parameters` (Llama 3), an object or a string of JSON, `{}` when absent.
fn call_of(v: &Json) -> Option<(String, String)> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = match v.get("arguments").or_else(|| v.get("parameters")) {
        None | Some(Json::Null) => "{}".to_string(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some((name, args))
}

/// Calls written as bare JSON: one object, a list of them, or objects separated by `;`.
/// `None` unless all of it is calls.
fn bare_calls(body: &str) -> Option<Vec<ToolCall>> {
    let objects: Vec<Json> = match serde_json::from_str::<Json>(body) {
        Ok(Json::Array(items)) => items,
        Ok(one @ Json::Object(_)) => vec![one],
        Ok(_) => return None,
        Err(_) => separated_objects(body)?,
    };
    objects
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (name, arguments) = call_of(v)?;
            Some(ToolCall {
                id: format!("call_{i}"),
                name,
                arguments,
            })
        })
        .collect()
}

/// Mistral's v11 calls: a name, then its arguments as a JSON object, once per call, each
/// maybe after `[TOOL_CALLS]` and with `[ARGS]` between (both markers are control tokens,
/// usually left out of the answer). `None` unless all of it is calls.
fn named_calls(answer: &str) -> Option<Vec<ToolCall>> {
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut calls = Vec::new();
    let mut rest = answer.trim();
    while !rest.is_empty() {
        rest = rest
            .strip_prefix("[TOOL_CALLS]")
            .unwrap_or(rest)
            .trim_start();
        let brace = rest.find('{')?;
        let name = rest[..brace].trim_end();
        let name = name.strip_suffix("[ARGS]").unwrap_or(name).trim();
        if name.is_empty() || !name.chars().all(name_char) {
            return None;
        }
        let mut stream = serde_json::Deserializer::from_str(&rest[brace..]).into_iter::<Json>();
        let arguments = stream.next()?.ok().filter(Json::is_object)?;
        rest = rest[brace + stream.byte_offset()..].trim_start();
        calls.push(ToolCall {
            id: format!("call_{}", calls.len()),
            name: name.to_string(),
            arguments: arguments.to_string(),
        });
    }
    Some(calls)
}

/// JSON values separated by `;` (a `;` inside a string is the string's).
fn separated_objects(body: &str) -> Option<Vec<Json>> {
    let mut values = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Json>();
        values.push(stream.next()?.ok()?);
        rest = rest[stream.byte_offset()..].trim_start();
        rest = match rest.strip_prefix(';') {
            Some(after) => after.trim_start(),
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    Some(values)
}

/// Calls in `<tool_call>` tags naming an `offered` tool, and the text outside them.
fn tagged_calls(answer: &str, offered: &dyn Fn(&str) -> bool) -> (String, Vec<ToolCall>) {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let body = after[..end].trim();
        let parsed = serde_json::from_str::<Json>(body)
            .ok()
            .and_then(|v| call_of(&v))
            .filter(|(name, _)| offered(name));
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

    fn parse_tool_calls_all(answer: &str) -> (String, Vec<ToolCall>) {
        parse_tool_calls(answer, &offered(&["price", "time", "x"]))
    }

    fn offered(names: &[&str]) -> Vec<Tool> {
        names
            .iter()
            .map(|n| Tool {
                name: n.to_string(),
                ..Tool::default()
            })
            .collect()
    }

    #[test]
    fn llama_and_mistral_calls_count_only_for_offered_tools() {
        let tools = offered(&["price", "time"]);
        let call = |i: usize, name: &str, args: &str| ToolCall {
            id: format!("call_{i}"),
            name: name.into(),
            arguments: args.into(),
        };
        // Llama 3.x: the answer is the call, with `parameters`.
        let (content, calls) = parse_tool_calls(
            "<|python_tag|>{\"name\": \"price\", \"parameters\": {\"asset\": \"ETH\"}}",
            &tools,
        );
        assert_eq!(content, "");
        assert_eq!(calls, vec![call(0, "price", "{\"asset\":\"ETH\"}")]);
        let (_, calls) = parse_tool_calls(
            "{\"name\": \"price\", \"parameters\": {}}; {\"name\": \"time\", \"parameters\": {}}",
            &tools,
        );
        assert_eq!(calls, vec![call(0, "price", "{}"), call(1, "time", "{}")]);
        // Mistral: a list, the marker kept or dropped with the control tokens.
        for answer in [
            "[TOOL_CALLS] [{\"name\": \"time\", \"arguments\": {\"tz\": \"UTC\"}}]",
            " [{\"name\": \"time\", \"arguments\": {\"tz\": \"UTC\"}}]",
        ] {
            let (content, calls) = parse_tool_calls(answer, &tools);
            assert_eq!(
                (content.as_str(), calls),
                ("", vec![call(0, "time", "{\"tz\":\"UTC\"}")])
            );
        }
        // Mistral v11: a name and its arguments per call, the markers kept or left out.
        for answer in [
            "[TOOL_CALLS]time[ARGS]{\"tz\": \"UTC\"}[TOOL_CALLS]price[ARGS]{}",
            "time{\"tz\": \"UTC\"} price{}",
        ] {
            let (content, calls) = parse_tool_calls(answer, &tools);
            assert_eq!(
                (content.as_str(), calls),
                (
                    "",
                    vec![call(0, "time", "{\"tz\":\"UTC\"}"), call(1, "price", "{}")]
                ),
                "{answer}"
            );
        }
        // A name not offered, words before the name, or arguments that are not an object:
        // an answer.
        for answer in [
            "fly{\"to\": \"Mars\"}",
            "Try time{}",
            "time[1]",
            "time{} and then",
        ] {
            assert_eq!(
                parse_tool_calls(answer, &tools),
                (answer.to_string(), vec![]),
                "{answer}"
            );
        }
        // JSON that names no offered tool is an answer, not a call.
        let answer = "{\"name\": \"Moses\", \"age\": 120}";
        assert_eq!(
            parse_tool_calls(answer, &tools),
            (answer.to_string(), vec![])
        );
        assert_eq!(
            parse_tool_calls("[{\"name\": \"price\"}, {\"name\": \"fly\"}]", &tools).1,
            vec![]
        );
        assert_eq!(parse_tool_calls("[1, 2]", &tools).1, vec![]);
        // A `;` inside an argument is the argument's; `null` arguments are none.
        let (_, calls) = parse_tool_calls(
            "{\"name\": \"price\", \"parameters\": {\"q\": \"a;b\"}};{\"name\": \"time\", \"parameters\": null}",
            &tools,
        );
        assert_eq!(
            calls,
            vec![call(0, "price", "{\"q\":\"a;b\"}"), call(1, "time", "{}")]
        );
        // A tagged call naming a tool not offered is text.
        let answer = "<tool_call>{\"name\": \"fly\"}</tool_call>";
        assert_eq!(
            parse_tool_calls(answer, &tools),
            (answer.to_string(), vec![])
        );
    }

    #[test]
    fn tool_calls_are_read_out_of_the_answer() {
        let (content, calls) = parse_tool_calls_all(
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
        let (content, calls) =
            parse_tool_calls_all("no calls <tool_call>not json</tool_call> here");
        assert!(calls.is_empty());
        assert_eq!(content, "no calls <tool_call>not json</tool_call> here");
        let (content, calls) = parse_tool_calls_all("unclosed <tool_call>{\"name\":\"x\"}");
        assert!(calls.is_empty());
        assert_eq!(content, "unclosed <tool_call>{\"name\":\"x\"}");
    }
}

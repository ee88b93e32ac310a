//! Request-side helpers: making OpenAI streams report usage, and a cheap estimate of a
//! request's size taken before any response exists.
//!
//! The prompt estimate rule: count the UTF-8 bytes of the request's text (message `content`
//! strings and the `text` of content parts, following nested `content` such as Anthropic
//! `tool_result`; tool-call `arguments`; Anthropic `system`; Responses `instructions` and
//! `input`; legacy `prompt`; embeddings `input`; Cohere v1 `message`, `preamble` and
//! `chat_history[].message`), divide by [`BYTES_PER_TOKEN`] rounding up, add one token per
//! pre-tokenized integer in `prompt` / `input`, and never go below 1. Images, audio, files and
//! tool definitions are not counted, so the estimate runs low for such requests; it is only
//! used when the provider's own count is missing.

use serde::de::IgnoredAny;
use serde_json::Value;

use super::splice::{self, Object};
use super::{bounded_model, Dialect, UsageError};

/// Bytes of text assumed per token, for English-like text on current tokenizers.
pub const BYTES_PER_TOKEN: u64 = 4;

/// `ceil(bytes / BYTES_PER_TOKEN)`.
pub fn tokens_from_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN)
}

/// What a request says about its own cost, read before the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEstimate {
    /// The `model` field, cut to [`super::MAX_MODEL_CHARS`]; absent for Azure, whose model is
    /// the deployment in the path.
    pub model: Option<String>,
    /// `max_completion_tokens`, `max_tokens` or `max_output_tokens`, the first present.
    pub max_output_tokens: Option<u64>,
    /// Prompt tokens by the rule in the module doc; at least 1.
    pub prompt_tokens_estimate: u64,
    /// `"stream": true`.
    pub stream: bool,
    /// The request body's length: an upper bound on its input tokens (a token covers at least
    /// one byte of what is sent; images sent by URL are the exception).
    pub body_bytes: u64,
}

/// For an OpenAI chat-completions or legacy-completions request with `"stream": true`,
/// returns the body with `stream_options.include_usage` set to `true`, so the stream ends in a
/// usage chunk. `Ok(None)` when nothing needs to change: not streaming, already `true`, no
/// `messages` / `prompt` member (the Responses API rejects `include_usage`, so its bodies,
/// which have `input`, are left alone), or `stream_options` of a non-object type.
///
/// Other `stream_options` fields and every other byte of the body are kept as sent; callers
/// must update `Content-Length`. Note that the client then receives the extra final chunk
/// (`"choices": []` plus `usage`), as if it had asked for it.
pub fn ensure_include_usage(body: &[u8]) -> Result<Option<Vec<u8>>, UsageError> {
    // JSON is UTF-8 (RFC 8259, section 8.1), and serde_json checks that only for strings it
    // keeps: `IgnoredAny` skipped invalid bytes inside strings, so a body every other reader
    // here refuses was edited and re-sent (found by fuzz/fuzz_targets/request_body.rs).
    let text = std::str::from_utf8(body)
        .map_err(|_| UsageError::InvalidJson(serde::de::Error::custom("the body is not UTF-8")))?;
    serde_json::from_str::<IgnoredAny>(text).map_err(UsageError::from_json)?;
    let Some(top) = splice::object_at(body, 0) else {
        return Ok(None);
    };
    let is_true = |m: &splice::Member| body.get(m.value.clone()) == Some(&b"true"[..]);
    let streaming = top.last(body, "stream").is_some_and(|m| is_true(&m));
    let completions = top.last(body, "messages").is_some() || top.last(body, "prompt").is_some();
    if !streaming || !completions {
        return Ok(None);
    }
    const OPTIONS: &[u8] = br#"{"include_usage":true}"#;
    let Some(options) = top.last(body, "stream_options") else {
        let end = last_value_end(&top);
        let added = [br#","stream_options":"#, OPTIONS].concat();
        return Ok(splice::replace(body, end..end, &added));
    };
    if body.get(options.value.clone()) == Some(&b"null"[..]) {
        return Ok(splice::replace(body, options.value, OPTIONS));
    }
    let Some(inner) = splice::object_at(body, options.value.start) else {
        return Ok(None);
    };
    match inner.last(body, "include_usage") {
        Some(m) if is_true(&m) => Ok(None),
        Some(m) => Ok(splice::replace(body, m.value, b"true")),
        None if inner.members.is_empty() => Ok(splice::replace(body, options.value, OPTIONS)),
        None => {
            let end = last_value_end(&inner);
            Ok(splice::replace(body, end..end, br#","include_usage":true"#))
        }
    }
}

/// The body with `"field": cap` appended when it names no output cap of its own
/// (`max_completion_tokens`, `max_tokens`, `max_output_tokens`); `Ok(None)` when it names one,
/// or is not a JSON object. Keeps every other byte as sent; callers must update
/// `Content-Length`. With it, a provider cannot answer with more than was reserved.
pub fn ensure_output_cap(
    body: &[u8],
    field: &str,
    cap: u64,
) -> Result<Option<Vec<u8>>, UsageError> {
    serde_json::from_slice::<IgnoredAny>(body).map_err(UsageError::from_json)?;
    let Some(top) = splice::object_at(body, 0) else {
        return Ok(None);
    };
    let named = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .any(|k| top.last(body, k).is_some());
    if named {
        return Ok(None);
    }
    let member = format!("\"{field}\":{cap}");
    if top.members.is_empty() {
        return Ok(splice::replace(
            body,
            top.close..top.close,
            member.as_bytes(),
        ));
    }
    let end = last_value_end(&top);
    Ok(splice::replace(
        body,
        end..end,
        format!(",{member}").as_bytes(),
    ))
}

/// Where to append a member: after the last value (the object is known to be non-empty).
fn last_value_end(object: &Object) -> usize {
    object.members.last().map_or(object.close, |m| m.value.end)
}

/// Reads a request body for its model, output cap, prompt size and streaming flag. A body
/// that is not a JSON object is estimated from its length alone.
pub fn request_estimate(dialect: Dialect, body: &[u8]) -> RequestEstimate {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return RequestEstimate {
            prompt_tokens_estimate: tokens_from_bytes(body.len() as u64).max(1),
            body_bytes: body.len() as u64,
            ..RequestEstimate::default()
        };
    };
    let mut size = Size::default();
    if let Some(Value::Array(messages)) = req.get("messages") {
        for message in messages {
            size.content(message.get("content"));
            size.tool_call_arguments(message.get("tool_calls"));
        }
    }
    size.content(req.get("system"));
    size.content(req.get("instructions"));
    size.text_input(req.get("prompt"));
    match req.get("input") {
        Some(Value::Array(items)) if items.iter().any(Value::is_object) => {
            for item in items {
                size.content(item.get("content"));
                size.content(item.get("output"));
                size.content(item.get("arguments"));
            }
        }
        input => size.text_input(input),
    }
    if dialect == Dialect::Cohere {
        size.content(req.get("message"));
        size.content(req.get("preamble"));
        if let Some(Value::Array(history)) = req.get("chat_history") {
            for turn in history {
                size.content(turn.get("message"));
            }
        }
    }
    let max_output_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64));
    RequestEstimate {
        model: req
            .get("model")
            .and_then(Value::as_str)
            .and_then(bounded_model),
        max_output_tokens,
        prompt_tokens_estimate: tokens_from_bytes(size.bytes)
            .saturating_add(size.token_ids)
            .max(1),
        stream: req.get("stream") == Some(&Value::Bool(true)),
        body_bytes: body.len() as u64,
    }
}

/// Text bytes and pre-tokenized ids found so far.
#[derive(Debug, Default)]
struct Size {
    bytes: u64,
    token_ids: u64,
}

impl Size {
    fn add_bytes(&mut self, s: &str) {
        self.bytes = self.bytes.saturating_add(s.len() as u64);
    }

    /// A `content`: a string, or a list of parts whose `text` (and nested `content`) counts.
    /// serde_json caps nesting depth while parsing, which bounds this recursion.
    fn content(&mut self, content: Option<&Value>) {
        match content {
            Some(Value::String(s)) => self.add_bytes(s),
            Some(Value::Array(parts)) => {
                for part in parts {
                    match part {
                        Value::String(s) => self.add_bytes(s),
                        Value::Object(_) => {
                            self.content(part.get("text"));
                            self.content(part.get("content"));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn tool_call_arguments(&mut self, calls: Option<&Value>) {
        if let Some(Value::Array(calls)) = calls {
            for call in calls {
                let args = call.get("function").and_then(|f| f.get("arguments"));
                self.content(args);
            }
        }
    }

    /// Legacy `prompt` / embeddings `input`: a string, a list of strings, a list of token ids,
    /// or a list of token-id lists.
    fn text_input(&mut self, input: Option<&Value>) {
        let ids = |v: &Value| match v {
            Value::Number(_) => 1,
            Value::Array(ids) => ids.len() as u64,
            _ => 0,
        };
        match input {
            Some(Value::String(s)) => self.add_bytes(s),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => self.add_bytes(s),
                        other => self.token_ids = self.token_ids.saturating_add(ids(other)),
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

//! The deterministic token-count rule and the providers' usage blocks.
//!
//! * Input tokens of a chat-style request = whitespace-separated words in
//!   every message's content (a string, or a list of parts whose `text` is
//!   counted; nested `content` such as Anthropic `tool_result` is followed)
//!   plus [`PER_MESSAGE`] per message. A top-level Anthropic `system` or
//!   Responses `instructions` counts as one more message; a Responses `input`
//!   string counts as one message.
//! * Input tokens of text inputs (legacy `prompt`, embeddings `input`) =
//!   words of each string (a pre-tokenised integer array counts its length),
//!   with no per-item overhead.
//! * Output tokens = the request's max-tokens field if present and at most
//!   [`MAX_REQUESTED_OUTPUT`], else [`DEFAULT_OUTPUT`].
//! * Cached / reasoning / cache-creation counts come from `x-mock-*` headers
//!   and are reported as given (nothing is subtracted from other fields).

use serde_json::{json, Map, Value};

use crate::inject::Inject;

/// Overhead added per message.
pub const PER_MESSAGE: u64 = 3;
/// Output length when the request does not ask for fewer tokens.
pub const DEFAULT_OUTPUT: u64 = 16;
/// Largest requested max-tokens value that is honoured.
pub const MAX_REQUESTED_OUTPUT: u64 = 64;

/// Counts for one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
    pub cache_creation: u64,
}

impl Tokens {
    pub fn new(input: u64, output: u64, inject: &Inject) -> Self {
        Self {
            input,
            output,
            cached: inject.cached_tokens,
            reasoning: inject.reasoning_tokens,
            cache_creation: inject.cache_creation_tokens,
        }
    }
}

/// Whitespace-separated words in `s`.
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Words in a message `content`: a string, or a list of parts.
pub fn content_words(content: &Value) -> u64 {
    match content {
        Value::String(s) => words(s),
        Value::Array(parts) => parts.iter().map(part_words).sum(),
        _ => 0,
    }
}

fn part_words(part: &Value) -> u64 {
    match part {
        Value::String(s) => words(s),
        Value::Object(obj) => {
            let text = obj.get("text").and_then(Value::as_str).map_or(0, words);
            let nested = obj.get("content").map_or(0, content_words);
            text + nested
        }
        _ => 0,
    }
}

/// Input tokens of a list of `{role, content}` messages.
pub fn messages_tokens(messages: Option<&Value>) -> u64 {
    messages
        .and_then(Value::as_array)
        .map_or(0, |list| list.iter().map(message_tokens).sum())
}

fn message_tokens(message: &Value) -> u64 {
    message.get("content").map_or(0, content_words) + PER_MESSAGE
}

/// An optional system prompt / instructions field counted as one message.
pub fn system_tokens(system: Option<&Value>) -> u64 {
    match system {
        None | Some(Value::Null) => 0,
        Some(v) => content_words(v) + PER_MESSAGE,
    }
}

/// Responses API `input`: a string (one message) or a list of items.
pub fn responses_input_tokens(input: Option<&Value>) -> u64 {
    match input {
        Some(Value::String(s)) => words(s) + PER_MESSAGE,
        Some(v @ Value::Array(_)) => messages_tokens(Some(v)),
        _ => 0,
    }
}

/// Legacy completion `prompt` / embeddings `input`, without overhead.
pub fn text_input_tokens(input: Option<&Value>) -> u64 {
    match input {
        Some(Value::String(s)) => words(s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => words(s),
                Value::Number(_) => 1,
                Value::Array(tokens) => tokens.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Output length for a request: the first of `keys` present in the body (a
/// non-negative integer) if it is at most [`MAX_REQUESTED_OUTPUT`], else
/// [`DEFAULT_OUTPUT`]. The generation always ends "naturally"
/// (`stop` / `end_turn`), never with a length finish reason, so SDK helpers
/// that reject truncated output keep working.
///
/// With `wanted` (the `x-mock-output-tokens` header: how long the model "wants" to answer),
/// the answer is that long, but never longer than the request's cap, as a provider's.
pub fn output_tokens(body: &Map<String, Value>, keys: &[&str], wanted: Option<u64>) -> u64 {
    let cap = keys
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    match (wanted, cap) {
        (Some(w), Some(c)) => w.min(c),
        (Some(w), None) => w,
        (None, cap) => cap
            .filter(|n| *n <= MAX_REQUESTED_OUTPUT)
            .unwrap_or(DEFAULT_OUTPUT),
    }
}

/// OpenAI chat / legacy completion `usage`.
pub fn openai_usage(t: &Tokens) -> Value {
    json!({
        "prompt_tokens": t.input,
        "completion_tokens": t.output,
        "total_tokens": t.input + t.output,
        "prompt_tokens_details": {
            "cached_tokens": t.cached,
            "audio_tokens": 0
        },
        "completion_tokens_details": {
            "reasoning_tokens": t.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// OpenAI embeddings `usage`.
pub fn embeddings_usage(input: u64) -> Value {
    json!({ "prompt_tokens": input, "total_tokens": input })
}

/// OpenAI Responses API `usage`.
pub fn responses_usage(t: &Tokens) -> Value {
    json!({
        "input_tokens": t.input,
        "input_tokens_details": { "cached_tokens": t.cached },
        "output_tokens": t.output,
        "output_tokens_details": { "reasoning_tokens": t.reasoning },
        "total_tokens": t.input + t.output
    })
}

/// Anthropic message `usage` with the given `output_tokens`.
pub fn anthropic_usage(t: &Tokens, output_tokens: u64) -> Value {
    json!({
        "input_tokens": t.input,
        "cache_creation_input_tokens": t.cache_creation,
        "cache_read_input_tokens": t.cached,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn counts_words_not_characters() {
        assert_eq!(words(""), 0);
        assert_eq!(words("  hello \n world\tagain "), 3);
    }

    #[test]
    fn counts_string_and_part_contents() {
        let messages = json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "one two three"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
                {"type": "input_text", "text": "four"}
            ]},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "text", "text": "five six"}
                ]}
            ]}
        ]);
        // 2 + 4 + 0 + 2 words, plus 3 per message.
        assert_eq!(messages_tokens(Some(&messages)), 8 + 4 * PER_MESSAGE);
        assert_eq!(messages_tokens(None), 0);
        assert_eq!(messages_tokens(Some(&json!("not a list"))), 0);
    }

    #[test]
    fn system_and_responses_input() {
        assert_eq!(system_tokens(None), 0);
        assert_eq!(system_tokens(Some(&json!("you are terse"))), 3 + 3);
        let blocks = json!([{"type": "text", "text": "a b"}]);
        assert_eq!(system_tokens(Some(&blocks)), 2 + 3);
        assert_eq!(responses_input_tokens(Some(&json!("hi there"))), 2 + 3);
        let items = json!([{"role": "user", "content": [{"type": "input_text", "text": "x y z"}]}]);
        assert_eq!(responses_input_tokens(Some(&items)), 3 + 3);
    }

    #[test]
    fn text_inputs_have_no_overhead() {
        assert_eq!(text_input_tokens(Some(&json!("a b c"))), 3);
        assert_eq!(text_input_tokens(Some(&json!(["a b", "c"]))), 3);
        assert_eq!(text_input_tokens(Some(&json!([1, 2, 3, 4]))), 4);
        assert_eq!(text_input_tokens(Some(&json!([[1, 2], [3]]))), 3);
    }

    #[test]
    fn output_rule() {
        let keys = ["max_completion_tokens", "max_tokens"];
        assert_eq!(output_tokens(&obj(json!({})), &keys, None), 16);
        assert_eq!(
            output_tokens(&obj(json!({"max_tokens": 5})), &keys, None),
            5
        );
        assert_eq!(
            output_tokens(&obj(json!({"max_tokens": 64})), &keys, None),
            64
        );
        assert_eq!(
            output_tokens(&obj(json!({"max_tokens": 65})), &keys, None),
            16
        );
        let both = obj(json!({"max_completion_tokens": 7, "max_tokens": 9}));
        assert_eq!(output_tokens(&both, &keys, None), 7);
        assert_eq!(output_tokens(&both, &keys, Some(5_000)), 7, "the cap wins");
        assert_eq!(output_tokens(&obj(json!({})), &keys, Some(5_000)), 5_000);
    }

    #[test]
    fn usage_blocks() {
        let t = Tokens {
            input: 10,
            output: 4,
            cached: 6,
            reasoning: 2,
            cache_creation: 1,
        };
        let u = openai_usage(&t);
        assert_eq!(u["total_tokens"], 14);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 6);
        assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 2);
        let r = responses_usage(&t);
        assert_eq!(r["input_tokens"], 10);
        assert_eq!(r["output_tokens_details"]["reasoning_tokens"], 2);
        assert_eq!(r["total_tokens"], 14);
        let a = anthropic_usage(&t, 1);
        assert_eq!(a["input_tokens"], 10);
        assert_eq!(a["cache_read_input_tokens"], 6);
        assert_eq!(a["cache_creation_input_tokens"], 1);
        assert_eq!(a["output_tokens"], 1);
        assert_eq!(
            embeddings_usage(3),
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
    }
}

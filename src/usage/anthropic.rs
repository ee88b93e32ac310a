//! Anthropic Messages API response shapes, as JSON bodies and as SSE streams.
//!
//! Anthropic reports `input_tokens` *without* the cache reads and writes, so the total input
//! billed is the sum of the three. In a stream, `message_start.message.usage` is the baseline
//! (input and cache fields final, `output_tokens` small) and `message_delta.usage` carries the
//! cumulative `output_tokens`, sometimes with updated input or cache fields: fields are merged
//! one by one, later non-null values winning.

use serde::Deserialize;

use super::lenient::{Count, Obj, Text, TextLen, Weigh};
use super::progress::Progress;
use super::{bounded_model, Usage, UsageError};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUsage {
    input_tokens: Count,
    output_tokens: Count,
    cache_creation_input_tokens: Count,
    cache_read_input_tokens: Count,
}

/// Usage fields merged across events; `None` is "not reported yet".
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Merged {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

impl Merged {
    fn merge(&mut self, raw: &RawUsage) {
        let later = |old: &mut Option<u64>, new: Count| {
            if new.0.is_some() {
                *old = new.0;
            }
        };
        later(&mut self.input, raw.input_tokens);
        later(&mut self.output, raw.output_tokens);
        later(&mut self.cache_read, raw.cache_read_input_tokens);
        later(&mut self.cache_creation, raw.cache_creation_input_tokens);
    }

    fn resolve(&self) -> Option<Usage> {
        if *self == Merged::default() {
            return None;
        }
        let read = self.cache_read.unwrap_or(0);
        let created = self.cache_creation.unwrap_or(0);
        Some(Usage {
            input_tokens: self
                .input
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(created),
            cached_input_tokens: read,
            cache_creation_input_tokens: created,
            output_tokens: self.output.unwrap_or(0),
            reasoning_tokens: 0,
            model: None,
        })
    }
}

/// A `message` object: the whole JSON body, or `message_start.message` in a stream.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    usage: Obj<RawUsage>,
}

/// Usage of a JSON message body; `Ok(None)` when it has no usage block.
pub(super) fn parse_body(body: &[u8]) -> Result<Option<Usage>, UsageError> {
    let parsed: Obj<Message> = serde_json::from_slice(body).map_err(UsageError::from_json)?;
    let Some(message) = parsed.0 else {
        return Ok(None);
    };
    let mut merged = Merged::default();
    if let Some(raw) = &message.usage.0 {
        merged.merge(raw);
    }
    Ok(merged.resolve().map(|mut usage| {
        usage.model = message.model.as_str().and_then(bounded_model);
        usage
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    message: Obj<Message<'a>>,
    usage: Obj<RawUsage>,
    delta: Obj<Delta>,
}

/// `content_block_delta.delta`: text, tool-input JSON or thinking, all of it model output.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delta {
    text: TextLen,
    partial_json: TextLen,
    thinking: TextLen,
}

impl Weigh for Delta {
    fn weight(&self) -> u64 {
        self.text
            .0
            .saturating_add(self.partial_json.0)
            .saturating_add(self.thinking.0)
    }
}

/// What an Anthropic stream has said about usage so far.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    merged: Merged,
}

impl StreamState {
    pub fn on_event(&mut self, name: Option<&str>, data: &[u8], progress: &mut Progress) {
        let Ok(Obj(event)) = serde_json::from_slice::<Obj<Event>>(data) else {
            progress.unparseable = true;
            return;
        };
        let Some(event) = event else { return };
        match event.kind.as_str().or(name).unwrap_or("") {
            "message_start" => {
                if let Some(message) = &event.message.0 {
                    progress.see_model(message.model.as_str());
                    if let Some(raw) = &message.usage.0 {
                        self.merged.merge(raw);
                    }
                }
            }
            "message_delta" => {
                if let Some(raw) = &event.usage.0 {
                    self.merged.merge(raw);
                }
            }
            "content_block_delta" => {
                progress.add_content(event.delta.0.as_ref().map_or(0, Weigh::weight));
            }
            "message_stop" => progress.complete = true,
            "error" => progress.failed = true,
            _ => {}
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.merged.resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = include_str!("fixtures/mock_anthropic_message.json");
    const MESSAGE_DOC: &str = include_str!("fixtures/anthropic_message_doc.json");

    #[test]
    fn message_body_sums_cache_fields_into_input() {
        let u = parse_body(MESSAGE.as_bytes()).unwrap().unwrap();
        assert_eq!(u.input_tokens, 6 + 7 + 11);
        assert_eq!(u.cached_input_tokens, 7);
        assert_eq!(u.cache_creation_input_tokens, 11);
        assert_eq!((u.output_tokens, u.reasoning_tokens), (5, 0));
        assert_eq!(u.model.as_deref(), Some("claude-sonnet-4-20250514"));

        let u = parse_body(MESSAGE_DOC.as_bytes()).unwrap().unwrap();
        assert_eq!(u.input_tokens, 2095 + 1024);
        assert_eq!(u.cached_input_tokens, 1024);
        assert_eq!(u.output_tokens, 503);
        assert_eq!(u.model.as_deref(), Some("claude-opus-4-1-20250805"));
    }

    #[test]
    fn error_body_has_no_usage() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(parse_body(body).unwrap(), None);
    }

    #[test]
    fn merge_keeps_earlier_fields_and_takes_later_non_null_ones() {
        let mut m = Merged::default();
        let raw = |json: &str| serde_json::from_str::<RawUsage>(json).unwrap();
        m.merge(&raw(
            r#"{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":1}"#,
        ));
        m.merge(&raw(
            r#"{"output_tokens":40,"cache_read_input_tokens":null}"#,
        ));
        let u = m.resolve().unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (17, 5));
        assert_eq!((u.cache_creation_input_tokens, u.output_tokens), (2, 40));
        m.merge(&raw(r#"{"input_tokens":12,"cache_read_input_tokens":6}"#));
        let u = m.resolve().unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (20, 6));
    }
}

//! Cohere response shapes, kept modest: chat JSON bodies of API v1 (`meta.billed_units`) and
//! v2 (`usage.billed_units`), embed bodies (`meta.billed_units`), and the v2 SSE stream, whose
//! `message-end` event carries `delta.usage.billed_units`.
//!
//! `billed_units` is what Cohere charges for, as opposed to `tokens`, which counts the prompt
//! template too. Cohere responses name no model. The v1 chat stream is newline-delimited JSON
//! rather than SSE and is not read: it yields no usage and never completes.

use serde::Deserialize;

use super::lenient::{Count, Obj, Text, TextLen};
use super::progress::Progress;
use super::{Usage, UsageError};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Billed {
    input_tokens: Count,
    output_tokens: Count,
}

/// `meta` (v1) or `usage` (v2): both hold `billed_units`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Meta {
    billed_units: Obj<Billed>,
}

impl Meta {
    fn resolve(&self) -> Option<Usage> {
        let billed = self.billed_units.0.as_ref()?;
        if billed.input_tokens.0.is_none() && billed.output_tokens.0.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: billed.input_tokens.0.unwrap_or(0),
            output_tokens: billed.output_tokens.0.unwrap_or(0),
            ..Usage::default()
        })
    }
}

fn resolve(meta: &Obj<Meta>) -> Option<Usage> {
    meta.0.as_ref().and_then(Meta::resolve)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Body {
    usage: Obj<Meta>,
    meta: Obj<Meta>,
}

/// Usage of a JSON response body; `Ok(None)` when it has no billed units.
pub(super) fn parse_body(body: &[u8]) -> Result<Option<Usage>, UsageError> {
    let parsed: Obj<Body> = serde_json::from_slice(body).map_err(UsageError::from_json)?;
    Ok(parsed
        .0
        .and_then(|b| resolve(&b.usage).or_else(|| resolve(&b.meta))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    delta: Obj<EventDelta<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventDelta<'a> {
    usage: Obj<Meta>,
    message: Obj<DeltaMessage>,
    #[serde(borrow)]
    finish_reason: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeltaMessage {
    content: Obj<DeltaContent>,
    tool_plan: TextLen,
    tool_calls: Obj<DeltaToolCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeltaContent {
    text: TextLen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeltaToolCall {
    function: Obj<DeltaFunction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeltaFunction {
    arguments: TextLen,
}

impl DeltaMessage {
    fn weight(&self) -> u64 {
        let text = self.content.0.as_ref().map_or(0, |c| c.text.0);
        let args = self
            .tool_calls
            .0
            .as_ref()
            .and_then(|t| t.function.0.as_ref())
            .map_or(0, |f| f.arguments.0);
        text.saturating_add(self.tool_plan.0).saturating_add(args)
    }
}

/// What a Cohere v2 stream has said about usage so far.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    usage: Option<Usage>,
}

impl StreamState {
    pub fn on_event(&mut self, name: Option<&str>, data: &[u8], progress: &mut Progress) {
        let Ok(Obj(event)) = serde_json::from_slice::<Obj<Event>>(data) else {
            progress.unparseable = true;
            return;
        };
        let Some(event) = event else { return };
        let kind = event.kind.as_str().or(name).unwrap_or("");
        let Some(delta) = event.delta.0 else { return };
        match kind {
            "content-delta" | "tool-plan-delta" | "tool-call-delta" => {
                progress.add_content(delta.message.0.as_ref().map_or(0, DeltaMessage::weight));
            }
            "message-end" => {
                if let Some(usage) = resolve(&delta.usage) {
                    self.usage = Some(usage);
                }
                progress.complete = true;
                if matches!(delta.finish_reason.as_str(), Some("ERROR" | "TIMEOUT")) {
                    progress.failed = true;
                }
            }
            _ => {}
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_meta_billed_units() {
        let body = include_bytes!("fixtures/cohere_v1_chat.json");
        let u = parse_body(body).unwrap().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (17, 28));
        assert_eq!(u.model, None);
    }

    #[test]
    fn v2_usage_billed_units() {
        let body = include_bytes!("fixtures/cohere_v2_chat.json");
        let u = parse_body(body).unwrap().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (5, 418));
    }

    #[test]
    fn embed_and_rerank() {
        let embed = br#"{"id":"x","embeddings":[[0.1]],"texts":["hi"],"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":2}}}"#;
        let u = parse_body(embed).unwrap().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (2, 0));
        // Rerank bills search units, not tokens.
        let rerank = br#"{"results":[],"meta":{"billed_units":{"search_units":1}}}"#;
        assert_eq!(parse_body(rerank).unwrap(), None);
    }

    #[test]
    fn float_counts_round_up() {
        let body = br#"{"meta":{"billed_units":{"input_tokens":3.0,"output_tokens":4.5}}}"#;
        let u = parse_body(body).unwrap().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (3, 5));
    }
}

//! OpenAI and Azure OpenAI response shapes: chat completions, legacy completions, embeddings
//! and the Responses API, as JSON bodies and as SSE streams.
//!
//! One usage type covers both naming schemes: chat/completions/embeddings say
//! `prompt_tokens`/`completion_tokens` with `*_tokens_details`, the Responses API says
//! `input_tokens`/`output_tokens` with `*_tokens_details`. Both report input including the
//! cached part and output including the reasoning part, which is what [`Usage`] wants.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::lenient::{Count, Obj, SumOf, Text, TextLen, Weigh};
use super::progress::Progress;
use super::{bounded_model, Usage, UsageError};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUsage {
    prompt_tokens: Count,
    completion_tokens: Count,
    input_tokens: Count,
    output_tokens: Count,
    prompt_tokens_details: Obj<Details>,
    completion_tokens_details: Obj<Details>,
    input_tokens_details: Obj<Details>,
    output_tokens_details: Obj<Details>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Count,
    reasoning_tokens: Count,
}

impl RawUsage {
    /// `None` when neither an input nor an output count is present.
    fn resolve(&self) -> Option<Usage> {
        let input = self.prompt_tokens.0.or(self.input_tokens.0);
        let output = self.completion_tokens.0.or(self.output_tokens.0);
        if input.is_none() && output.is_none() {
            return None;
        }
        let detail = |details: &[&Obj<Details>], pick: fn(&Details) -> Count| {
            details
                .iter()
                .find_map(|d| d.0.as_ref().and_then(|d| pick(d).0))
                .unwrap_or(0)
        };
        let input_details = [&self.prompt_tokens_details, &self.input_tokens_details];
        let output_details = [&self.completion_tokens_details, &self.output_tokens_details];
        Some(Usage {
            input_tokens: input.unwrap_or(0),
            cached_input_tokens: detail(&input_details, |d| d.cached_tokens),
            cache_creation_input_tokens: 0,
            output_tokens: output.unwrap_or(0),
            reasoning_tokens: detail(&output_details, |d| d.reasoning_tokens),
            model: None,
        })
    }
}

/// The fields of a whole response body that matter; the Responses API object has the same
/// top-level `model` and `usage` as a chat completion.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Body<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    usage: Obj<RawUsage>,
}

impl Body<'_> {
    fn usage(&self) -> Option<Usage> {
        let mut usage = self.usage.0.as_ref()?.resolve()?;
        usage.model = self.model.as_str().and_then(bounded_model);
        Some(usage)
    }
}

/// Usage of a JSON response body; `Ok(None)` when it has no usage block.
pub(super) fn parse_body(body: &[u8]) -> Result<Option<Usage>, UsageError> {
    let parsed: Obj<Body> = serde_json::from_slice(body).map_err(UsageError::from_json)?;
    Ok(parsed.0.and_then(|b| b.usage()))
}

/// One stream event: a chat/legacy completion chunk or a Responses API event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    usage: Obj<RawUsage>,
    choices: SumOf<Choice>,
    #[serde(borrow)]
    response: Obj<Body<'a>>,
    delta: TextLen,
    error: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    delta: Obj<Delta>,
    /// Legacy completions stream `choices[].text`.
    text: TextLen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delta {
    content: TextLen,
    refusal: TextLen,
    /// Reasoning text some OpenAI-compatible servers stream (vLLM, DeepSeek).
    reasoning_content: TextLen,
    tool_calls: SumOf<ToolCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolCall {
    function: Obj<Function>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Function {
    arguments: TextLen,
}

impl Weigh for Choice {
    fn weight(&self) -> u64 {
        let delta = self.delta.0.as_ref().map_or(0, Weigh::weight);
        delta.saturating_add(self.text.0)
    }
}

impl Weigh for Delta {
    fn weight(&self) -> u64 {
        self.content
            .0
            .saturating_add(self.refusal.0)
            .saturating_add(self.reasoning_content.0)
            .saturating_add(self.tool_calls.0)
    }
}

impl Weigh for ToolCall {
    fn weight(&self) -> u64 {
        self.function.0.as_ref().map_or(0, |f| f.arguments.0)
    }
}

/// Responses API events whose string `delta` is model output shown to the client.
const TEXT_DELTA_EVENTS: [&str; 3] = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
];

/// What an OpenAI stream has said about usage so far: the last usage block seen, since the
/// final chunk (or `response.completed`) carries the cumulative count.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    usage: Option<Usage>,
}

impl StreamState {
    pub fn on_event(&mut self, name: Option<&str>, data: &[u8], progress: &mut Progress) {
        if data.trim_ascii() == b"[DONE]" {
            progress.complete = true;
            return;
        }
        let Ok(Obj(event)) = serde_json::from_slice::<Obj<Event>>(data) else {
            progress.unparseable = true;
            return;
        };
        let Some(event) = event else { return };
        let kind = event.kind.as_str().or(name).unwrap_or("");
        progress.see_model(event.model.as_str());
        progress.add_content(event.choices.0);
        if let Some(usage) = event.usage.0.as_ref().and_then(RawUsage::resolve) {
            self.usage = Some(usage);
        }
        if event.error.is_some() || kind == "error" {
            progress.failed = true;
        }
        if TEXT_DELTA_EVENTS.contains(&kind) {
            progress.add_content(event.delta.0);
        }
        if let Some(response) = &event.response.0 {
            progress.see_model(response.model.as_str());
            if let Some(usage) = response.usage.0.as_ref().and_then(RawUsage::resolve) {
                self.usage = Some(usage);
            }
        }
        match kind {
            // `incomplete` is a normal end too (max_output_tokens or a content filter hit),
            // and its usage is final.
            "response.completed" | "response.incomplete" => progress.complete = true,
            "response.failed" => progress.failed = true,
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

    const CHAT: &str = include_str!("fixtures/mock_openai_chat.json");
    const COMPLETION: &str = include_str!("fixtures/mock_openai_completion.json");
    const EMBEDDINGS: &str = include_str!("fixtures/mock_openai_embeddings.json");
    const RESPONSES: &str = include_str!("fixtures/mock_openai_responses.json");
    const CHAT_DOC: &str = include_str!("fixtures/openai_chat_doc.json");
    const EMBEDDINGS_DOC: &str = include_str!("fixtures/openai_embeddings_doc.json");
    const RESPONSES_DOC: &str = include_str!("fixtures/openai_responses_doc.json");
    const AZURE_CHAT: &str = include_str!("fixtures/azure_chat.json");

    fn usage(body: &str) -> Usage {
        parse_body(body.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn chat_completion_with_details() {
        let u = usage(CHAT);
        assert_eq!((u.input_tokens, u.cached_input_tokens), (6, 2));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (5, 1));
        assert_eq!(u.model.as_deref(), Some("gpt-4o-mini"));

        let u = usage(CHAT_DOC);
        assert_eq!((u.input_tokens, u.cached_input_tokens), (19, 0));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (10, 0));
        assert_eq!(u.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    }

    #[test]
    fn azure_chat_completion() {
        let u = usage(AZURE_CHAT);
        assert_eq!((u.input_tokens, u.cached_input_tokens), (1824, 1536));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (77, 0));
        assert_eq!(u.model.as_deref(), Some("gpt-4o-2024-11-20"));
    }

    #[test]
    fn legacy_completion() {
        let u = usage(COMPLETION);
        assert_eq!((u.input_tokens, u.output_tokens), (5, 4));
        assert_eq!(u.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
    }

    #[test]
    fn embeddings_have_input_only() {
        let u = usage(EMBEDDINGS);
        assert_eq!((u.input_tokens, u.output_tokens), (4, 0));
        let u = usage(EMBEDDINGS_DOC);
        assert_eq!((u.input_tokens, u.output_tokens), (8, 0));
        assert_eq!(u.model.as_deref(), Some("text-embedding-3-small"));
    }

    #[test]
    fn responses_api() {
        let u = usage(RESPONSES);
        assert_eq!((u.input_tokens, u.cached_input_tokens), (7, 1));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (6, 2));
        assert_eq!(u.model.as_deref(), Some("gpt-4.1"));

        let u = usage(RESPONSES_DOC);
        assert_eq!((u.input_tokens, u.cached_input_tokens), (328, 128));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (1052, 960));
        assert_eq!(u.model.as_deref(), Some("o4-mini-2025-04-16"));
    }

    #[test]
    fn bodies_without_usage() {
        let none = |b: &str| parse_body(b.as_bytes()).unwrap();
        assert_eq!(
            none(r#"{"error":{"message":"x","type":"server_error"}}"#),
            None
        );
        assert_eq!(none(r#"{"usage":null,"model":"m"}"#), None);
        assert_eq!(none(r#"{"usage":{"total_tokens":3}}"#), None);
        assert_eq!(none(r#"[1,2]"#), None);
        assert_eq!(none(r#""usage""#), None);
        assert!(matches!(
            parse_body(b"{\"usage\":"),
            Err(UsageError::InvalidJson(_))
        ));
    }

    #[test]
    fn odd_types_read_as_absent() {
        let u = usage(
            r#"{"model":7,"usage":{"prompt_tokens":"9","completion_tokens":3,
            "prompt_tokens_details":null,"completion_tokens_details":[1]}}"#,
        );
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.reasoning_tokens),
            (0, 3, 0)
        );
        assert_eq!(u.model, None);
    }
}

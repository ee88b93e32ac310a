//! What to charge when the provider's usage is missing or not final.
//!
//! A stream's usage is exact only when the stream completed (its terminator was seen),
//! reported usage, and was read in full (no event dropped or unreadable, which could have
//! hidden part of the usage). Otherwise (interrupted stream, provider error mid-stream, an
//! OpenAI stream without `include_usage`, or a 2xx JSON answer from a generation or embedding
//! endpoint without a usage block) the charge is estimated, and flagged as such:
//!
//! * **Input** (`input_tokens`, `cached_input_tokens`, `cache_creation_input_tokens`): what the
//!   provider reported if it reported anything (Anthropic's `message_start` gives exact input
//!   counts up front); otherwise the request's prompt estimate
//!   ([`RequestEstimate::prompt_tokens_estimate`]: text bytes / 4 rounded up, at least 1),
//!   with nothing cached.
//! * **Output**: `ceil(content bytes streamed to the client / 4)` — content, refusal and
//!   tool-call argument deltas, see [`StreamOutcome::content_bytes`] — capped at the request's
//!   `max_output_tokens` if it set one, and never below an output count the provider did
//!   report. A JSON answer without usage counts its decoded size as content; an embedding,
//!   none.
//! * **Reasoning**: as reported, else 0. Hidden reasoning of an interrupted o-series stream is
//!   billed by OpenAI but invisible here, so the estimate runs low for those.
//!
//! Providers bill the whole prompt even when a stream breaks, so the input side matters most;
//! bytes / 4 suits English text and undercounts code and most other scripts.

use super::request::{tokens_from_bytes, RequestEstimate};
use super::stream::StreamOutcome;
use super::Usage;

/// The usage to charge, and whether it is an estimate rather than the provider's count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    pub usage: Usage,
    pub estimated: bool,
}

/// Settles a finished stream against the request it answered, by the rule in the module doc.
pub fn settle(outcome: &StreamOutcome, request: &RequestEstimate) -> Settlement {
    let model = outcome.model.clone().or_else(|| request.model.clone());
    match &outcome.usage {
        Some(usage) if outcome.complete && !outcome.unparseable => Settlement {
            usage: Usage {
                model: usage.model.clone().or(model),
                ..usage.clone()
            },
            estimated: false,
        },
        partial => {
            let mut usage = estimate_missing(request, outcome.content_bytes, partial.as_ref());
            usage.model = model;
            Settlement {
                usage,
                estimated: true,
            }
        }
    }
}

/// The estimated usage for a response whose usage is missing or partial: `content_bytes` of
/// output were seen and `reported` is whatever the provider did report. Also usable for a
/// non-streamed response without usage (pass the length of its output text).
pub fn estimate_missing(
    request: &RequestEstimate,
    content_bytes: u64,
    reported: Option<&Usage>,
) -> Usage {
    let mut output = tokens_from_bytes(content_bytes);
    if let Some(cap) = request.max_output_tokens {
        output = output.min(cap);
    }
    let reported_input = reported.filter(|u| u.input_tokens > 0);
    let (input_tokens, cached_input_tokens, cache_creation_input_tokens) = match reported_input {
        Some(u) => (
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_creation_input_tokens,
        ),
        None => (request.prompt_tokens_estimate.max(1), 0, 0),
    };
    Usage {
        input_tokens,
        cached_input_tokens,
        cache_creation_input_tokens,
        output_tokens: output.max(reported.map_or(0, |u| u.output_tokens)),
        reasoning_tokens: reported.map_or(0, |u| u.reasoning_tokens),
        model: reported.and_then(|u| u.model.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Dialect, StreamAccumulator};

    fn request() -> RequestEstimate {
        RequestEstimate {
            model: Some("gpt-4o-mini".into()),
            max_output_tokens: Some(3),
            prompt_tokens_estimate: 40,
            stream: true,
            body_bytes: 200,
        }
    }

    fn outcome(dialect: Dialect, stream: &[u8]) -> StreamOutcome {
        let mut acc = StreamAccumulator::new(dialect);
        acc.feed(stream);
        acc.finish()
    }

    #[test]
    fn complete_stream_with_usage_is_exact() {
        let out = outcome(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_chat_stream_usage.sse"),
        );
        let s = settle(&out, &request());
        assert!(!s.estimated);
        assert_eq!((s.usage.input_tokens, s.usage.output_tokens), (6, 5));
    }

    #[test]
    fn complete_stream_without_usage_is_estimated() {
        let out = outcome(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_chat_stream_no_usage.sse"),
        );
        let uncapped = RequestEstimate {
            max_output_tokens: None,
            ..request()
        };
        let s = settle(&out, &uncapped);
        assert!(s.estimated);
        // "lorem ipsum dolor sit amet" is 26 bytes: 7 tokens.
        assert_eq!((s.usage.input_tokens, s.usage.output_tokens), (40, 7));
        assert_eq!(s.usage.model.as_deref(), Some("gpt-4o-mini"));
        // The request's own cap bounds the output estimate.
        assert_eq!(settle(&out, &request()).usage.output_tokens, 3);
    }

    #[test]
    fn interrupted_anthropic_keeps_reported_input() {
        let out = outcome(
            Dialect::Anthropic,
            include_bytes!("fixtures/anthropic_stream_error.sse"),
        );
        let req = RequestEstimate {
            model: None,
            max_output_tokens: Some(1000),
            prompt_tokens_estimate: 5,
            stream: true,
            body_bytes: 30,
        };
        let s = settle(&out, &req);
        assert!(s.estimated);
        assert_eq!(s.usage.input_tokens, 2458);
        assert_eq!(s.usage.cached_input_tokens, 2048);
        // 36 bytes of text streamed: 9 tokens, above the 2 reported at message_start.
        assert_eq!(s.usage.output_tokens, 9);
        assert_eq!(s.usage.model.as_deref(), Some("claude-sonnet-4-20250514"));
    }

    #[test]
    fn unreadable_events_make_usage_an_estimate() {
        let mut out = outcome(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_chat_stream_usage.sse"),
        );
        out.unparseable = true;
        let s = settle(&out, &request());
        assert!(s.estimated);
        // The reported counts still stand as floors.
        assert_eq!((s.usage.input_tokens, s.usage.output_tokens), (6, 5));
    }

    #[test]
    fn nothing_seen_charges_the_prompt_estimate() {
        let s = settle(&StreamOutcome::default(), &RequestEstimate::default());
        assert!(s.estimated);
        assert_eq!((s.usage.input_tokens, s.usage.output_tokens), (1, 0));
    }

    #[test]
    fn reported_output_is_a_floor_even_above_the_cap() {
        let reported = Usage {
            input_tokens: 10,
            output_tokens: 8,
            ..Usage::default()
        };
        let u = estimate_missing(&request(), 4, Some(&reported));
        assert_eq!((u.input_tokens, u.output_tokens), (10, 8));
    }
}

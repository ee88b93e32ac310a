//! Usage accounting over a streamed (SSE) response, fed chunk by chunk.
//!
//! The accumulator keeps only the usage state, the model name, a few flags and a byte
//! counter, never the body: memory is bounded by the SSE decoder's per-event limit however
//! long the stream runs. Feed it decompressed bytes (see [`super::StreamDecoder`]).

use super::progress::Progress;
use super::sse::{SseDecoder, DEFAULT_EVENT_LIMIT};
use super::{anthropic, cohere, openai, Dialect, Usage};

#[derive(Debug)]
enum Parser {
    OpenAi(openai::StreamState),
    Anthropic(anthropic::StreamState),
    Cohere(cohere::StreamState),
}

impl Parser {
    fn on_event(&mut self, name: Option<&str>, data: &[u8], progress: &mut Progress) {
        match self {
            Parser::OpenAi(s) => s.on_event(name, data, progress),
            Parser::Anthropic(s) => s.on_event(name, data, progress),
            Parser::Cohere(s) => s.on_event(name, data, progress),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Parser::OpenAi(s) => s.usage(),
            Parser::Anthropic(s) => s.usage(),
            Parser::Cohere(s) => s.usage(),
        }
    }
}

/// Follows one SSE response stream and reports its usage at the end.
#[derive(Debug)]
pub struct StreamAccumulator {
    sse: SseDecoder,
    parser: Parser,
    progress: Progress,
}

/// The result of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOutcome {
    /// The provider's usage as last reported. For Anthropic this exists from `message_start`
    /// on, so an interrupted stream can have usage whose output count is not final: trust it
    /// as final only when `complete` (see [`super::estimate`]).
    pub usage: Option<Usage>,
    /// The first model name the stream reported.
    pub model: Option<String>,
    /// The terminator was seen: `data: [DONE]`, `message_stop`, `response.completed` /
    /// `response.incomplete`, or Cohere's `message-end`.
    pub complete: bool,
    /// The provider reported an error in the stream (`error` event or field,
    /// `response.failed`, a Cohere `ERROR` finish).
    pub failed: bool,
    /// Some of the stream could not be read: an event over the size limit was dropped, or an
    /// event's data was not JSON. Usage may be missing because of it.
    pub unparseable: bool,
    /// UTF-8 bytes of model output text streamed to the client: content, refusal and
    /// tool-call argument deltas. The basis of the output estimate when usage is missing.
    pub content_bytes: u64,
}

impl StreamAccumulator {
    /// An accumulator with the default per-event limit ([`DEFAULT_EVENT_LIMIT`]).
    pub fn new(dialect: Dialect) -> Self {
        StreamAccumulator::with_event_limit(dialect, DEFAULT_EVENT_LIMIT)
    }

    /// An accumulator that drops (and flags) any event larger than `limit` bytes. Note that
    /// the Responses API's `response.completed` event repeats the whole output, so a very long
    /// response needs a limit above its size for its usage to be read.
    pub fn with_event_limit(dialect: Dialect, limit: usize) -> Self {
        let parser = match dialect {
            Dialect::OpenAi => Parser::OpenAi(openai::StreamState::default()),
            Dialect::Anthropic => Parser::Anthropic(anthropic::StreamState::default()),
            Dialect::Cohere => Parser::Cohere(cohere::StreamState::default()),
        };
        StreamAccumulator {
            sse: SseDecoder::new(limit),
            parser,
            progress: Progress::default(),
        }
    }

    /// Reads the next chunk of the (decompressed) stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let StreamAccumulator {
            sse,
            parser,
            progress,
        } = self;
        sse.feed_with(chunk, |name, data| parser.on_event(name, data, progress));
    }

    /// Whether the terminator has been seen so far.
    pub fn is_complete(&self) -> bool {
        self.progress.complete
    }

    /// Ends the stream and reports what it said.
    pub fn finish(mut self) -> StreamOutcome {
        let StreamAccumulator {
            sse,
            parser,
            progress,
        } = &mut self;
        sse.finish_with(|name, data| parser.on_event(name, data, progress));
        let progress = self.progress;
        let usage = self.parser.usage().map(|mut usage| {
            usage.model = progress.model.clone();
            usage
        });
        StreamOutcome {
            usage,
            model: progress.model,
            complete: progress.complete,
            failed: progress.failed,
            unparseable: progress.unparseable || self.sse.dropped() > 0,
            content_bytes: progress.content_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dialect: Dialect, stream: &[u8]) -> StreamOutcome {
        let mut acc = StreamAccumulator::new(dialect);
        acc.feed(stream);
        acc.finish()
    }

    #[test]
    fn openai_chat_with_usage_chunk() {
        let out = run(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_chat_stream_usage.sse"),
        );
        let u = out.usage.clone().unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.output_tokens),
            (6, 2, 5)
        );
        assert_eq!(u.model.as_deref(), Some("gpt-4o-mini"));
        assert!(out.complete && !out.failed && !out.unparseable);
        assert_eq!(out.content_bytes, "lorem ipsum dolor sit amet".len() as u64);
    }

    #[test]
    fn openai_without_usage_chunk_is_complete_without_usage() {
        let out = run(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_chat_stream_no_usage.sse"),
        );
        assert_eq!(out.usage, None);
        assert!(out.complete);
        assert_eq!(out.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(out.content_bytes, 26);
    }

    #[test]
    fn interrupted_streams_are_incomplete() {
        let out = run(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_chat_stream_interrupted.sse"),
        );
        assert!(!out.complete && out.usage.is_none());
        assert_eq!(out.content_bytes, "lorem ipsum".len() as u64);

        let out = run(
            Dialect::Anthropic,
            include_bytes!("fixtures/mock_anthropic_stream_interrupted.sse"),
        );
        assert!(!out.complete);
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (6, 1));
        assert_eq!(out.content_bytes, 5);
    }

    #[test]
    fn azure_stream_skips_the_empty_model_and_counts_tool_arguments() {
        let out = run(
            Dialect::OpenAi,
            include_bytes!("fixtures/azure_chat_stream.sse"),
        );
        assert_eq!(out.model.as_deref(), Some("gpt-4o-2024-11-20"));
        let u = out.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.output_tokens),
            (2310, 2048, 18)
        );
        assert_eq!(out.content_bytes, "Café".len() as u64 + 8 + 8);
        assert!(out.complete);
    }

    #[test]
    fn legacy_completions_and_responses_streams() {
        let out = run(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_completion_stream.sse"),
        );
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (5, 4));
        assert_eq!(out.content_bytes, "lorem ipsum dolor sit".len() as u64);
        assert!(out.complete);

        let out = run(
            Dialect::OpenAi,
            include_bytes!("fixtures/mock_openai_responses_stream.sse"),
        );
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (7, 1));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (6, 2));
        assert_eq!(out.model.as_deref(), Some("gpt-4.1"));
        assert_eq!(
            out.content_bytes,
            "lorem ipsum dolor sit amet consectetur".len() as u64
        );
        assert!(out.complete);
    }

    #[test]
    fn responses_failed_and_chat_error_chunk() {
        let failed = b"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"model\":\"o3\",\"status\":\"failed\",\"usage\":null}}\n\n";
        let out = run(Dialect::OpenAi, failed);
        assert!(out.failed && !out.complete && out.usage.is_none());
        assert_eq!(out.model.as_deref(), Some("o3"));
        let chat = b"data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
        let out = run(Dialect::OpenAi, chat);
        assert!(out.failed && !out.complete);
    }

    #[test]
    fn anthropic_stream_merges_cache_tokens() {
        let out = run(
            Dialect::Anthropic,
            include_bytes!("fixtures/mock_anthropic_stream.sse"),
        );
        let u = out.usage.unwrap();
        assert_eq!(u.input_tokens, 6 + 7 + 11);
        assert_eq!(
            (u.cached_input_tokens, u.cache_creation_input_tokens),
            (7, 11)
        );
        assert_eq!(u.output_tokens, 5);
        assert!(out.complete);

        let out = run(
            Dialect::Anthropic,
            include_bytes!("fixtures/anthropic_stream_doc.sse"),
        );
        let u = out.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_creation_input_tokens),
            (1225, 1200)
        );
        assert_eq!(u.output_tokens, 89);
        assert_eq!(u.model.as_deref(), Some("claude-opus-4-20250514"));
        let json_args = r#"{"location": "San Francisco, CA"}"#.len() as u64;
        assert_eq!(out.content_bytes, "Hello!".len() as u64 + json_args);
    }

    #[test]
    fn anthropic_error_event_fails_the_stream() {
        let out = run(
            Dialect::Anthropic,
            include_bytes!("fixtures/anthropic_stream_error.sse"),
        );
        assert!(out.failed && !out.complete);
        let u = out.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.output_tokens),
            (2458, 2048, 2)
        );
    }

    #[test]
    fn cohere_v2_stream() {
        let out = run(
            Dialect::Cohere,
            include_bytes!("fixtures/cohere_v2_stream.sse"),
        );
        let u = out.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (3, 9));
        assert!(out.complete);
        assert_eq!(out.content_bytes, "Hello world!".len() as u64);
    }

    #[test]
    fn oversized_and_garbage_events_are_flagged() {
        let mut acc = StreamAccumulator::with_event_limit(Dialect::OpenAi, 64);
        acc.feed(format!("data: {{\"x\":\"{}\"}}\n\n", "y".repeat(100)).as_bytes());
        acc.feed(b"data: [DONE]\n\n");
        let out = acc.finish();
        assert!(out.unparseable && out.complete);

        let out = run(Dialect::Anthropic, b"data: {not json\n\n");
        assert!(out.unparseable);
    }
}

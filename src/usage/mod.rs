//! Token accounting from provider responses: pure parsing, no I/O.
//!
//! The pieces, in the order a response flows through them:
//! * [`decode`] undoes `Content-Encoding` (gzip, deflate, br) with a decompression-bomb limit,
//!   for whole bodies ([`decompress`]) and streams ([`StreamDecoder`]).
//! * [`parse_body`] reads the usage block of a JSON response; [`StreamAccumulator`] follows an
//!   SSE stream chunk by chunk, keeping only the usage state, never the body.
//! * [`estimate`] says what to charge when usage is missing (interrupted stream, no usage chunk).
//! * [`pricing`] turns a [`Usage`] into integer micro-dollars.
//! * [`request`] holds request-side helpers: forcing `stream_options.include_usage` and a cheap
//!   prompt-size estimate taken before the response exists.
//!
//! Provider JSON is read leniently: a field of an unexpected type reads as absent rather than
//! failing the whole body, because a quirky clone provider should still be accounted.

use thiserror::Error;

use crate::providers::ProviderKind;

mod anthropic;
mod cohere;
pub mod decode;
mod endpoint;
pub mod estimate;
mod json;
mod lenient;
mod openai;
pub mod pricing;
mod pricing_defaults;
mod progress;
pub mod request;
mod splice;
pub mod sse;
pub mod stream;

#[cfg(test)]
mod tests;

pub use decode::{decompress, StreamDecoder};
pub use endpoint::{azure_deployment, output_cap_field, Endpoint};
pub use estimate::{settle, Settlement};
pub use json::parse_body;
pub use pricing::{Price, PriceEntry, PriceTable, PricingError};
pub use request::{ensure_include_usage, ensure_output_cap, request_estimate, RequestEstimate};
pub use sse::{SseDecoder, SseEvent};
pub use stream::{StreamAccumulator, StreamOutcome};

/// Longest model name kept, in characters; longer names are cut. Model names end up in logs
/// and metric labels, so a hostile or broken upstream must not be able to inflate them.
pub const MAX_MODEL_CHARS: usize = 128;

/// Token counts from one provider response. All counts are tokens.
///
/// The fields are normalized across providers so pricing needs no per-provider logic:
/// `input_tokens` is every input token billed, and the cached and cache-creation counts are
/// subsets of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens billed. OpenAI's `prompt_tokens` / `input_tokens` already include the
    /// cached ones; for Anthropic this is `input_tokens + cache_read_input_tokens +
    /// cache_creation_input_tokens`, because Anthropic reports the three separately.
    pub input_tokens: u64,
    /// The subset of `input_tokens` read from the prompt cache (OpenAI `cached_tokens`,
    /// Anthropic `cache_read_input_tokens`).
    pub cached_input_tokens: u64,
    /// The subset of `input_tokens` written to the prompt cache (Anthropic only).
    pub cache_creation_input_tokens: u64,
    /// Output tokens; for OpenAI this includes the reasoning tokens.
    pub output_tokens: u64,
    /// The subset of `output_tokens` spent on hidden reasoning (OpenAI only).
    pub reasoning_tokens: u64,
    /// The model the provider says answered, cut to [`MAX_MODEL_CHARS`].
    pub model: Option<String>,
}

/// The most tokens of any one kind a single response is believed to use; a provider report
/// past it (a bug, or a hostile upstream) is clamped to it. Far above any model's context.
pub const MAX_REPORTED_TOKENS: u64 = 10_000_000;

/// `usage` with every count at most [`MAX_REPORTED_TOKENS`] and the subsets (cached, cache
/// creation, reasoning) no larger than what they are subsets of; and whether anything changed.
pub fn clamp(usage: &Usage) -> (Usage, bool) {
    let cap = |n: u64| n.min(MAX_REPORTED_TOKENS);
    let input = cap(usage.input_tokens);
    let output = cap(usage.output_tokens);
    let cached = cap(usage.cached_input_tokens).min(input);
    let creation = cap(usage.cache_creation_input_tokens).min(input - cached);
    let clamped = Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_creation_input_tokens: creation,
        output_tokens: output,
        reasoning_tokens: cap(usage.reasoning_tokens).min(output),
        model: usage.model.clone(),
    };
    let changed = clamped != *usage;
    (clamped, changed)
}

impl Usage {
    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The response format family to parse. Azure OpenAI speaks [`Dialect::OpenAi`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Cohere,
}

impl Dialect {
    /// The dialect of a provider kind; `None` for generic upstreams, whose format is unknown.
    pub fn for_provider(kind: ProviderKind) -> Option<Dialect> {
        match kind {
            ProviderKind::Openai | ProviderKind::AzureOpenai => Some(Dialect::OpenAi),
            ProviderKind::Anthropic => Some(Dialect::Anthropic),
            ProviderKind::Cohere => Some(Dialect::Cohere),
            ProviderKind::Generic => None,
        }
    }
}

/// Why a body could not be decoded or read.
#[derive(Debug, Error)]
pub enum UsageError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("JSON body has an unexpected shape: {0}")]
    UnexpectedShape(#[source] serde_json::Error),
    #[error("unsupported content-encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("decoded body exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("body does not decompress: {0}")]
    Corrupt(#[source] std::io::Error),
}

impl UsageError {
    /// Splits serde_json's errors into "not JSON at all" and "JSON of the wrong shape".
    fn from_json(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => UsageError::UnexpectedShape(e),
            _ => UsageError::InvalidJson(e),
        }
    }
}

/// A model name as kept: cut to [`MAX_MODEL_CHARS`]; empty names read as absent (Azure's first
/// stream chunk carries `"model": ""`).
fn bounded_model(name: &str) -> Option<String> {
    if name.is_empty() {
        None
    } else {
        Some(name.chars().take(MAX_MODEL_CHARS).collect())
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn model_names_are_bounded() {
        assert_eq!(bounded_model(""), None);
        assert_eq!(bounded_model("gpt-4o").as_deref(), Some("gpt-4o"));
        let long = "é".repeat(300);
        assert_eq!(bounded_model(&long).map(|m| m.chars().count()), Some(128));
    }

    #[test]
    fn implausible_reports_are_clamped_and_subsets_kept_within_their_whole() {
        let huge = Usage {
            input_tokens: u64::MAX,
            cached_input_tokens: u64::MAX,
            output_tokens: 5,
            reasoning_tokens: 9,
            ..Usage::default()
        };
        let (clamped, changed) = clamp(&huge);
        assert!(changed);
        assert_eq!(clamped.input_tokens, MAX_REPORTED_TOKENS);
        assert_eq!(clamped.cached_input_tokens, MAX_REPORTED_TOKENS);
        assert_eq!(clamped.cache_creation_input_tokens, 0);
        assert_eq!(clamped.reasoning_tokens, 5);
        let fine = Usage {
            input_tokens: 10,
            output_tokens: 3,
            ..Usage::default()
        };
        assert_eq!(clamp(&fine), (fine.clone(), false));
    }

    #[test]
    fn dialect_per_provider_kind() {
        assert_eq!(
            Dialect::for_provider(ProviderKind::AzureOpenai),
            Some(Dialect::OpenAi)
        );
        assert_eq!(
            Dialect::for_provider(ProviderKind::Anthropic),
            Some(Dialect::Anthropic)
        );
        assert_eq!(Dialect::for_provider(ProviderKind::Generic), None);
    }
}

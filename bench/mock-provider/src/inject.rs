//! Per-request behaviour controlled by `x-mock-*` request headers.

use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};

/// Respond with this status and a provider-shaped error body (400..=599).
pub const STATUS: &str = "x-mock-status";
/// Sleep this many milliseconds before responding (overrides `--latency-ms`).
pub const LATENCY_MS: &str = "x-mock-latency-ms";
/// Streams only: send this many SSE frames, then abort the connection.
pub const INTERRUPT_AFTER: &str = "x-mock-interrupt-after";
/// Streams only: sleep this many milliseconds between SSE frames.
pub const CHUNK_DELAY_MS: &str = "x-mock-chunk-delay-ms";
/// Reported as `cached_tokens` / `cache_read_input_tokens`.
pub const CACHED_TOKENS: &str = "x-mock-cached-tokens";
/// Reported as `reasoning_tokens`.
pub const REASONING_TOKENS: &str = "x-mock-reasoning-tokens";
/// Reported as Anthropic `cache_creation_input_tokens`.
pub const CACHE_CREATION_TOKENS: &str = "x-mock-cache-creation-tokens";
/// How many output tokens the model "wants" to generate; the answer is that long unless the
/// request's own cap (`max_tokens`, …) is smaller, as with a real provider.
pub const OUTPUT_TOKENS: &str = "x-mock-output-tokens";
/// Label the (uncompressed) response with this `content-encoding`, as a provider answering in
/// a coding the gateway does not decode would.
pub const CONTENT_ENCODING: &str = "x-mock-content-encoding";

/// Everything a handler needs to know about the request besides its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inject {
    pub status: Option<StatusCode>,
    pub latency_ms: Option<u64>,
    pub interrupt_after: Option<usize>,
    pub chunk_delay_ms: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_creation_tokens: u64,
    /// The client accepts gzip (`Accept-Encoding` mentions it).
    pub gzip: bool,
    /// `x-mock-content-encoding`: overrides the response's `content-encoding` (body untouched).
    pub content_encoding: Option<String>,
    /// `x-mock-output-tokens`: the answer's length before the request's cap.
    pub output_tokens: Option<u64>,
    /// The request carries `anthropic-version` (used to pick the shape of
    /// `GET /v1/models`).
    pub anthropic_client: bool,
}

impl Inject {
    /// Reads the injection headers. Unparseable values are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let status = parse::<u16>(headers, STATUS)
            .filter(|code| (400..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code).ok());
        let gzip = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("gzip"));
        Self {
            status,
            latency_ms: parse(headers, LATENCY_MS),
            interrupt_after: parse(headers, INTERRUPT_AFTER),
            chunk_delay_ms: parse(headers, CHUNK_DELAY_MS).unwrap_or(0),
            cached_tokens: parse(headers, CACHED_TOKENS).unwrap_or(0),
            reasoning_tokens: parse(headers, REASONING_TOKENS).unwrap_or(0),
            cache_creation_tokens: parse(headers, CACHE_CREATION_TOKENS).unwrap_or(0),
            gzip: gzip && !headers.contains_key(CONTENT_ENCODING),
            output_tokens: parse(headers, OUTPUT_TOKENS),
            content_encoding: headers
                .get(CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            anthropic_client: headers.contains_key("anthropic-version"),
        }
    }

    /// Delay between SSE frames.
    pub fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.chunk_delay_ms)
    }
}

fn parse<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn defaults_when_absent() {
        assert_eq!(Inject::from_headers(&HeaderMap::new()), Inject::default());
    }

    #[test]
    fn parses_all_headers() {
        let i = Inject::from_headers(&map(&[
            ("x-mock-status", "429"),
            ("x-mock-latency-ms", "25"),
            ("x-mock-interrupt-after", "3"),
            ("x-mock-chunk-delay-ms", "7"),
            ("x-mock-cached-tokens", "11"),
            ("x-mock-reasoning-tokens", "5"),
            ("x-mock-cache-creation-tokens", "2"),
            ("accept-encoding", "br, GZIP;q=0.5"),
            ("anthropic-version", "2023-06-01"),
        ]));
        assert_eq!(i.status, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(i.latency_ms, Some(25));
        assert_eq!(i.interrupt_after, Some(3));
        assert_eq!(i.chunk_delay_ms, 7);
        assert_eq!(i.cached_tokens, 11);
        assert_eq!(i.reasoning_tokens, 5);
        assert_eq!(i.cache_creation_tokens, 2);
        assert!(i.gzip);
        assert!(i.anthropic_client);
    }

    #[test]
    fn ignores_garbage_and_non_error_status() {
        let i = Inject::from_headers(&map(&[
            ("x-mock-status", "200"),
            ("x-mock-latency-ms", "soon"),
            ("accept-encoding", "identity"),
        ]));
        assert_eq!(i.status, None);
        assert_eq!(i.latency_ms, None);
        assert!(!i.gzip);
        let i = Inject::from_headers(&map(&[("x-mock-status", "999")]));
        assert_eq!(i.status, None);
    }
}

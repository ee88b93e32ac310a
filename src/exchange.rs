//! One request/response exchange after the gate allowed it: what keygate reads of the
//! request body and the response, and the charge when the response ends. Protocol-independent;
//! the ext_proc edge drives it, tests drive it directly.
//!
//! Only 2xx responses are charged. JSON bodies are parsed whole; `text/event-stream` bodies
//! are fed chunk by chunk so streaming is untouched. A stream that ends without usage (the
//! client went away, the provider broke off), or a generation or embedding response without a
//! usage block, is charged the estimate of `usage::estimate`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use metrics::{counter, histogram};

use crate::accounting::Accounting;
use crate::auth::Consumer;
use crate::containment::Containment;
use crate::limits::{Limiter, Reservation};
use crate::telemetry;
use crate::usage::{self, Dialect, Endpoint, RequestEstimate, StreamAccumulator, StreamDecoder};

/// Decoded response bodies larger than this are not parsed (they are still forwarded).
pub const MAX_PARSED_BODY: usize = 32 * 1024 * 1024;

/// JSON bodies up to this `content-length` are buffered by Envoy and reach keygate in one
/// message (one round trip; the client keeps its `content-length`). Larger or unsized ones
/// are streamed and assembled here: Envoy answers 500 when a body it buffers outgrows its
/// buffer limit (`per_connection_buffer_limit_bytes`, 1 MiB by default).
pub const MAX_ENVOY_BUFFERED: u64 = 256 * 1024;

/// How the response body should reach keygate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// Not needed: let it pass without sending it to keygate.
    Skip,
    /// Whole, in one message (small JSON of known size).
    Buffered,
    /// Chunk by chunk as it passes (event streams, large or unsized JSON).
    Streamed,
}

/// Settings that shape every exchange.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeSettings {
    /// Add `stream_options.include_usage` to OpenAI streaming requests that lack it.
    pub include_usage: bool,
}

enum Response {
    None,
    Skipped,
    Buffered {
        encoding: Option<String>,
        body: Vec<u8>,
        /// The body outgrew `MAX_PARSED_BODY`; what was kept is dropped.
        truncated: bool,
    },
    Streamed {
        decoder: Option<Box<StreamDecoder>>,
        accumulator: Box<StreamAccumulator>,
        first_byte: bool,
    },
    Done,
}

pub struct Exchange {
    accounting: Arc<Accounting>,
    limiter: Arc<Limiter>,
    containment: Option<Arc<Containment>>,
    source: Option<IpAddr>,
    reservation: Option<Reservation>,
    settings: ExchangeSettings,
    consumer: Option<Arc<Consumer>>,
    dialect: Option<Dialect>,
    allowed_at: Instant,
    request: Option<RequestEstimate>,
    rewritable_path: bool,
    endpoint: Endpoint,
    response: Response,
}

impl Exchange {
    pub fn new(
        accounting: Arc<Accounting>,
        limiter: Arc<Limiter>,
        containment: Option<Arc<Containment>>,
        settings: ExchangeSettings,
    ) -> Self {
        Exchange {
            accounting,
            limiter,
            containment,
            source: None,
            reservation: None,
            settings,
            consumer: None,
            dialect: None,
            allowed_at: Instant::now(),
            request: None,
            rewritable_path: false,
            endpoint: Endpoint::Other,
            response: Response::None,
        }
    }

    /// The gate allowed the request. Returns true when keygate wants the request body.
    pub fn allowed(
        &mut self,
        consumer: Arc<Consumer>,
        method: &str,
        path: &str,
        source: Option<IpAddr>,
        content_length: Option<u64>,
    ) -> bool {
        self.allowed_at = Instant::now();
        self.source = source;
        if let Some(ip) = source {
            self.accounting
                .sources
                .record(&consumer.name, ip, self.allowed_at);
        }
        if let Some(n) = content_length {
            counter!(telemetry::REQUEST_BYTES_TOTAL, "consumer" => consumer.name.to_string(), "provider" => consumer.provider.name.to_string()).increment(n);
        }
        self.dialect = Dialect::for_provider(consumer.provider.kind);
        let path = path.split('?').next().unwrap_or_default();
        self.rewritable_path =
            path.ends_with("/chat/completions") || path.ends_with("/v1/completions");
        self.endpoint = Endpoint::of(path);
        let wants_body = method == "POST" && self.dialect.is_some();
        self.consumer = Some(consumer);
        wants_body
    }

    /// The whole request body. Returns a replacement body when keygate rewrote it.
    pub fn request_body(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let dialect = self.dialect?;
        self.request = Some(usage::request_estimate(dialect, body));
        let openai = dialect == Dialect::OpenAi;
        if !(openai && self.settings.include_usage && self.rewritable_path) {
            return None;
        }
        match usage::ensure_include_usage(body) {
            Ok(rewritten) => rewritten,
            Err(e) => {
                tracing::debug!(error = %e, "request body not rewritten");
                None
            }
        }
    }

    /// Upstream response headers arrived. Returns how the body should be delivered.
    pub fn response_headers(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        encoding: Option<&str>,
        content_length: Option<u64>,
    ) -> BodyPlan {
        let Some(consumer) = self.consumer.clone() else {
            self.response = Response::Done;
            return BodyPlan::Skip;
        };
        let provider = consumer.provider.name.to_string();
        histogram!(telemetry::UPSTREAM_SECONDS, "provider" => provider.clone())
            .record(self.allowed_at.elapsed().as_secs_f64());
        counter!(telemetry::RESPONSES_TOTAL, "consumer" => consumer.name.to_string(), "provider" => provider.clone(), "status_class" => status_class(status))
            .increment(1);
        let plan = self.plan_body(status, content_type, encoding, content_length);
        if plan == BodyPlan::Skip {
            // A measured body is counted chunk by chunk as it passes.
            if let Some(n) = content_length {
                counter!(telemetry::RESPONSE_BYTES_TOTAL, "consumer" => consumer.name.to_string(), "provider" => provider).increment(n);
            }
        }
        plan
    }

    fn plan_body(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        encoding: Option<&str>,
        content_length: Option<u64>,
    ) -> BodyPlan {
        let (Some(dialect), true) = (self.dialect, (200..300).contains(&status)) else {
            self.response = Response::Skipped;
            return BodyPlan::Skip;
        };
        let media = content_type
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let encoding = encoding
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        if media == "text/event-stream" {
            let decoder = match encoding
                .map(|e| StreamDecoder::new(Some(e), MAX_PARSED_BODY).map(Box::new))
                .transpose()
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "stream encoding not understood; usage will be estimated");
                    None
                }
            };
            self.response = Response::Streamed {
                decoder,
                accumulator: Box::new(StreamAccumulator::new(dialect)),
                first_byte: false,
            };
            return BodyPlan::Streamed;
        }
        if media.ends_with("json") {
            self.response = Response::Buffered {
                encoding: encoding.map(str::to_string),
                body: Vec::new(),
                truncated: false,
            };
            return match content_length {
                Some(n) if n <= MAX_ENVOY_BUFFERED => BodyPlan::Buffered,
                _ => BodyPlan::Streamed,
            };
        }
        self.response = Response::Skipped;
        BodyPlan::Skip
    }

    /// A chunk of the response body (the whole body when buffered).
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        let measured = matches!(
            self.response,
            Response::Streamed { .. } | Response::Buffered { .. }
        );
        if measured && !chunk.is_empty() {
            if let Some(c) = &self.consumer {
                counter!(telemetry::RESPONSE_BYTES_TOTAL, "consumer" => c.name.to_string(), "provider" => c.provider.name.to_string())
                    .increment(chunk.len() as u64);
            }
        }
        match &mut self.response {
            Response::Buffered {
                body, truncated, ..
            } if !*truncated => {
                if body.len() + chunk.len() <= MAX_PARSED_BODY {
                    body.extend_from_slice(chunk);
                } else {
                    *truncated = true;
                    *body = Vec::new();
                }
            }
            Response::Streamed {
                decoder,
                accumulator,
                first_byte,
            } => {
                if !*first_byte && !chunk.is_empty() {
                    *first_byte = true;
                    if let Some(c) = &self.consumer {
                        histogram!(telemetry::TIME_TO_FIRST_TOKEN_SECONDS, "provider" => c.provider.name.to_string())
                            .record(self.allowed_at.elapsed().as_secs_f64());
                    }
                }
                match decoder {
                    Some(d) => match d.feed(chunk) {
                        Ok(plain) => accumulator.feed(&plain),
                        Err(e) => tracing::debug!(error = %e, "stream decode failed"),
                    },
                    None => accumulator.feed(chunk),
                }
            }
            _ => {}
        }
        if end_of_stream {
            self.finish();
        }
    }

    /// Charges what the response used. Idempotent; also runs when the exchange is dropped
    /// mid-stream, which charges an estimate.
    pub fn finish(&mut self) {
        let response = std::mem::replace(&mut self.response, Response::Done);
        let Some(consumer) = self.consumer.clone() else {
            return;
        };
        let estimate = self.request.clone().unwrap_or_default();
        let settled = match response {
            Response::Buffered {
                truncated: true, ..
            } => {
                tracing::warn!(consumer = %consumer.name, "response body too large to read; charging an estimate");
                let mut used = usage::estimate::estimate_missing(&estimate, 0, None);
                used.model = estimate.model.clone();
                Some((used, true))
            }
            Response::Buffered { encoding, body, .. } => {
                let parsed = usage::decompress(encoding.as_deref(), &body, MAX_PARSED_BODY)
                    .and_then(|plain| {
                        usage::parse_body(self.dialect.unwrap_or(Dialect::OpenAi), &plain)
                            .map(|used| (used, plain.len()))
                    });
                match parsed {
                    Ok((Some(mut used), _)) => {
                        used.model = used.model.or(estimate.model.clone());
                        Some((used, false))
                    }
                    Ok((None, decoded)) => {
                        self.estimate_without_usage(&consumer, &estimate, decoded)
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %consumer.name, error = %e, "response usage unreadable; charging an estimate");
                        let mut used = usage::estimate::estimate_missing(&estimate, 0, None);
                        used.model = estimate.model.clone();
                        Some((used, true))
                    }
                }
            }
            Response::Streamed { accumulator, .. } => {
                let outcome = accumulator.finish();
                let settlement = usage::settle(&outcome, &estimate);
                if settlement.estimated {
                    tracing::info!(consumer = %consumer.name, complete = outcome.complete, "stream ended without usage; charging an estimate");
                }
                Some((settlement.usage, settlement.estimated))
            }
            Response::None | Response::Skipped | Response::Done => None,
        };
        let (tokens, charged) = match settled {
            Some((used, estimated)) => {
                let charge = self
                    .accounting
                    .charge(&consumer, &used, estimated, SystemTime::now());
                if let Some(containment) = &self.containment {
                    containment.on_charged(
                        &consumer,
                        self.source,
                        used.total_tokens(),
                        charge.micro_usd,
                    );
                }
                (used.total_tokens(), charge.micro_usd)
            }
            None => (0, 0),
        };
        if let Some(reservation) = self.reservation.take() {
            self.limiter
                .settle(&consumer, &reservation, tokens, charged);
        }
    }

    /// A 2xx JSON body without a usage block: generation and embedding endpoints are
    /// billed anyway, so they are charged an estimate (output from the body size for
    /// generations); other endpoints are not charged.
    fn estimate_without_usage(
        &self,
        consumer: &Consumer,
        estimate: &RequestEstimate,
        body_bytes: usize,
    ) -> Option<(usage::Usage, bool)> {
        let output_bytes = match self.endpoint {
            Endpoint::Generation => body_bytes as u64,
            Endpoint::Embedding => 0,
            Endpoint::Other => return None,
        };
        tracing::warn!(consumer = %consumer.name, "response has no usage block; charging an estimate");
        let mut used = usage::estimate::estimate_missing(estimate, output_bytes, None);
        used.model = estimate.model.clone();
        Some((used, true))
    }

    /// Records what the limiter reserved for this request, released by `finish`.
    pub fn reserved(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// The consumer the gate allowed, once it has.
    pub fn consumer(&self) -> Option<&Arc<Consumer>> {
        self.consumer.as_ref()
    }

    /// What the request said about its cost (after `request_body`).
    pub fn estimate(&self) -> RequestEstimate {
        self.request.clone().unwrap_or_default()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish();
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

//! Reading an upstream response for its usage: how the body should reach keygate, the body
//! itself (JSON assembled whole, event streams followed chunk by chunk without keeping them),
//! and what to charge when it ends. Only 2xx responses are read.

use crate::usage::{
    self, Dialect, Endpoint, RequestEstimate, StreamAccumulator, StreamDecoder, Usage,
};

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

/// What one chunk of body meant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fed {
    /// Bytes of a body keygate reads (counted as response bytes).
    pub measured: usize,
    /// The first bytes of a stream (time to first token).
    pub first_byte: bool,
}

/// The response as far as it has been read.
pub enum ResponseReader {
    /// No response headers yet.
    Waiting,
    /// Not read (not 2xx, not JSON or a stream, or no known dialect).
    Skipped,
    Json {
        encoding: Option<String>,
        body: Vec<u8>,
        /// The body outgrew `MAX_PARSED_BODY`; what was kept is dropped.
        truncated: bool,
    },
    Stream {
        decoder: Option<Box<StreamDecoder>>,
        accumulator: Box<StreamAccumulator>,
        first_byte: bool,
    },
    /// Settled.
    Done,
}

impl ResponseReader {
    /// Chooses how to read a response from its headers.
    pub fn plan(
        dialect: Option<Dialect>,
        status: u16,
        content_type: Option<&str>,
        encoding: Option<&str>,
        content_length: Option<u64>,
    ) -> (ResponseReader, BodyPlan) {
        let (Some(dialect), true) = (dialect, (200..300).contains(&status)) else {
            return (ResponseReader::Skipped, BodyPlan::Skip);
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
            let reader = ResponseReader::Stream {
                decoder,
                accumulator: Box::new(StreamAccumulator::new(dialect)),
                first_byte: false,
            };
            return (reader, BodyPlan::Streamed);
        }
        if media.ends_with("json") {
            let reader = ResponseReader::Json {
                encoding: encoding.map(str::to_string),
                body: Vec::new(),
                truncated: false,
            };
            let plan = match content_length {
                Some(n) if n <= MAX_ENVOY_BUFFERED => BodyPlan::Buffered,
                _ => BodyPlan::Streamed,
            };
            return (reader, plan);
        }
        (ResponseReader::Skipped, BodyPlan::Skip)
    }

    /// A chunk of the body (the whole body when buffered).
    pub fn feed(&mut self, chunk: &[u8]) -> Fed {
        let mut fed = Fed::default();
        match self {
            ResponseReader::Json {
                body, truncated, ..
            } => {
                fed.measured = chunk.len();
                if !*truncated {
                    if body.len() + chunk.len() <= MAX_PARSED_BODY {
                        body.extend_from_slice(chunk);
                    } else {
                        *truncated = true;
                        *body = Vec::new();
                    }
                }
            }
            ResponseReader::Stream {
                decoder,
                accumulator,
                first_byte,
            } => {
                fed.measured = chunk.len();
                if !*first_byte && !chunk.is_empty() {
                    *first_byte = true;
                    fed.first_byte = true;
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
        fed
    }

    /// Ends the response: the usage to charge and whether it is an estimate, or `None` when
    /// nothing is charged. Every later call returns `None`.
    pub fn settle(
        &mut self,
        dialect: Option<Dialect>,
        estimate: &RequestEstimate,
        endpoint: Endpoint,
        consumer: &str,
    ) -> Option<(Usage, bool)> {
        let estimated = |output_bytes: u64| {
            let mut used = usage::estimate::estimate_missing(estimate, output_bytes, None);
            used.model = estimate.model.clone();
            Some((used, true))
        };
        match std::mem::replace(self, ResponseReader::Done) {
            ResponseReader::Json {
                truncated: true, ..
            } => {
                tracing::warn!(consumer = %consumer, "response body too large to read; charging an estimate");
                estimated(0)
            }
            ResponseReader::Json { encoding, body, .. } => {
                let parsed = usage::decompress(encoding.as_deref(), &body, MAX_PARSED_BODY)
                    .and_then(|plain| {
                        usage::parse_body(dialect.unwrap_or(Dialect::OpenAi), &plain)
                            .map(|used| (used, plain.len()))
                    });
                match parsed {
                    Ok((Some(mut used), _)) => {
                        used.model = used.model.or(estimate.model.clone());
                        Some((used, false))
                    }
                    Ok((None, decoded)) => {
                        // Generation and embedding endpoints are billed without a usage
                        // block too: output from the body size for generations.
                        let output_bytes = match endpoint {
                            Endpoint::Generation => decoded as u64,
                            Endpoint::Embedding => 0,
                            Endpoint::Other => return None,
                        };
                        tracing::warn!(consumer = %consumer, "response has no usage block; charging an estimate");
                        estimated(output_bytes)
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %consumer, error = %e, "response usage unreadable; charging an estimate");
                        estimated(0)
                    }
                }
            }
            ResponseReader::Stream { accumulator, .. } => {
                let outcome = accumulator.finish();
                let settlement = usage::settle(&outcome, estimate);
                if settlement.estimated {
                    tracing::info!(consumer = %consumer, complete = outcome.complete, "stream ended without usage; charging an estimate");
                }
                Some((settlement.usage, settlement.estimated))
            }
            ResponseReader::Waiting | ResponseReader::Skipped | ResponseReader::Done => None,
        }
    }
}

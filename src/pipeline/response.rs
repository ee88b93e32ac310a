//! Reading an upstream response for its usage: how the body should reach keygate, the body
//! itself (JSON assembled whole, event streams followed chunk by chunk without keeping them),
//! and what to charge when it ends. Only 2xx responses are read.
//!
//! A body keygate cannot read (an encoding it does not decode, JSON past the per-body or the
//! process-wide assembly bound, unreadable usage) is charged the request's worst case, the
//! same amount its reservation held: never less than it could have cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

/// Default bound on the JSON bodies being assembled at once, across all exchanges.
pub const DEFAULT_MAX_ASSEMBLED: usize = 128 * 1024 * 1024;

/// The bytes of JSON bodies assembled at once in this process, and their bound.
#[derive(Debug)]
pub struct Assembly {
    held: AtomicUsize,
    cap: AtomicUsize,
}

impl Assembly {
    pub fn new(cap: usize) -> Self {
        Assembly {
            held: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
        }
    }

    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Bytes held now (tests, metrics).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes of the bound, or nothing when they would not fit.
    fn take(&self, n: usize) -> bool {
        let cap = self.cap.load(Ordering::Relaxed);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= cap)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A body's share of the assembly bound, given back when the body is settled or dropped.
pub struct Held {
    assembly: Arc<Assembly>,
    bytes: usize,
}

impl Held {
    fn grow(&mut self, n: usize) -> bool {
        let taken = self.assembly.take(n);
        if taken {
            self.bytes += n;
        }
        taken
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.assembly.give(self.bytes);
    }
}

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
        held: Held,
        /// The body outgrew `MAX_PARSED_BODY` or the assembly bound; what was kept is dropped.
        truncated: bool,
    },
    Stream {
        decoder: Option<Box<StreamDecoder>>,
        accumulator: Box<StreamAccumulator>,
        first_byte: bool,
        /// Its content-encoding is one keygate does not decode.
        undecodable: bool,
    },
    /// The response was never seen (no observer claimed the exchange), though the provider
    /// may have served it.
    Unseen,
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
        assembly: &Arc<Assembly>,
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
            let (decoder, undecodable) = match encoding
                .map(|e| StreamDecoder::new(Some(e), MAX_PARSED_BODY).map(Box::new))
                .transpose()
            {
                Ok(d) => (d, false),
                Err(e) => {
                    tracing::warn!(error = %e, "stream encoding not understood; charging the worst case");
                    (None, true)
                }
            };
            let reader = ResponseReader::Stream {
                decoder,
                accumulator: Box::new(StreamAccumulator::new(dialect)),
                first_byte: false,
                undecodable,
            };
            return (reader, BodyPlan::Streamed);
        }
        if media.ends_with("json") {
            let reader = ResponseReader::Json {
                encoding: encoding.map(str::to_string),
                body: Vec::new(),
                held: Held {
                    assembly: assembly.clone(),
                    bytes: 0,
                },
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
                body,
                held,
                truncated,
                ..
            } => {
                fed.measured = chunk.len();
                if !*truncated {
                    if body.len() + chunk.len() <= MAX_PARSED_BODY && held.grow(chunk.len()) {
                        body.extend_from_slice(chunk);
                    } else {
                        *truncated = true;
                        *body = Vec::new();
                        held.assembly.give(std::mem::take(&mut held.bytes));
                    }
                }
            }
            ResponseReader::Stream {
                decoder,
                accumulator,
                first_byte,
                undecodable,
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
                    None if *undecodable => {}
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
        worst_case: &Usage,
        endpoint: Endpoint,
        consumer: &str,
    ) -> Option<(Usage, bool)> {
        let estimated = |output_bytes: u64| {
            let mut used = usage::estimate::estimate_missing(estimate, output_bytes, None);
            used.model = estimate.model.clone();
            Some((used, true))
        };
        let worst = || Some((worst_case.clone(), true));
        match std::mem::replace(self, ResponseReader::Done) {
            ResponseReader::Json {
                truncated: true, ..
            } => {
                tracing::warn!(consumer = %consumer, "response body too large to read; charging the worst case");
                worst()
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
                        tracing::warn!(consumer = %consumer, error = %e, "response usage unreadable; charging the worst case");
                        worst()
                    }
                }
            }
            ResponseReader::Stream {
                undecodable: true, ..
            } => worst(),
            ResponseReader::Stream { accumulator, .. } => {
                let outcome = accumulator.finish();
                let settlement = usage::settle(&outcome, estimate);
                if settlement.estimated {
                    tracing::info!(consumer = %consumer, complete = outcome.complete, "stream ended without usage; charging an estimate");
                }
                Some((settlement.usage, settlement.estimated))
            }
            ResponseReader::Unseen if dialect.is_some() && endpoint != Endpoint::Other => {
                // Logged in aggregate by the handover (once a second at most), and counted.
                tracing::debug!(consumer = %consumer, "response never observed; charging the worst case");
                worst()
            }
            ResponseReader::Waiting
            | ResponseReader::Unseen
            | ResponseReader::Skipped
            | ResponseReader::Done => None,
        }
    }
}

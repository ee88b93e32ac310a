//! One request/response exchange after the admission: the body phase (estimate, reservation,
//! the `include_usage` rewrite), the response as it passes, and the settlement when it ends
//! (charge, detectors, reservation released). The exchange owns its reservation from reserve
//! to settle; dropping it (the stream closed) settles, so an interrupted response is still
//! charged and its reservation released.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use metrics::{counter, histogram};

use super::response::{BodyPlan, ResponseReader};
use super::{record, Shared};
use crate::auth::registry::Consumer;
use crate::denial::Denial;
use crate::limits::{Cost, Reservation};
use crate::providers::ErrorShape;
use crate::request::RequestView;
use crate::telemetry;
use crate::usage::{self, Dialect, Endpoint, RequestEstimate};

pub struct Exchange {
    shared: Arc<Shared>,
    consumer: Arc<Consumer>,
    source: Option<IpAddr>,
    shape: ErrorShape,
    dialect: Option<Dialect>,
    allowed_at: Instant,
    include_usage: bool,
    rewritable_path: bool,
    endpoint: Endpoint,
    /// The admission waits for the body phase (its outcome is not counted yet).
    awaits_body: bool,
    estimate: Option<RequestEstimate>,
    reservation: Option<Reservation>,
    response: ResponseReader,
}

impl Exchange {
    /// Starts the exchange of an admitted request.
    pub(super) fn start(
        shared: Arc<Shared>,
        consumer: Arc<Consumer>,
        req: &RequestView<'_>,
        source: Option<IpAddr>,
        shape: ErrorShape,
        include_usage: bool,
        body_follows: bool,
    ) -> Self {
        let allowed_at = Instant::now();
        if let Some(ip) = source {
            shared
                .accounting
                .sources
                .record(&consumer.name, ip, allowed_at);
        }
        if let Some(n) = req.content_length() {
            counter!(telemetry::REQUEST_BYTES_TOTAL, "consumer" => consumer.name.to_string(), "provider" => consumer.provider.name.to_string()).increment(n);
        }
        let dialect = Dialect::for_provider(consumer.provider.kind);
        let path = req.path.split('?').next().unwrap_or_default();
        Exchange {
            rewritable_path: path.ends_with("/chat/completions")
                || path.ends_with("/v1/completions"),
            endpoint: Endpoint::of(path),
            awaits_body: body_follows && req.method == "POST" && dialect.is_some(),
            shared,
            consumer,
            source,
            shape,
            dialect,
            allowed_at,
            include_usage,
            estimate: None,
            reservation: None,
            response: ResponseReader::Waiting,
        }
    }

    /// Whether the request body must reach [`Exchange::request_body`] before it is forwarded.
    pub fn awaits_body(&self) -> bool {
        self.awaits_body
    }

    /// The whole request body: checks its size, reserves its worst-case tokens and cost
    /// against the token limits and budgets, and counts the request's outcome. Returns a
    /// replacement body when keygate rewrote it.
    pub async fn request_body(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, Denial> {
        let estimate = match self.dialect {
            Some(dialect) => usage::request_estimate(dialect, body),
            None => RequestEstimate::default(),
        };
        let worst = self.consumer.limits.worst_case(&estimate);
        let cost = Cost {
            tokens: worst.total_tokens(),
            micro_usd: self
                .shared
                .accounting
                .price(self.consumer.provider.kind, &worst)
                .unwrap_or(0),
        };
        self.estimate = Some(estimate);
        let reserved = self
            .shared
            .limiter
            .reserve(&self.consumer, body.len() as u64, cost, SystemTime::now())
            .await;
        let pending = std::mem::take(&mut self.awaits_body);
        match reserved {
            Ok(reservation) => {
                self.reservation = Some(reservation);
                if pending {
                    record(Some(&self.consumer), "allowed");
                }
            }
            Err(reason) => {
                record(Some(&self.consumer), reason.outcome());
                return Err(Denial::new(reason, self.shape));
            }
        }
        Ok(self.rewrite(body))
    }

    fn rewrite(&self, body: &[u8]) -> Option<Vec<u8>> {
        let openai = self.dialect == Some(Dialect::OpenAi);
        if !(openai && self.include_usage && self.rewritable_path) {
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
        let (consumer, provider) = self.labels();
        histogram!(telemetry::UPSTREAM_SECONDS, "provider" => provider.clone())
            .record(self.allowed_at.elapsed().as_secs_f64());
        counter!(telemetry::RESPONSES_TOTAL, "consumer" => consumer.clone(), "provider" => provider.clone(), "status_class" => status_class(status))
            .increment(1);
        let (reader, plan) = ResponseReader::plan(
            self.dialect,
            status,
            content_type,
            encoding,
            content_length,
            &self.shared.assembly,
        );
        self.response = reader;
        if plan == BodyPlan::Skip {
            // A body keygate reads is counted chunk by chunk as it passes.
            if let Some(n) = content_length {
                counter!(telemetry::RESPONSE_BYTES_TOTAL, "consumer" => consumer, "provider" => provider).increment(n);
            }
        }
        plan
    }

    /// A chunk of the response body (the whole body when buffered).
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        let fed = self.response.feed(chunk);
        if fed.measured > 0 {
            let (consumer, provider) = self.labels();
            counter!(telemetry::RESPONSE_BYTES_TOTAL, "consumer" => consumer, "provider" => provider)
                .increment(fed.measured as u64);
        }
        if fed.first_byte {
            histogram!(telemetry::TIME_TO_FIRST_TOKEN_SECONDS, "provider" => self.consumer.provider.name.to_string())
                .record(self.allowed_at.elapsed().as_secs_f64());
        }
        if end_of_stream {
            self.finish();
        }
    }

    /// Charges what the response used, feeds the detectors and settles the reservation.
    /// Idempotent; also runs when the exchange is dropped mid-stream, which charges an
    /// estimate.
    pub fn finish(&mut self) {
        let estimate = self.estimate.clone().unwrap_or_default();
        let worst_case = self.consumer.limits.worst_case(&estimate);
        let settled = self.response.settle(
            self.dialect,
            &estimate,
            &worst_case,
            self.endpoint,
            &self.consumer.name,
        );
        let (tokens, charged) = match settled {
            Some((used, estimated)) => {
                let charge = self.shared.accounting.charge(
                    &self.consumer,
                    &used,
                    estimated,
                    SystemTime::now(),
                );
                if let Some(containment) = &self.shared.containment {
                    containment.on_charged(
                        &self.consumer,
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
            self.shared
                .limiter
                .settle(&self.consumer, &reservation, tokens, charged);
        }
    }

    fn labels(&self) -> (String, String) {
        (
            self.consumer.name.to_string(),
            self.consumer.provider.name.to_string(),
        )
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

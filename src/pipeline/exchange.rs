//! One request/response exchange after the admission: the body phase (estimate, reservation,
//! the `include_usage` rewrite), the response as it passes, and the settlement when it ends
//! (charge, detectors, reservation released). The exchange owns its reservation from reserve
//! to settle; dropping it (the stream closed) settles, so an interrupted response is still
//! charged and its reservation released.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use metrics::histogram;

use super::models::{self, compressed};
use super::response::{BodyPlan, ResponseReader};
use super::Shared;
use crate::accounting::record::Record;
use crate::auth::registry::Consumer;
use crate::denial::{Denial, DenyReason};
use crate::limits::{Cost, Reservation};
use crate::model_scope::Body;
use crate::providers::{ErrorShape, ProviderKind};
use crate::request::RequestView;
use crate::telemetry;
use crate::usage::{self, Dialect, Endpoint, RequestEstimate};
use crate::verdict::{SettledUsage, Verdict};

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
    /// The request field that caps the output at this path, where keygate can write one.
    cap_field: Option<&'static str>,
    /// The Azure OpenAI deployment in the path: the model when the body names none.
    deployment: Option<Arc<str>>,
    /// The request body is content-encoded: its usage cannot be read.
    compressed_body: bool,
    /// The admission waits for the body phase (its outcome is not counted yet).
    awaits_body: bool,
    estimate: Option<RequestEstimate>,
    reservation: Option<Reservation>,
    response: ResponseReader,
    /// This consumer's metrics, looked up once per exchange rather than once per counter and
    /// body chunk (an event stream has dozens).
    meters: Arc<Record>,
    /// The request's path (without the query), for the model it names.
    path: Box<str>,
    verdict: Verdict,
}

impl Exchange {
    /// Starts the exchange of an admitted request.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        shared: Arc<Shared>,
        consumer: Arc<Consumer>,
        req: &RequestView<'_>,
        source: Option<IpAddr>,
        shape: ErrorShape,
        include_usage: bool,
        body_follows: bool,
        verdict: Verdict,
    ) -> Self {
        let allowed_at = Instant::now();
        let meters = shared
            .accounting
            .meters
            .record(&consumer.name, &consumer.provider.name);
        if let Some(ip) = source {
            shared.accounting.meters.saw(&meters, ip, allowed_at);
        }
        if let Some(n) = req.content_length() {
            meters.request_bytes(n);
        }
        let dialect = Dialect::for_provider(consumer.provider.kind);
        let path = req.path.split('?').next().unwrap_or_default();
        let deployment = (consumer.provider.kind == ProviderKind::AzureOpenai)
            .then(|| usage::azure_deployment(path).map(Arc::from))
            .flatten();
        let compressed_body = compressed(req);
        Exchange {
            rewritable_path: path.ends_with("/chat/completions")
                || path.ends_with("/v1/completions"),
            endpoint: Endpoint::of(path),
            cap_field: dialect.and_then(|d| usage::output_cap_field(d, path)),
            deployment,
            compressed_body,
            // Every body is measured against max_request_bytes, whatever the method or provider.
            awaits_body: body_follows,
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
            meters,
            path: path.into(),
            verdict,
        }
    }

    /// What is known of the decision: the outcome once final, the model once the body was
    /// read, the usage once the response is settled.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Whether the request body must reach [`Exchange::request_body`] before it is forwarded.
    pub fn awaits_body(&self) -> bool {
        self.awaits_body
    }

    /// The whole request body: checks its size, reserves its tokens and the most it can cost
    /// against the token limits and budgets, and counts the request's outcome. Returns a
    /// replacement body when keygate rewrote it (`include_usage`, an output cap).
    pub async fn request_body(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, Denial> {
        // The model is read on its own (in full, a duplicate refused) when a list needs it, or
        // when no usage dialect reads the body; otherwise the estimate's reading names it.
        if !self.consumer.binding.models.is_empty() || self.dialect.is_none() {
            let seen = Body::Whole {
                bytes: body,
                compressed: self.compressed_body,
            };
            let (model, checked) = models::check(&self.consumer, &self.path, seen);
            self.verdict.model = model;
            if let Err(reason) = checked {
                return Err(self.refuse(reason));
            }
        }
        let policy = &self.consumer.limits;
        let billed = self.dialect.is_some() && self.endpoint != Endpoint::Other;
        let mut estimate = match self.dialect {
            Some(dialect) => usage::request_estimate(dialect, body),
            None => RequestEstimate {
                body_bytes: body.len() as u64,
                ..RequestEstimate::default()
            },
        };
        if self.verdict.model.is_none() {
            let named = self.deployment.as_deref().or(estimate.model.as_deref());
            self.verdict.model = named.map(str::to_string);
        }
        if estimate.model.is_none() {
            estimate.model = self.deployment.as_deref().map(str::to_string);
        }
        let unbounded = self.compressed_body || estimate.model.is_none();
        let reserved = if billed && policy.budgeted() && unbounded {
            Err(DenyReason::UnreadableRequest)
        } else {
            let cost = Cost {
                tokens: match self.dialect {
                    Some(_) => policy.token_reservation(&estimate),
                    None => 0,
                },
                micro_usd: match billed {
                    true => {
                        let bound = policy.cost_bound(&estimate);
                        let kind = self.consumer.provider.kind;
                        self.shared.accounting.price_or_ceiling(kind, &bound).0
                    }
                    false => 0,
                },
            };
            self.shared
                .limiter
                .reserve(&self.consumer, body.len() as u64, cost, SystemTime::now())
                .await
        };
        match reserved {
            Ok(reservation) => {
                self.reservation = Some(reservation);
                if std::mem::take(&mut self.awaits_body) {
                    self.meters.outcome("allowed");
                    self.verdict.outcome = Some("allowed");
                }
            }
            Err(reason) => return Err(self.refuse(reason)),
        }
        let rewritten = self.rewrite(body, &estimate);
        self.estimate = Some(estimate);
        Ok(rewritten)
    }

    /// A refusal in the body phase, counted once.
    fn refuse(&mut self, reason: DenyReason) -> Denial {
        self.awaits_body = false;
        self.meters.outcome(reason.outcome());
        self.verdict.outcome = Some(reason.outcome());
        Denial::new(reason, self.shape)
    }

    /// The body as sent upstream: OpenAI streams made to report usage, and the output cap
    /// written where the request names none and a budget or token limit depends on it.
    fn rewrite(&self, body: &[u8], estimate: &RequestEstimate) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        let openai = self.dialect == Some(Dialect::OpenAi);
        if openai && self.include_usage && self.rewritable_path {
            current = step(usage::ensure_include_usage(body));
        }
        let policy = &self.consumer.limits;
        if let Some(field) = self.cap_field {
            if policy.bounds_output() && estimate.max_output_tokens.is_none() {
                let cap = policy.output_cap(estimate);
                let base = current.as_deref().unwrap_or(body);
                if let Some(capped) = step(usage::ensure_output_cap(base, field, cap)) {
                    current = Some(capped);
                }
            }
        }
        current
    }

    /// Upstream response headers arrived. Returns how the body should be delivered.
    pub fn response_headers(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        encoding: Option<&str>,
        content_length: Option<u64>,
    ) -> BodyPlan {
        histogram!(telemetry::UPSTREAM_SECONDS, "provider" => self.consumer.provider.name.clone())
            .record(self.allowed_at.elapsed().as_secs_f64());
        self.meters.response(status);
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
                self.meters.response_bytes(n);
            }
        }
        plan
    }

    /// A chunk of the response body (the whole body when buffered).
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        let fed = self.response.feed(chunk);
        if fed.measured > 0 {
            self.meters.response_bytes(fed.measured as u64);
        }
        if fed.first_byte {
            histogram!(telemetry::TIME_TO_FIRST_TOKEN_SECONDS, "provider" => self.consumer.provider.name.clone())
                .record(self.allowed_at.elapsed().as_secs_f64());
        }
        if end_of_stream {
            self.finish();
        }
    }

    /// Settles an exchange whose response nobody observed: a billed request is charged its
    /// worst case (what its reservation held), since the provider may have served it.
    pub fn settle_unobserved(&mut self) {
        if matches!(self.response, ResponseReader::Waiting) {
            self.response = ResponseReader::Unseen;
        }
        self.finish();
    }

    /// Charges what the response used, feeds the detectors and settles the reservation.
    /// Idempotent; also runs when the exchange is dropped mid-stream, which charges an
    /// estimate.
    pub fn finish(&mut self) {
        let estimate = self.estimate.clone().unwrap_or_default();
        let bound = self.consumer.limits.cost_bound(&estimate);
        let settled = self.response.settle(
            self.dialect,
            &estimate,
            &bound,
            self.endpoint,
            &self.consumer.name,
        );
        let (tokens, charged) = match settled {
            Some((mut used, estimated)) => {
                // Azure OpenAI is priced by deployment when the operator priced it (the
                // reservation was), whatever model name the answer reports.
                if let Some(deployment) = &self.deployment {
                    let kind = self.consumer.provider.kind;
                    if self.shared.accounting.has_price(kind, deployment) {
                        used.model = Some(deployment.to_string());
                    }
                }
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
                self.verdict.usage = Some(SettledUsage {
                    input_tokens: used.input_tokens,
                    output_tokens: used.output_tokens,
                    micro_usd: charge.micro_usd,
                    estimated,
                });
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
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A rewrite's result; a body that is not JSON is left as it is.
fn step(rewritten: Result<Option<Vec<u8>>, usage::UsageError>) -> Option<Vec<u8>> {
    rewritten.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "request body not rewritten");
        None
    })
}

//! The request phase: one admission per request, in a fixed order: authentication and scope
//! (a failure counted by the failed-authentication guard, which answers 429 once an address
//! fails too often), size and request rate, observation (and canary keys), then the
//! credential.

use std::time::Instant;

use super::exchange::Exchange;
use super::{record, source, Admission, Admitted, Phases, Pipeline};
use crate::auth::registry::Consumer;
use crate::denial::{Denial, DenyReason};
use crate::gate::request_shape;
use crate::mutation::{HeaderMutation, HeaderValue};
use crate::request::RequestView;
use crate::telemetry;
use crate::usage::decode::readable_accept_encoding;

impl Pipeline {
    /// Admits or denies one request, counting its outcome unless the body phase still has to
    /// decide ([`Admitted::read_body`]).
    pub async fn admit(&self, req: &RequestView<'_>, phases: Phases) -> Admission {
        let started = Instant::now();
        let admission = self.admit_unmeasured(req, phases).await;
        telemetry::record_decision_time(started.elapsed());
        admission
    }

    async fn admit_unmeasured(&self, req: &RequestView<'_>, phases: Phases) -> Admission {
        let s = &self.shared;
        let shape = request_shape(req);
        let settings = **s.settings.load();
        let deny = |reason: DenyReason, consumer: Option<&Consumer>| {
            record(consumer, reason.outcome());
            Admission::Denied(Denial::new(reason, shape))
        };
        let client = source::client_address(req, &settings);
        let consumer = match s.gate.authenticate(req) {
            Ok(consumer) => consumer,
            Err(refused) => {
                // The guard slows key guessing from one address without locking out the
                // valid keys that share it (a NAT, a load balancer).
                if refused.reason.status() == 401 {
                    if let Err(flood) = s.limiter.check_source(client) {
                        return deny(flood, None);
                    }
                    s.limiter.failed_auth(client);
                }
                return deny(refused.reason, refused.consumer.as_deref());
            }
        };
        let content_length = match (req.content_length(), req.body_len) {
            (Some(declared), Some(real)) => Some(declared.max(real)),
            (declared, real) => declared.or(real),
        };
        if let Err(reason) = s.limiter.admit_request(&consumer, content_length).await {
            return deny(reason, Some(&consumer));
        }
        if let Some(containment) = &s.containment {
            if !containment.on_allowed(&consumer, client).await {
                return deny(DenyReason::Suspended, Some(&consumer));
            }
        }
        let mut mutation = match s.gate.credential(&consumer, req) {
            Ok(mutation) => mutation,
            Err(reason) => return deny(reason, Some(&consumer)),
        };
        if let Err(reason) = fits_header_limit(req, &mutation, settings.max_request_headers) {
            return deny(reason, Some(&consumer));
        }
        if phases != Phases::HeadersOnly {
            // Responses come back in a coding keygate reads for their usage.
            let offered = req
                .header("accept-encoding")
                .and_then(|v| std::str::from_utf8(v).ok());
            if let Some(readable) = offered.and_then(readable_accept_encoding) {
                mutation
                    .set
                    .push(("accept-encoding".into(), HeaderValue::Plain(readable)));
            }
        }
        let (exchange, read_body) = match phases {
            Phases::HeadersOnly => (None, false),
            Phases::Full { body_follows } => {
                let exchange = Exchange::start(
                    s.clone(),
                    consumer.clone(),
                    req,
                    client,
                    shape,
                    settings.include_usage,
                    body_follows,
                );
                let read_body = exchange.awaits_body();
                (Some(exchange), read_body)
            }
        };
        if !read_body {
            record(Some(&consumer), "allowed");
        }
        Admission::Allowed(Admitted {
            consumer,
            mutation,
            exchange,
            read_body,
        })
    }
}

/// Whether the request, once keygate's mutation is applied, stays within Envoy's header count
/// limit; past it Envoy would fail the request with an empty 503.
fn fits_header_limit(
    req: &RequestView<'_>,
    mutation: &HeaderMutation,
    limit: usize,
) -> Result<(), DenyReason> {
    if req.header_count == 0 {
        return Ok(());
    }
    let added = mutation
        .set
        .iter()
        .filter(|(name, _)| req.header(name).is_none())
        .count();
    let removed = mutation
        .remove
        .iter()
        .filter(|name| req.header(name).is_some())
        .count();
    if (req.header_count + added).saturating_sub(removed) > limit {
        return Err(DenyReason::TooManyHeaders { limit });
    }
    Ok(())
}

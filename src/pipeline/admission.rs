//! The request phase: one admission per request, in a fixed order: authentication by key or
//! workload identity, the consumer's binding (identities, allowed sources), status and scope
//! (an authentication failure counted by the failed-authentication guard, which answers 429
//! once an address fails too often; a bound key presented from another identity reported to
//! the detectors), the model when the body is already known, size and request rate,
//! observation (and canary keys), then the credential. Every answer carries the
//! [`Verdict`] so far.

use std::time::Instant;

use super::exchange::Exchange;
use super::{identity, models, record, source, Admission, Admitted, Phases, Pipeline};
use crate::auth::registry::Consumer;
use crate::denial::{Denial, DenyReason};
use crate::denial_binding::BindingDenial;
use crate::gate::request_shape;
use crate::identity::SpiffeId;
use crate::model_scope::Body;
use crate::mutation::{HeaderMutation, HeaderValue};
use crate::request::{Caller, RequestView};
use crate::telemetry;
use crate::usage::decode::readable_accept_encoding;
use crate::verdict::Verdict;

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
        let client = source::client_address(req, &settings);
        let identity_text = identity::identity_text(req, &settings);
        let caller = Caller {
            identity: identity_text
                .as_deref()
                .and_then(|t| SpiffeId::parse(t).ok()),
            address: client,
        };
        let mut verdict = Verdict {
            identity: caller.identity.map(|id| id.as_str().to_string()),
            client_address: client,
            ..Verdict::default()
        };
        let deny = |reason: DenyReason, consumer: Option<&Consumer>, mut verdict: Verdict| {
            record(s, consumer, reason.outcome());
            verdict.outcome = Some(reason.outcome());
            Admission::Denied(Denial::new(reason, shape), verdict)
        };
        let authenticated = match s.gate.authenticate(req, &caller) {
            Ok(authenticated) => authenticated,
            Err(refused) => {
                if let Some(consumer) = &refused.consumer {
                    describe(&mut verdict, consumer);
                    verdict.key_id = refused.key_id;
                }
                // The guard slows key guessing from one address without locking out the
                // valid keys that share it (a NAT, a load balancer).
                if refused.reason.status() == 401 {
                    if let Err(flood) = s.limiter.check_source(client) {
                        return deny(flood, None, verdict);
                    }
                    s.limiter.failed_auth(client);
                }
                if let (Some(containment), Some(consumer)) = (&s.containment, &refused.consumer) {
                    if let DenyReason::Binding(BindingDenial::IdentityMismatch { presented }) =
                        &refused.reason
                    {
                        containment
                            .on_identity_mismatch(consumer, client, presented.as_deref())
                            .await;
                    }
                }
                return deny(refused.reason, refused.consumer.as_deref(), verdict);
            }
        };
        let consumer = authenticated.consumer;
        describe(&mut verdict, &consumer);
        verdict.key_id = authenticated.key_id;
        verdict.authenticated_by = Some(authenticated.by);
        // The model is checked here when the body is already known (or there is none); a
        // body still to come is checked by the exchange.
        let body = match phases {
            Phases::HeadersOnly => Some(models::body_seen(req)),
            Phases::Full {
                body_follows: false,
            } => Some(Body::Absent),
            Phases::Full { body_follows: true } => None,
        };
        if let Some(body) = body {
            let (model, checked) = models::check(&consumer, req.path, body);
            verdict.model = model;
            if let Err(reason) = checked {
                return deny(reason, Some(&consumer), verdict);
            }
        }
        let content_length = match (req.content_length(), req.body_len) {
            (Some(declared), Some(real)) => Some(declared.max(real)),
            (declared, real) => declared.or(real),
        };
        if let Err(reason) = s.limiter.admit_request(&consumer, content_length).await {
            return deny(reason, Some(&consumer), verdict);
        }
        if let Some(containment) = &s.containment {
            if !containment.on_allowed(&consumer, client).await {
                return deny(DenyReason::Suspended, Some(&consumer), verdict);
            }
        }
        let mut mutation = match s.gate.credential(&consumer, req) {
            Ok(mutation) => mutation,
            Err(reason) => return deny(reason, Some(&consumer), verdict),
        };
        if let Err(reason) = fits_header_limit(req, &mutation, settings.max_request_headers) {
            return deny(reason, Some(&consumer), verdict);
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
                    verdict.clone(),
                );
                let read_body = exchange.awaits_body();
                (Some(exchange), read_body)
            }
        };
        if !read_body {
            record(s, Some(&consumer), "allowed");
            verdict.outcome = Some("allowed");
        }
        Admission::Allowed(Admitted {
            consumer,
            mutation,
            exchange,
            read_body,
            verdict,
        })
    }
}

/// The consumer's names in the verdict.
fn describe(verdict: &mut Verdict, consumer: &Consumer) {
    verdict.consumer = Some(consumer.name.clone());
    verdict.team = consumer.team.clone();
    verdict.provider = Some(consumer.provider.name.clone());
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

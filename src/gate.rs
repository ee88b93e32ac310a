//! The gate: the protocol-independent decision core. ext_proc, ext_authz and unit tests all
//! call [`Gate::decide`] with a [`RequestView`] and act on the [`Decision`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::auth::extract::{presented_key, Presented, CREDENTIAL_HEADERS};
use crate::auth::{key, Consumer, Lookup, Overrides, Registry};
use crate::config::ConsumerStatus;
use crate::decision::{Allow, Decision, HeaderMutation, HeaderValue};
use crate::denial::{Denial, DenyReason};
use crate::providers::ErrorShape;
use crate::request::RequestView;
use crate::secrets::CredentialCache;
use crate::{path, scope, telemetry};

/// Headers keygate sets for the upstream; any inbound `x-keygate-*` is removed first.
pub const CONSUMER_HEADER: &str = "x-keygate-consumer";
pub const PROVIDER_HEADER: &str = "x-keygate-provider";
const KEYGATE_PREFIX: &str = "x-keygate-";

/// Holds the current registry snapshot and the credential cache.
#[derive(Debug)]
pub struct Gate {
    registry: ArcSwap<Registry>,
    overrides: ArcSwap<Overrides>,
    credentials: Arc<CredentialCache>,
    trust_forwarded_for: AtomicBool,
}

impl Gate {
    pub fn new(registry: Registry, credentials: Arc<CredentialCache>) -> Self {
        Gate {
            registry: ArcSwap::from_pointee(registry),
            overrides: ArcSwap::from_pointee(Overrides::default()),
            credentials,
            trust_forwarded_for: AtomicBool::new(false),
        }
    }

    /// Whether the edges take the client address from `x-forwarded-for`.
    pub fn trust_forwarded_for(&self) -> bool {
        self.trust_forwarded_for.load(Ordering::Relaxed)
    }

    pub fn set_trust_forwarded_for(&self, trust: bool) {
        self.trust_forwarded_for.store(trust, Ordering::Relaxed);
    }

    /// Replaces the registry atomically; in-flight decisions finish on the old snapshot.
    pub fn swap_registry(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
    }

    /// Replaces the operator overrides (suspensions, revocations) atomically.
    pub fn set_overrides(&self, overrides: Overrides) {
        self.overrides.store(Arc::new(overrides));
    }

    /// The current overrides (for listings).
    pub fn overrides(&self) -> Arc<Overrides> {
        self.overrides.load_full()
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    pub fn credentials(&self) -> &Arc<CredentialCache> {
        &self.credentials
    }

    /// Decides one request and records its metrics.
    pub fn decide(&self, req: &RequestView<'_>) -> Decision {
        let started = Instant::now();
        let registry = self.registry.load();
        let (decision, consumer) = self.evaluate(&registry, req, SystemTime::now());
        telemetry::record_decision(consumer.as_deref(), decision.outcome(), started.elapsed());
        decision
    }

    fn evaluate(
        &self,
        registry: &Registry,
        req: &RequestView<'_>,
        now: SystemTime,
    ) -> (Decision, Option<Arc<Consumer>>) {
        let shape = request_shape(req);
        let deny = |reason, shape| Decision::Deny(Denial::new(reason, shape));
        let overrides = self.overrides.load();

        let normalized = match path::normalize(req.path) {
            Ok(p) => p,
            Err(e) => return (deny(DenyReason::BadPath(e), shape), None),
        };
        let text = match presented_key(req) {
            Presented::One(text) => text,
            Presented::None => return (deny(DenyReason::MissingKey, shape), None),
            Presented::Ambiguous => return (deny(DenyReason::ConflictingKeys, shape), None),
            Presented::Unreadable => return (deny(DenyReason::UnreadableCredential, shape), None),
        };
        let parsed = match key::parse(text) {
            Ok(k) => k,
            Err(e) => return (deny(DenyReason::MalformedKey(e), shape), None),
        };
        let consumer = match registry.lookup(&parsed, now) {
            Lookup::Found(c, hash) => {
                if overrides.key_revoked(&hash.id_bytes()) {
                    return (deny(DenyReason::KeyRevoked, shape), Some(c.clone()));
                }
                c.clone()
            }
            Lookup::Unknown => return (deny(DenyReason::UnknownKey, shape), None),
            Lookup::Expired(c) => return (deny(DenyReason::ExpiredKey, shape), Some(c.clone())),
        };
        let refuse = |reason| (deny(reason, shape), Some(consumer.clone()));
        let status = match consumer.status {
            ConsumerStatus::Revoked => ConsumerStatus::Revoked,
            configured => overrides.status(&consumer.name).unwrap_or(configured),
        };
        match status {
            ConsumerStatus::Active => {}
            ConsumerStatus::Suspended => return refuse(DenyReason::Suspended),
            ConsumerStatus::Revoked => return refuse(DenyReason::Revoked),
        }
        if let Err(denial) = scope::check(&consumer.routes, req.method, &normalized) {
            return refuse(DenyReason::OutOfScope {
                method: req.method.chars().take(16).collect(),
                path: normalized.chars().take(200).collect(),
                sensitive: denial == scope::ScopeDenial::SensitiveNotNamed,
            });
        }
        let Some(credential) = self.credentials.get(&consumer.credential) else {
            return refuse(DenyReason::CredentialUnavailable);
        };
        let mutation = rewrite(req, &consumer, credential.api_key.clone());
        (
            Decision::Allow(Allow {
                consumer: consumer.clone(),
                mutation,
            }),
            Some(consumer),
        )
    }
}

/// Strips every credential header and inbound `x-keygate-*`, then injects the provider key
/// and keygate's identity headers. The injected header is set (replacing), not removed.
fn rewrite(
    req: &RequestView<'_>,
    consumer: &Consumer,
    secret: Arc<secrecy::SecretString>,
) -> HeaderMutation {
    let provider = &consumer.provider;
    let inject = provider.inject_header.as_str();
    let mut remove: Vec<String> = CREDENTIAL_HEADERS
        .iter()
        .filter(|h| **h != inject)
        .map(|h| h.to_string())
        .collect();
    for h in &req.headers {
        let own = h.name == CONSUMER_HEADER || h.name == PROVIDER_HEADER;
        if h.name.starts_with(KEYGATE_PREFIX) && !own && !remove.iter().any(|r| r == h.name) {
            remove.push(h.name.to_string());
        }
    }
    let set = vec![
        (
            inject.to_string(),
            HeaderValue::Secret {
                prefix: provider.inject_prefix.clone(),
                secret,
            },
        ),
        (
            CONSUMER_HEADER.to_string(),
            HeaderValue::Plain(consumer.name.to_string()),
        ),
        (
            PROVIDER_HEADER.to_string(),
            HeaderValue::Plain(provider.name.to_string()),
        ),
    ];
    HeaderMutation { remove, set }
}

/// Errors are shaped for the SDK the client is using, which the request itself reveals; the
/// consumer's provider would be wrong exactly when a client calls the wrong API.
pub fn request_shape(req: &RequestView<'_>) -> ErrorShape {
    let anthropic = req.header("anthropic-version").is_some()
        || req.header("x-api-key").is_some()
        || req.path.starts_with("/v1/messages");
    if anthropic {
        ErrorShape::Anthropic
    } else {
        ErrorShape::OpenAi
    }
}

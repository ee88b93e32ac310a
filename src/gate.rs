//! The gate: who is calling and whether they may call this route, and the rewrite that sends
//! the request upstream with the provider's credential. Pure decisions over the current
//! registry, overrides and credential cache; no metrics, no limits (the pipeline applies
//! those between [`Gate::authenticate`] and [`Gate::credential`]).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::auth::binding;
use crate::auth::extract::{key_in_query, presented_key, Presented, CREDENTIAL_HEADERS};
use crate::auth::key;
use crate::auth::key_id::KeyId;
use crate::auth::overrides::Overrides;
use crate::auth::registry::{Consumer, IdentityFound, Lookup, Registry};
use crate::config::{Authentication, ConsumerStatus};
use crate::denial::{Denial, DenyReason};
use crate::denial_binding::BindingDenial;
use crate::mutation::{HeaderMutation, HeaderValue};
use crate::providers::ErrorShape;
use crate::request::{Caller, RequestView};
use crate::secrets::cache::CredentialCache;
use crate::{path, scope};

/// Headers keygate sets for the upstream; any inbound `x-keygate-*` is removed first.
pub const CONSUMER_HEADER: &str = "x-keygate-consumer";
pub const PROVIDER_HEADER: &str = "x-keygate-provider";
const KEYGATE_PREFIX: &str = "x-keygate-";
/// Workload identity details for the gateway, never for the provider.
const CLIENT_CERT_HEADER: &str = "x-forwarded-client-cert";

/// An allowed request: who it is, and how to rewrite it for the upstream.
#[derive(Debug, Clone)]
pub struct Allow {
    pub consumer: Arc<Consumer>,
    pub mutation: HeaderMutation,
}

/// The gate's whole answer ([`Gate::decide`]).
#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
}

impl Decision {
    /// The `outcome` label of `keygate_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allowed",
            Decision::Deny(d) => d.reason.outcome(),
        }
    }
}

/// A refusal by the gate, with the consumer (and key) when the credential identified one.
#[derive(Debug, Clone)]
pub struct Refused {
    pub reason: DenyReason,
    pub consumer: Option<Arc<Consumer>>,
    pub key_id: Option<KeyId>,
}

/// An authenticated request: its consumer, the key it presented (none when its workload
/// identity alone authenticated it), and how it was authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub consumer: Arc<Consumer>,
    pub key_id: Option<KeyId>,
    pub by: Authentication,
}

/// Holds the current registry snapshot, the operator overrides and the credential cache.
#[derive(Debug)]
pub struct Gate {
    registry: ArcSwap<Registry>,
    overrides: Arc<ArcSwap<Overrides>>,
    credentials: Arc<CredentialCache>,
}

impl Gate {
    pub fn new(registry: Registry, credentials: Arc<CredentialCache>) -> Self {
        Gate {
            registry: ArcSwap::from_pointee(registry),
            overrides: Arc::new(ArcSwap::from_pointee(Overrides::default())),
            credentials,
        }
    }

    /// Replaces the registry atomically; in-flight decisions finish on the old snapshot.
    pub fn swap_registry(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
    }

    /// Replaces the operator overrides (suspensions, revocations) atomically.
    pub fn set_overrides(&self, overrides: Overrides) {
        self.overrides.store(Arc::new(overrides));
    }

    /// The cell the override store publishes into (shared, so the store needs no gate).
    pub fn overrides_cell(&self) -> Arc<ArcSwap<Overrides>> {
        self.overrides.clone()
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

    /// Authenticates the request by its key or its caller's workload identity, checks the
    /// caller against the consumer's binding (identities, allowed sources), then the
    /// consumer's status and the route against its scope.
    pub fn authenticate(
        &self,
        req: &RequestView<'_>,
        caller: &Caller<'_>,
    ) -> Result<Authenticated, Refused> {
        self.authenticate_at(req, caller, SystemTime::now())
    }

    fn authenticate_at(
        &self,
        req: &RequestView<'_>,
        caller: &Caller<'_>,
        now: SystemTime,
    ) -> Result<Authenticated, Refused> {
        let refuse = |reason, consumer: Option<&Arc<Consumer>>, key_id| Refused {
            reason,
            consumer: consumer.cloned(),
            key_id,
        };
        let normalized =
            path::normalize(req.path).map_err(|e| refuse(DenyReason::BadPath(e), None, None))?;
        if key_in_query(req.path) {
            return Err(refuse(DenyReason::KeyInQuery, None, None));
        }
        let registry = self.registry.load();
        let overrides = self.overrides.load();
        let presented = presented_key(req);
        let key_attempt = is_key_attempt(&presented);
        let (consumer, key_id) = match (presented, caller.identity) {
            // Without a keygate key, a verified identity may authenticate on its own; a
            // placeholder some SDKs insist on sending (`api_key="unused"`) is ignored.
            (Presented::None, Some(id)) | (Presented::One(_), Some(id)) if !key_attempt => {
                match registry.lookup_identity(&id) {
                    IdentityFound::Found(c) => (c.clone(), None),
                    IdentityFound::Unknown | IdentityFound::Ambiguous => {
                        let reason = BindingDenial::UnknownIdentity {
                            identity: id.as_str().to_string(),
                        };
                        return Err(refuse(DenyReason::Binding(reason), None, None));
                    }
                }
            }
            (Presented::One(text), _) => {
                let parsed = key::parse(text)
                    .map_err(|e| refuse(DenyReason::MalformedKey(e), None, None))?;
                match registry.lookup(&parsed, now) {
                    Lookup::Found(c, hash) => {
                        let kid = hash.key_id();
                        if overrides.key_revoked(&kid) {
                            return Err(refuse(DenyReason::KeyRevoked, Some(c), Some(kid)));
                        }
                        (c.clone(), Some(kid))
                    }
                    Lookup::Unknown => return Err(refuse(DenyReason::UnknownKey, None, None)),
                    Lookup::Expired(c) => {
                        return Err(refuse(DenyReason::ExpiredKey, Some(c), None))
                    }
                }
            }
            (Presented::None, _) => return Err(refuse(DenyReason::MissingKey, None, None)),
            (Presented::Ambiguous, _) => {
                return Err(refuse(DenyReason::ConflictingKeys, None, None))
            }
            (Presented::Unreadable, _) => {
                return Err(refuse(DenyReason::UnreadableCredential, None, None))
            }
        };
        let refuse_here = |reason| Err(refuse(reason, Some(&consumer), key_id));
        if let Err(denial) = binding::check(&consumer, caller) {
            return refuse_here(DenyReason::Binding(denial));
        }
        let status = match consumer.status {
            ConsumerStatus::Revoked => ConsumerStatus::Revoked,
            configured => overrides.status(&consumer.name).unwrap_or(configured),
        };
        match status {
            ConsumerStatus::Active => {}
            ConsumerStatus::Suspended => return refuse_here(DenyReason::Suspended),
            ConsumerStatus::Revoked => return refuse_here(DenyReason::Revoked),
        }
        if let Err(denial) = scope::check(&consumer.routes, req.method, &normalized) {
            let reason = DenyReason::OutOfScope {
                method: req.method.chars().take(16).collect(),
                path: normalized.chars().take(200).collect(),
                sensitive: denial == scope::ScopeDenial::SensitiveNotNamed,
            };
            return refuse_here(reason);
        }
        let by = match key_id {
            None => Authentication::Identity,
            Some(_) if consumer.binding.authentication == Authentication::Key => {
                Authentication::Key
            }
            Some(_) => Authentication::KeyAndIdentity,
        };
        Ok(Authenticated {
            consumer,
            key_id,
            by,
        })
    }

    /// The rewrite for the upstream: every credential header and inbound `x-keygate-*`
    /// stripped, the provider's credential and keygate's identity headers set.
    pub fn credential(
        &self,
        consumer: &Consumer,
        req: &RequestView<'_>,
    ) -> Result<HeaderMutation, DenyReason> {
        let Some(credential) = self.credentials.get(&consumer.credential) else {
            return Err(match self.credentials.revoked(&consumer.credential) {
                true => DenyReason::CredentialRevoked,
                false => DenyReason::CredentialUnavailable,
            });
        };
        if self
            .overrides
            .load()
            .credential_revoked(&credential.fingerprint)
        {
            return Err(DenyReason::CredentialRevoked);
        }
        Ok(rewrite(req, consumer, credential.api_key.clone()))
    }

    /// Authenticate, scope and credential in one call, without limits or metrics (tests and
    /// the decision benchmark).
    pub fn decide(&self, req: &RequestView<'_>) -> Decision {
        let shape = request_shape(req);
        let deny = |reason| Decision::Deny(Denial::new(reason, shape));
        let caller = Caller {
            identity: None,
            address: req.peer,
        };
        let consumer = match self.authenticate(req, &caller) {
            Ok(authenticated) => authenticated.consumer,
            Err(refused) => return deny(refused.reason),
        };
        match self.credential(&consumer, req) {
            Ok(mutation) => Decision::Allow(Allow { consumer, mutation }),
            Err(reason) => deny(reason),
        }
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
    if req.header(CLIENT_CERT_HEADER).is_some() && inject != CLIENT_CERT_HEADER {
        remove.push(CLIENT_CERT_HEADER.to_string());
    }
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

/// Whether the request presents something meant as a keygate key (`kg_…`, in any case), as
/// opposed to a placeholder an SDK requires next to workload-identity authentication.
fn is_key_attempt(presented: &Presented<'_>) -> bool {
    match presented {
        Presented::One(text) => text
            .get(..3)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("kg_")),
        _ => false,
    }
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

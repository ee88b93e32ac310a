//! The protocol-free request pipeline. The request phase turns a [`RequestView`] into one
//! [`Admission`] (authenticate, with the failed-authentication guard on its failures → scope
//! → size → rate → observation and canary → credential); the body phase reserves tokens and budget; the [`Exchange`] owns that
//! reservation until its response is settled and charged. Each request's outcome is counted
//! here, once (`keygate_requests_total`). The Envoy edges only translate to and from it.
//!
//! [`RequestView`]: crate::request::RequestView

mod admission;
pub mod exchange;
mod handover;
mod identity;
mod models;
mod response;
mod source;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::accounting::Accounting;
use crate::auth::registry::Consumer;
use crate::containment::Containment;
use crate::denial::Denial;
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::mutation::HeaderMutation;
use crate::verdict::Verdict;

pub use exchange::Exchange;
pub use handover::{Handover, MAX_PARK, MAX_PARKED};
pub use response::{
    Assembly, BodyPlan, DEFAULT_MAX_ASSEMBLED, MAX_ENVOY_BUFFERED, MAX_PARSED_BODY,
};

/// The parts of a config the pipeline reads per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Trusted proxies in front of Envoy (`network.xff_num_trusted_hops`): 0 takes the peer
    /// as the client address, N the entry N places left of the rightmost in
    /// `x-forwarded-for`.
    pub xff_trusted_hops: u32,
    /// Add `stream_options.include_usage` to OpenAI streaming requests that lack it.
    pub include_usage: bool,
    /// Bound on the JSON response bodies assembled at once (`usage.max_assembled_bytes`).
    pub max_assembled_bytes: usize,
    /// Envoy's limit on a request's headers (`network.max_request_headers`).
    pub max_request_headers: usize,
    /// Take the caller's identity from `x-forwarded-client-cert`
    /// (`network.trust_forwarded_client_cert`) instead of Envoy's TLS peer.
    pub trust_forwarded_client_cert: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            xff_trusted_hops: 0,
            include_usage: true,
            max_assembled_bytes: DEFAULT_MAX_ASSEMBLED,
            max_request_headers: 100,
            trust_forwarded_client_cert: false,
        }
    }
}

/// What the edge can show the pipeline of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phases {
    /// Headers only (ext_authz): the admission is final at the headers.
    HeadersOnly,
    /// Headers, then the body if one follows, then the response (ext_proc).
    Full { body_follows: bool },
}

/// An allowed request: who it is, how to rewrite it, and (with [`Phases::Full`]) the exchange
/// that follows it.
pub struct Admitted {
    pub consumer: Arc<Consumer>,
    pub mutation: HeaderMutation,
    pub exchange: Option<Exchange>,
    /// The edge must deliver the request body to [`Exchange::request_body`] before the
    /// request is forwarded; the admission is final only then.
    pub read_body: bool,
    /// What is known of the decision so far (its outcome only once final).
    pub verdict: Verdict,
}

/// The request phase's answer. Not boxed: it is moved once, into the edge's stream state.
#[allow(clippy::large_enum_variant)]
pub enum Admission {
    Allowed(Admitted),
    Denied(Denial, Verdict),
}

/// What every exchange shares.
pub(crate) struct Shared {
    gate: Arc<Gate>,
    limiter: Arc<Limiter>,
    accounting: Arc<Accounting>,
    containment: Option<Arc<Containment>>,
    settings: ArcSwap<Settings>,
    assembly: Arc<Assembly>,
    handover: Handover,
}

/// The pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &**self.shared.settings.load())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(
        gate: Arc<Gate>,
        limiter: Arc<Limiter>,
        accounting: Arc<Accounting>,
        containment: Option<Arc<Containment>>,
    ) -> Self {
        Pipeline {
            shared: Arc::new(Shared {
                gate,
                limiter,
                accounting,
                containment,
                settings: ArcSwap::from_pointee(Settings::default()),
                assembly: Arc::new(Assembly::new(DEFAULT_MAX_ASSEMBLED)),
                handover: Handover::new(),
            }),
        }
    }

    /// Applies a (re)loaded config's settings to requests that start from now on.
    pub fn configure(&self, settings: Settings) {
        self.shared.assembly.set_cap(settings.max_assembled_bytes);
        self.shared.settings.store(Arc::new(settings));
    }

    /// The JSON response bytes being assembled now.
    pub fn assembling(&self) -> usize {
        self.shared.assembly.held()
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.shared.gate
    }

    /// Exchanges between their request phase and an observed response (see [`Handover`]).
    pub fn handover(&self) -> &Handover {
        &self.shared.handover
    }
}

/// Counts one request's outcome (`keygate_requests_total`).
fn record(shared: &Shared, consumer: Option<&Consumer>, outcome: &'static str) {
    let meters = &shared.accounting.meters;
    match consumer {
        Some(c) => meters.record(&c.name, &c.provider.name).outcome(outcome),
        None => meters.unknown().outcome(outcome),
    }
}

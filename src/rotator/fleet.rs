//! The replicas, as a rotation sees them: switch every one to a key and confirm it, revoke a
//! key on every one, and record an outcome in their audit log and notifications. The admin
//! API client implements it (`crate::cli::fleet`); the transaction knows nothing of gRPC.

use std::time::Duration;

use crate::audit::entry::AuditEvent;
use crate::secrets::fingerprint::Fingerprint;

/// What every replica must end up serving for the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// This key.
    Serving(Fingerprint),
    /// Nothing (its key was revoked): `credential_revoked`.
    Revoked,
    /// Whatever the source now says: a refresh (the rotation record too) without a check.
    Any,
}

/// Why the replicas could not be switched or told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// Some replicas did not confirm in time; each line names one and what it served.
    #[error("{confirmed} of {total} replicas confirmed within {within:?}; {}", .problems.join("; "))]
    Unconfirmed {
        confirmed: usize,
        total: usize,
        within: Duration,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Unreachable(String),
}

/// One outcome for the audit log and the webhooks (reported to one replica).
#[derive(Debug, Clone)]
pub struct Event {
    pub event: AuditEvent,
    pub credential: String,
    pub rotation: String,
    pub fingerprint: Option<Fingerprint>,
    /// `old → new` and what happened, in words; never a key.
    pub detail: String,
    pub actor: String,
    pub reason: String,
}

/// Every replica of keygate.
#[async_trait::async_trait]
pub trait Fleet: Send + Sync {
    /// Has every replica re-read `credential` now and confirms each serves what `expect` says,
    /// retrying until `within`; returns how many replicas confirmed.
    async fn switch(
        &self,
        credential: &str,
        expect: Expect,
        within: Duration,
    ) -> Result<usize, FleetError>;

    /// Revokes a provider key on every replica (503 `credential_revoked` while it is served);
    /// returns how many replicas applied it.
    async fn revoke(
        &self,
        credential: &str,
        fingerprint: Fingerprint,
        reason: &str,
    ) -> Result<usize, FleetError>;

    /// Records an outcome in one replica's audit log and webhooks.
    async fn report(&self, event: &Event) -> Result<(), FleetError>;
}

//! The one home of operator actions: whoever suspends, resumes or revokes (an operator
//! through the admin API, or a detector), the action is checked, applied, persisted,
//! broadcast to every replica, audited and notified here.

use std::sync::Arc;
use std::time::Instant;

use metrics::histogram;

use super::broadcast::{now_ms, Broadcaster};
use super::store::{OverrideStore, StateError};
use super::Action;
use crate::audit::{AuditEntry, AuditEvent, AuditLog, AuditResult};
use crate::config::ConsumerStatus;
use crate::detect::{DetectorKind, Detectors, Severity};
use crate::gate::Gate;
use crate::notify::{Notification, Notifications};
use crate::telemetry;

/// Who acts.
#[derive(Debug, Clone)]
pub enum Actor {
    /// An operator, through the admin API method named.
    Operator { name: String, method: &'static str },
    /// A detector's automatic action.
    Detector(DetectorKind),
    /// A secret scanner's leak report (GitHub's alert, or an operator's gitleaks report):
    /// `reporter` names who reported it. The leak intake notifies the owner itself.
    Scanner { reporter: String },
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("no consumer named {0:?}")]
    UnknownConsumer(String),
    #[error("no provider uses credential {0:?}")]
    UnknownCredential(String),
    #[error("consumer {0:?} is revoked; revocation is final (create a new consumer)")]
    Final(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What an applied action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub changed: bool,
    pub message: String,
}

pub struct OverrideService {
    store: Arc<OverrideStore>,
    broadcaster: Option<Broadcaster>,
    gate: Arc<Gate>,
    detectors: Arc<Detectors>,
    audit: Arc<AuditLog>,
    notifications: Arc<Notifications>,
}

impl std::fmt::Debug for OverrideService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverrideService")
            .field("state_file", &self.store.path())
            .finish_non_exhaustive()
    }
}

impl OverrideService {
    pub fn new(
        store: Arc<OverrideStore>,
        broadcaster: Option<Broadcaster>,
        gate: Arc<Gate>,
        detectors: Arc<Detectors>,
        audit: Arc<AuditLog>,
        notifications: Arc<Notifications>,
    ) -> Self {
        OverrideService {
            store,
            broadcaster,
            gate,
            detectors,
            audit,
            notifications,
        }
    }

    pub fn store(&self) -> &Arc<OverrideStore> {
        &self.store
    }

    /// Checks, applies, persists, broadcasts, audits and notifies one action.
    pub async fn apply(
        &self,
        action: Action,
        actor: &Actor,
        reason: &str,
    ) -> Result<Applied, OverrideError> {
        self.check(&action)?;
        let started = Instant::now();
        let at_ms = now_ms();
        let changed = self.store.apply(&action, true)?;
        histogram!(telemetry::REVOCATION_PROPAGATION_SECONDS, "path" => "local")
            .record(started.elapsed().as_secs_f64());
        if let Some(b) = &self.broadcaster {
            b.publish(&action, at_ms).await;
        }
        if let Action::Resume { consumer } = &action {
            self.detectors.forget(consumer);
        }
        self.record(&action, actor, reason);
        tracing::info!(
            action = action.name(),
            target = %action.target(),
            actor = actor_name(actor),
            changed,
            "override applied"
        );
        Ok(Applied {
            changed,
            message: format!(
                "{} {}: {}",
                action.name(),
                action.target(),
                if changed { "applied" } else { "already so" }
            ),
        })
    }

    /// The consumer must exist, and a revoked one is never resumed.
    fn check(&self, action: &Action) -> Result<(), OverrideError> {
        if let Action::RevokeCredential { credential, .. } = action {
            let known = self
                .gate
                .registry()
                .referenced_credentials()
                .iter()
                .any(|r| **r == **credential);
            return match known {
                true => Ok(()),
                false => Err(OverrideError::UnknownCredential(credential.clone())),
            };
        }
        let Some(name) = action.consumer() else {
            return Ok(());
        };
        let registry = self.gate.registry();
        let Some(consumer) = registry.consumer(name) else {
            return Err(OverrideError::UnknownConsumer(name.to_string()));
        };
        let revoked = consumer.status == ConsumerStatus::Revoked
            || self.gate.overrides().status(name) == Some(ConsumerStatus::Revoked);
        if revoked && matches!(action, Action::Resume { .. }) {
            return Err(OverrideError::Final(name.to_string()));
        }
        Ok(())
    }

    fn record(&self, action: &Action, actor: &Actor, reason: &str) {
        let event = match action {
            Action::Suspend { .. } => AuditEvent::ConsumerSuspended,
            Action::Resume { .. } => AuditEvent::ConsumerResumed,
            Action::RevokeConsumer { .. } => AuditEvent::ConsumerRevoked,
            Action::RevokeKey { .. } => AuditEvent::KeyRevoked,
            Action::RevokeCredential { .. } => AuditEvent::CredentialRevoked,
        };
        let key_id = match action {
            Action::RevokeKey { key_id } => Some(*key_id),
            _ => None,
        };
        let mut entry = match actor {
            Actor::Operator { name, method } => AuditEntry::new(event, name)
                .reason(reason)
                .request(method, "grpc")
                .result(AuditResult::Ok),
            Actor::Detector(kind) => AuditEntry::new(event, "detector")
                .detector(*kind)
                .reason(kind.as_str()),
            Actor::Scanner { reporter } => AuditEntry::new(event, reporter)
                .reason(reason)
                .result(AuditResult::Ok),
        };
        if let Some(c) = action.consumer() {
            entry = entry.consumer(c);
        }
        if let Some(k) = key_id {
            entry = entry.key_id(k);
        }
        if let Action::RevokeCredential {
            credential,
            fingerprint,
        } = action
        {
            self.audit
                .record(entry.credential(credential, Some(*fingerprint)));
            if let Actor::Operator { name, .. } = actor {
                self.notifications.send(Notification::credential(
                    event,
                    Severity::Critical,
                    &format!("{credential} ({fingerprint})"),
                    name,
                    Some(reason),
                ));
            }
            return;
        }
        self.audit.record(entry);
        // A detector's action is notified with its detection, by containment.
        if let Actor::Operator { name, .. } = actor {
            self.notifications.send(Notification::admin(
                event,
                action.consumer().map(Arc::from),
                key_id,
                name,
                Some(reason),
            ));
        }
    }
}

fn actor_name(actor: &Actor) -> &str {
    match actor {
        Actor::Operator { name, .. } => name,
        Actor::Detector(kind) => kind.as_str(),
        Actor::Scanner { reporter } => reporter,
    }
}

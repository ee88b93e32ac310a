//! Where reported leaks are acted on, whoever reported them (GitHub's alert endpoint, or an
//! operator's `keygate leaks report`): a key keygate knows and has not revoked is revoked
//! through the override service (applied, persisted, broadcast to every replica, audited),
//! and its consumer's owner is notified with the consumer, the team and where the key was
//! found. Every report is audited with its source and the key id, never the key.
//!
//! What a reporter learns is the same for every well-formed key: [`Received`] counts what
//! arrived, never what was known, so a report cannot probe whether a key exists.

use std::sync::Arc;

use metrics::counter;

use super::report::Leak;
use crate::audit::{AuditEntry, AuditEvent, AuditLog, AuditResult};
use crate::config::ConsumerStatus;
use crate::gate::Gate;
use crate::notify::{Notification, Notifications};
use crate::overrides::{Action, Actor, OverrideService};
use crate::telemetry;

/// What a reporter is told: how many leaks arrived. The same whatever keygate knew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub leaks: usize,
}

/// What happened to one leak (for the audit line and the metric; never for the reporter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Revoked,
    AlreadyRevoked,
    Unknown,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Revoked => "revoked",
            Outcome::AlreadyRevoked => "already_revoked",
            Outcome::Unknown => "unknown_key",
            Outcome::Failed => "failed",
        }
    }
}

/// Acts on leak reports.
pub struct LeakIntake {
    gate: Arc<Gate>,
    overrides: Arc<OverrideService>,
    audit: Arc<AuditLog>,
    notifications: Arc<Notifications>,
}

impl std::fmt::Debug for LeakIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakIntake").finish_non_exhaustive()
    }
}

impl LeakIntake {
    pub fn new(
        gate: Arc<Gate>,
        overrides: Arc<OverrideService>,
        audit: Arc<AuditLog>,
        notifications: Arc<Notifications>,
    ) -> Self {
        LeakIntake {
            gate,
            overrides,
            audit,
            notifications,
        }
    }

    /// Revokes every known, unrevoked key among `leaks`; `reporter` is who reported them (an
    /// operator's name, or the scanner's).
    pub async fn report(&self, leaks: &[Leak], reporter: &str) -> Received {
        for leak in leaks {
            let outcome = self.one(leak, reporter).await;
            counter!(telemetry::LEAK_REPORTS_TOTAL,
                "scanner" => leak.scanner.as_str(), "outcome" => outcome.as_str())
            .increment(1);
        }
        Received { leaks: leaks.len() }
    }

    async fn one(&self, leak: &Leak, reporter: &str) -> Outcome {
        let key_id = leak.hash.key_id();
        let registry = self.gate.registry();
        let consumer = registry.consumer_of_key(&leak.hash, leak.env).cloned();
        let mut entry = AuditEntry::new(AuditEvent::KeyLeaked, reporter)
            .key_id(key_id)
            .leak(leak.scanner, &leak.location);
        let Some(consumer) = consumer else {
            self.audit.record(entry.reason(Outcome::Unknown.as_str()));
            return Outcome::Unknown;
        };
        entry = entry.consumer(&consumer.name);
        let overrides = self.gate.overrides();
        let revoked = overrides.key_revoked(&key_id)
            || consumer.status == ConsumerStatus::Revoked
            || overrides.status(&consumer.name) == Some(ConsumerStatus::Revoked);
        drop(overrides);
        if revoked {
            self.audit
                .record(entry.reason(Outcome::AlreadyRevoked.as_str()));
            return Outcome::AlreadyRevoked;
        }
        let actor = Actor::Scanner {
            reporter: reporter.to_string(),
        };
        let reason = format!(
            "leaked: found by {} at {}",
            leak.scanner.as_str(),
            leak.location.summary()
        );
        match self
            .overrides
            .apply(Action::RevokeKey { key_id }, &actor, &reason)
            .await
        {
            Ok(applied) if !applied.changed => {
                self.audit
                    .record(entry.reason(Outcome::AlreadyRevoked.as_str()));
                Outcome::AlreadyRevoked
            }
            Ok(_) => {
                self.audit.record(entry.reason(Outcome::Revoked.as_str()));
                self.notifications.send(Notification::leak(
                    consumer.name.clone(),
                    consumer.team.clone(),
                    key_id,
                    leak.scanner,
                    &leak.location,
                    reporter,
                ));
                tracing::warn!(consumer = %consumer.name, key_id = %key_id, scanner = leak.scanner.as_str(),
                    "leaked key revoked");
                Outcome::Revoked
            }
            Err(e) => {
                tracing::error!(error = %e, key_id = %key_id, "could not revoke a leaked key");
                self.audit.record(
                    entry
                        .reason(Outcome::Failed.as_str())
                        .result(AuditResult::Error),
                );
                Outcome::Failed
            }
        }
    }
}

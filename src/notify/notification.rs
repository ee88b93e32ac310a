//! What one notification says: a detector firing, or an admin action. Built only from values
//! that hold no secret (registry names, key ids, redacted free text).

use std::sync::Arc;
use std::time::SystemTime;

use super::redact::redact;
use crate::audit::entry::AuditEvent;
use crate::auth::key_id::KeyId;
use crate::detect::action::Action;
use crate::detect::detection::{Detection, DetectorKind, Evidence, Severity};
use crate::leaks::report::{LeakLocation, Scanner};

/// What a notification is about: a detector firing, or an admin or CLI action.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub(super) event: AuditEvent,
    pub(super) consumer: Option<Arc<str>>,
    pub(super) key_id: Option<KeyId>,
    pub(super) detector: Option<DetectorKind>,
    pub(super) severity: Severity,
    pub(super) action: Option<Action>,
    pub(super) evidence: Option<Evidence>,
    pub(super) actor: Option<String>,
    pub(super) reason: Option<String>,
    /// A provider credential and what happened to it (`openai/production: fp_… → fp_…`).
    pub(super) credential: Option<String>,
    pub(super) at: SystemTime,
    /// The consumer's team, when the notification is for its owner (a leak).
    pub(super) team: Option<Arc<str>>,
    /// Which scanner found a leaked key, and where (cleaned).
    pub(super) leak: Option<(Scanner, LeakLocation)>,
}

impl Notification {
    /// A detector fired.
    pub fn from_detection(d: &Detection) -> Self {
        Notification {
            event: AuditEvent::Detection,
            consumer: Some(d.consumer.clone()),
            key_id: None,
            detector: Some(d.detector),
            severity: d.severity,
            action: Some(d.action),
            evidence: Some(d.evidence.clone()),
            actor: None,
            reason: None,
            credential: None,
            at: d.at,
            team: None,
            leak: None,
        }
    }

    /// An admin did something (revoked a key, suspended or resumed a consumer, …). Severity
    /// is `warning`; `actor` and `reason` are redacted.
    pub fn admin(
        event: AuditEvent,
        consumer: Option<Arc<str>>,
        key_id: Option<KeyId>,
        actor: &str,
        reason: Option<&str>,
    ) -> Self {
        Notification {
            event,
            consumer,
            key_id,
            detector: None,
            severity: Severity::Warning,
            action: None,
            evidence: None,
            actor: Some(redact(actor)),
            reason: reason.map(redact),
            credential: None,
            at: SystemTime::now(),
            team: None,
            leak: None,
        }
    }

    /// A scanner found `key_id` of `consumer` (of `team`) leaked at `location`, and keygate
    /// revoked it. Critical: the owner must replace the key.
    pub fn leak(
        consumer: Arc<str>,
        team: Option<Arc<str>>,
        key_id: KeyId,
        scanner: Scanner,
        location: &LeakLocation,
        reporter: &str,
    ) -> Self {
        Notification {
            event: AuditEvent::KeyLeaked,
            consumer: Some(consumer),
            key_id: Some(key_id),
            detector: None,
            severity: Severity::Critical,
            action: None,
            evidence: None,
            actor: Some(redact(reporter)),
            reason: Some("the key was found in public and is revoked; issue a new one".into()),
            credential: None,
            at: SystemTime::now(),
            team,
            leak: Some((scanner, location.clone().cleaned())),
        }
    }

    /// Something happened to a provider credential (revoked, rotated, rolled back): `subject`
    /// names it (reference, fingerprints, rotation id), never a key; all text is redacted.
    pub fn credential(
        event: AuditEvent,
        severity: Severity,
        subject: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Self {
        Notification {
            severity,
            credential: Some(redact(subject)),
            ..Notification::admin(event, None, None, actor, reason)
        }
    }

    /// The same notification, stamped `at` (tests, replays).
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }
}

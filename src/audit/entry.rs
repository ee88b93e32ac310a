//! One audit line: what happened, who did it, to what. An entry cannot carry a secret: keys
//! appear only as [`KeyId`]s, every free-text field passes through [`redact`], and fields are
//! private so nothing bypasses the setters.

use std::time::SystemTime;

use serde::Serialize;

use crate::auth::key_id::KeyId;
use crate::detect::action::Action;
use crate::detect::detection::{Detection, DetectorKind, Evidence};
use crate::leaks::report::{LeakLocation, Scanner};
use crate::notify::redact::redact;
use crate::secrets::fingerprint::Fingerprint;
use crate::serde_util::rfc3339;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    KeyCreated,
    KeyRevoked,
    ConsumerSuspended,
    ConsumerResumed,
    ConsumerRevoked,
    ConsumerThrottled,
    ConsumerUnthrottled,
    Detection,
    AdminCall,
    /// A scanner reported a keygate key as leaked.
    KeyLeaked,
    /// A provider credential's key was revoked in an emergency (`keygate credentials revoke`).
    CredentialRevoked,
    /// A rotation switched every replica to a new provider key.
    CredentialRotated,
    /// A rotation failed and was undone.
    RotationRolledBack,
    /// A rotation (or the old key's revocation) failed and needs an operator.
    RotationFailed,
    /// The old key of a rotation was revoked at the provider after the grace period.
    OldKeyRevoked,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::KeyCreated => "key_created",
            AuditEvent::KeyRevoked => "key_revoked",
            AuditEvent::ConsumerSuspended => "consumer_suspended",
            AuditEvent::ConsumerResumed => "consumer_resumed",
            AuditEvent::ConsumerRevoked => "consumer_revoked",
            AuditEvent::ConsumerThrottled => "consumer_throttled",
            AuditEvent::ConsumerUnthrottled => "consumer_unthrottled",
            AuditEvent::Detection => "detection",
            AuditEvent::AdminCall => "admin_call",
            AuditEvent::KeyLeaked => "key_leaked",
            AuditEvent::CredentialRevoked => "credential_revoked",
            AuditEvent::CredentialRotated => "credential_rotated",
            AuditEvent::RotationRolledBack => "rotation_rolled_back",
            AuditEvent::RotationFailed => "rotation_failed",
            AuditEvent::OldKeyRevoked => "old_key_revoked",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Ok,
    /// Refused (bad credentials, not allowed, unknown consumer).
    Denied,
    Error,
}

/// One audit line. Built with [`AuditEntry::new`] or [`AuditEntry::from_detection`] and the
/// setters; the fields `at, event, actor, reason, consumer, key_id, detector, result` are
/// always present (null when unset).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    #[serde(with = "rfc3339")]
    at: SystemTime,
    event: AuditEvent,
    actor: String,
    reason: Option<String>,
    consumer: Option<String>,
    key_id: Option<KeyId>,
    detector: Option<DetectorKind>,
    result: AuditResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<Evidence>,
    /// For `key_leaked`: which scanner, and where the key was found (cleaned; never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    scanner: Option<Scanner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<LeakLocation>,
    /// A provider credential reference (`openai/production`).
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
    /// The provider key's fingerprint (`fp_…`), never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<Fingerprint>,
    /// The rotation (`rot_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<String>,
}

impl AuditEntry {
    /// `event` by `actor` (e.g. `admin`, `cli`, `detector`), now, result `ok`.
    pub fn new(event: AuditEvent, actor: &str) -> Self {
        AuditEntry {
            at: SystemTime::now(),
            event,
            actor: redact(actor),
            reason: None,
            consumer: None,
            key_id: None,
            detector: None,
            result: AuditResult::Ok,
            action: None,
            request: None,
            evidence: None,
            scanner: None,
            location: None,
            credential: None,
            fingerprint: None,
            rotation: None,
        }
    }

    /// A detector firing, with its action and evidence.
    pub fn from_detection(d: &Detection) -> Self {
        let mut entry = AuditEntry::new(AuditEvent::Detection, "detector")
            .consumer(&d.consumer)
            .detector(d.detector)
            .action(d.action);
        entry.at = d.at;
        entry.evidence = Some(d.evidence.clone());
        entry
    }

    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(redact(reason));
        self
    }

    pub fn consumer(mut self, consumer: &str) -> Self {
        self.consumer = Some(redact(consumer).chars().take(128).collect());
        self
    }

    /// The provider credential acted on, by reference and (when known) fingerprint.
    pub fn credential(mut self, reference: &str, fingerprint: Option<Fingerprint>) -> Self {
        self.credential = Some(redact(reference).chars().take(128).collect());
        self.fingerprint = fingerprint;
        self
    }

    pub fn rotation(mut self, id: &str) -> Self {
        self.rotation = Some(redact(id).chars().take(64).collect());
        self
    }

    pub fn key_id(mut self, key_id: KeyId) -> Self {
        self.key_id = Some(key_id);
        self
    }

    pub fn detector(mut self, detector: DetectorKind) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    pub fn result(mut self, result: AuditResult) -> Self {
        self.result = result;
        self
    }

    /// The admin call, as `METHOD /path` (the query is dropped).
    pub fn request(mut self, method: &str, path: &str) -> Self {
        let path = path.split('?').next().unwrap_or_default();
        self.request = Some(redact(&format!("{method} {path}")));
        self
    }

    /// Where a scanner found a leaked key ([`LeakLocation`] fields are cleaned when built).
    pub fn leak(mut self, scanner: Scanner, location: &LeakLocation) -> Self {
        self.scanner = Some(scanner);
        self.location = Some(location.clone().cleaned());
        self
    }

    pub fn event(&self) -> AuditEvent {
        self.event
    }

    /// The JSON line, newline included.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
    }
}

//! The admin API's provider-credential calls: the inventory (`ListCredentials`), a refresh of
//! named credentials that finishes before the reply (a rotation's switch), the emergency
//! `RevokeCredential`, and `ReportRotation` (a rotation's outcome into the audit log and the
//! webhooks). No reply or line carries a key: fingerprints and key ids only.

use std::sync::Arc;

use tonic::Status;

use super::pb;
use crate::app::{App, ServedCredentials};
use crate::audit::{AuditEntry, AuditEvent, AuditResult};
use crate::detect::Severity;
use crate::notify::Notification;
use crate::overrides::Action;
use crate::rotation::record::Phase;
use crate::secrets::inventory::{self, unix, Entry, Sources};
use crate::secrets::Fingerprint;

fn served(app: &App) -> Result<ServedCredentials, Status> {
    app.credentials
        .read()
        .ok()
        .and_then(|s| s.clone())
        .ok_or_else(|| Status::unavailable("no configuration in service yet"))
}

/// The inventory of every credential the registry references.
pub fn list(app: &App) -> Result<pb::ListCredentialsReply, Status> {
    let served = served(app)?;
    let registry = app.gate.registry();
    let overrides = app.gate.overrides();
    let entries = inventory::inventory(
        &Sources {
            registry: &registry,
            cache: app.gate.credentials(),
            overrides: &overrides,
            rotation: &served.rotation,
            source: Some(&*served.source),
        },
        &registry.referenced_credentials(),
        true,
    );
    Ok(pb::ListCredentialsReply {
        credentials: entries.iter().map(to_pb).collect(),
    })
}

fn to_pb(e: &Entry) -> pb::CredentialInfo {
    let record = e.record.as_deref();
    let secs = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs());
    let at = |t: Option<std::time::SystemTime>| t.map_or(0, unix);
    pb::CredentialInfo {
        reference: e.reference.to_string(),
        providers: e.providers.clone(),
        source: e.source.clone(),
        version: e.version.unwrap_or(0),
        fingerprint: e.fingerprint.map(|f| f.to_string()).unwrap_or_default(),
        state: e.state.to_string(),
        metadata: e.meta.clone().into_iter().collect(),
        rotated_at_unix: at(e.rotated_at),
        consumers: e.consumers.clone(),
        every_seconds: secs(e.every),
        grace_seconds: secs(e.grace),
        next_due_unix: at(e.next_due),
        rotation_phase: record
            .map(|r| r.phase.as_str().to_string())
            .unwrap_or_default(),
        last_rotation: record
            .and_then(|r| r.last.as_ref())
            .map(|l| {
                format!(
                    "{} {} at {} by {} ({}): {}",
                    l.result.as_str(),
                    l.id,
                    l.at.map_or("-".into(), |t| humantime::format_rfc3339_seconds(t)
                        .to_string()),
                    l.by,
                    l.step,
                    l.detail
                )
            })
            .unwrap_or_default(),
        last_health_check_unix: at(record
            .and_then(|r| r.last_health_check.as_ref())
            .and_then(|h| h.at)),
        last_health_check_ok: record
            .and_then(|r| r.last_health_check.as_ref())
            .is_some_and(|h| h.ok),
        revoke_old_after_unix: match record {
            Some(r) if r.phase == Phase::Grace => {
                at(r.attempt.as_ref().and_then(|a| a.revoke_after))
            }
            _ => 0,
        },
        rotations: record
            .map(|r| r.counts.clone().into_iter().collect())
            .unwrap_or_default(),
    }
}

/// Re-reads the named credentials and their records now; replies with what each serves.
pub async fn refresh_named(app: &App, names: &[String]) -> Result<String, Status> {
    let served = served(app)?;
    let registry = app.gate.registry();
    let referenced = registry.referenced_credentials();
    let mut refs: Vec<Arc<str>> = Vec::new();
    for name in names {
        match referenced.iter().find(|r| ***r == **name) {
            Some(r) => refs.push(r.clone()),
            None => {
                return Err(Status::not_found(format!(
                    "no consumer uses credential {name:?}"
                )))
            }
        }
    }
    let cache = app.gate.credentials();
    let report = cache.refresh(&*served.source, &refs).await;
    cache.refresh_records(&*served.source, &refs).await;
    crate::runtime::publish_inventory(&app.gate, &served.rotation, &*served.source, &referenced);
    let lines: Vec<String> = refs
        .iter()
        .map(
            |r| match (cache.get(r), report.failures.iter().find(|(f, _)| f == r)) {
                (Some(c), _) => format!(
                    "{r}: {} version {}",
                    c.fingerprint,
                    c.version.map_or("-".into(), |v| v.to_string())
                ),
                (None, _) if cache.revoked(r) => format!("{r}: revoked"),
                (None, Some((_, e))) => format!("{r}: unavailable ({e})"),
                (None, None) => format!("{r}: unavailable"),
            },
        )
        .collect();
    Ok(lines.join("; "))
}

/// The emergency revocation of one provider key on this replica (and, through the override
/// service, persisted and broadcast).
pub fn revocation(app: &App, request: &pb::RevokeCredentialRequest) -> Result<Action, Status> {
    let fingerprint = if request.fingerprint.is_empty() {
        app.gate
            .credentials()
            .get(&request.credential)
            .map(|c| c.fingerprint)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "this replica serves no key for {:?}; name the fingerprint",
                    request.credential
                ))
            })?
    } else {
        request
            .fingerprint
            .parse::<Fingerprint>()
            .map_err(|e| Status::invalid_argument(format!("{:?}: {e}", request.fingerprint)))?
    };
    Ok(Action::RevokeCredential {
        credential: request.credential.clone(),
        fingerprint,
    })
}

/// A rotation outcome into the audit log and the webhooks.
pub fn report(app: &App, actor: &str, r: &pb::RotationReport) -> Result<(), Status> {
    let (event, severity, result) = match r.event.as_str() {
        "credential_rotated" => (
            AuditEvent::CredentialRotated,
            Severity::Warning,
            AuditResult::Ok,
        ),
        "old_key_revoked" => (
            AuditEvent::OldKeyRevoked,
            Severity::Warning,
            AuditResult::Ok,
        ),
        "rotation_rolled_back" => (
            AuditEvent::RotationRolledBack,
            Severity::Critical,
            AuditResult::Error,
        ),
        "rotation_failed" => (
            AuditEvent::RotationFailed,
            Severity::Critical,
            AuditResult::Error,
        ),
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown rotation event {other:?}"
            )))
        }
    };
    let fingerprint = r.fingerprint.parse::<Fingerprint>().ok();
    let reason = if r.reason.is_empty() {
        &r.detail
    } else {
        &r.reason
    };
    app.audit.record(
        AuditEntry::new(event, actor)
            .credential(&r.credential, fingerprint)
            .rotation(&r.rotation)
            .reason(reason)
            .request("ReportRotation", "grpc")
            .result(result),
    );
    app.notifications.send(Notification::credential(
        event,
        severity,
        &format!("{}: {}", r.credential, r.detail),
        actor,
        (!r.reason.is_empty()).then_some(r.reason.as_str()),
    ));
    Ok(())
}

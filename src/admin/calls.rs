//! The admin calls that are not overrides: lifting a detector's throttle, and taking leaked
//! keys an operator reports (`keygate leaks report`). The caller is already authorized; each
//! call is audited under the operator's name.

use std::sync::Arc;

use metrics::counter;
use tonic::{Response, Status};

use super::operators::Identity;
use super::pb;
use crate::app::App;
use crate::audit::{AuditEntry, AuditEvent, AuditResult};
use crate::auth::{KeyEnv, KeyHash};
use crate::leaks::report::{Leak, LeakLocation, Scanner};
use crate::notify::Notification;
use crate::telemetry;

/// Most leaks one ReportLeaks call takes (a report with more is sent in several calls).
pub const MAX_LEAKS_PER_CALL: usize = 10_000;

/// `UnthrottleConsumer`: lifts a detector's throttle on this replica.
pub fn unthrottle(
    app: &App,
    identity: &Identity,
    request: pb::ConsumerRequest,
) -> Result<Response<pb::ActionReply>, Status> {
    let name = request.consumer;
    if app.gate.registry().consumer(&name).is_none() {
        return Err(Status::not_found(format!("no consumer named {name:?}")));
    }
    let changed = app.limiter.unthrottle(&name);
    app.audit.record(
        AuditEntry::new(AuditEvent::ConsumerUnthrottled, &identity.name)
            .consumer(&name)
            .reason(&request.reason)
            .request("UnthrottleConsumer", "grpc")
            .result(AuditResult::Ok),
    );
    if changed {
        app.notifications.send(Notification::admin(
            AuditEvent::ConsumerUnthrottled,
            Some(Arc::from(name.as_str())),
            None,
            &identity.name,
            Some(&request.reason),
        ));
    }
    counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => "UnthrottleConsumer", "result" => "ok")
        .increment(1);
    tracing::info!(consumer = %name, actor = %identity.name, changed, "unthrottle");
    Ok(Response::new(pb::ActionReply {
        changed,
        message: format!(
            "unthrottle {name}: {}",
            if changed {
                "applied"
            } else {
                "was not throttled"
            }
        ),
    }))
}

/// `ReportLeaks`: each reported key keygate knows is revoked fleet-wide. The reply counts what
/// arrived and nothing else, whatever keygate knew.
pub async fn report_leaks(
    app: &App,
    identity: &Identity,
    request: pb::ReportLeaksRequest,
) -> Result<Response<pb::ReportLeaksReply>, Status> {
    if request.leaks.len() > MAX_LEAKS_PER_CALL {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_LEAKS_PER_CALL} leaks per call"
        )));
    }
    let leaks = request
        .leaks
        .into_iter()
        .enumerate()
        .map(|(i, l)| to_leak(l).map_err(|e| Status::invalid_argument(format!("leaks[{i}]: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let received = app.leaks.report(&leaks, &identity.name).await;
    counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => "ReportLeaks", "result" => "ok")
        .increment(1);
    app.audit.record(
        AuditEntry::new(AuditEvent::AdminCall, &identity.name)
            .request("ReportLeaks", "grpc")
            .result(AuditResult::Ok),
    );
    Ok(Response::new(pb::ReportLeaksReply {
        received: u32::try_from(received.leaks).unwrap_or(u32::MAX),
        message: format!(
            "{} leaked key(s) received; each one keygate knows is revoked on every replica and its owner notified",
            received.leaks
        ),
    }))
}

fn to_leak(l: pb::LeakedKey) -> Result<Leak, &'static str> {
    let hash: KeyHash = l
        .key_hash
        .parse()
        .map_err(|_| "key_hash must be sha256:<64 hex>")?;
    let env = match l.env.as_str() {
        "live" => KeyEnv::Live,
        "test" => KeyEnv::Test,
        _ => return Err("env must be live or test"),
    };
    let some = |s: String| Some(s).filter(|s| !s.is_empty());
    Ok(Leak {
        hash,
        env,
        scanner: Scanner::Gitleaks,
        location: LeakLocation {
            repository: some(l.repository),
            file: some(l.file),
            line: Some(l.line),
            commit: some(l.commit),
            url: some(l.url),
            kind: some(l.kind),
        }
        .cleaned(),
    })
}

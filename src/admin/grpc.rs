//! The admin gRPC service. Every call needs `authorization: Bearer <admin token>` (compared in
//! constant time), is counted, and is written to the audit log; a bad or missing token is
//! UNAUTHENTICATED and audited too.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, histogram};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::broadcast::now_ms;
use super::pb;
use super::pb::admin_server::Admin;
use super::state::Action;
use crate::accounting::Accounting;
use crate::audit::{AuditEntry, AuditEvent, AuditResult};
use crate::config::ConsumerStatus;
use crate::containment::Containment;
use crate::gate::Gate;
use crate::notify::{KeyId, Notification};
use crate::telemetry;

pub struct AdminService {
    pub gate: Arc<Gate>,
    pub accounting: Arc<Accounting>,
    pub containment: Arc<Containment>,
    /// Wakes the reloader (credential refresh).
    pub refresh: Arc<Notify>,
    pub token: SecretString,
}

impl AdminService {
    fn authorize<T>(&self, method: &'static str, request: &Request<T>) -> Result<String, Status> {
        let actor = request
            .metadata()
            .get("x-keygate-actor")
            .and_then(|v| v.to_str().ok())
            .map(|a| {
                a.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect::<String>()
            })
            .unwrap_or_else(|| "unknown".into());
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let ok: bool = presented
            .as_bytes()
            .ct_eq(self.token.expose_secret().as_bytes())
            .into();
        if ok && !presented.is_empty() {
            return Ok(actor);
        }
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => method, "result" => "unauthenticated")
            .increment(1);
        self.containment.audit.record(
            AuditEntry::new(AuditEvent::AdminCall, &actor)
                .request(method, "grpc")
                .result(AuditResult::Denied)
                .reason("unauthenticated"),
        );
        Err(Status::unauthenticated(
            "a valid admin bearer token is required",
        ))
    }

    async fn act(
        &self,
        method: &'static str,
        actor: String,
        action: Action,
        reason: String,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let started = Instant::now();
        let at_ms = now_ms();
        let changed = self
            .containment
            .store
            .apply(&action, true)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        histogram!(telemetry::REVOCATION_PROPAGATION_SECONDS, "path" => "local")
            .record(started.elapsed().as_secs_f64());
        if let Some(b) = &self.containment.broadcaster {
            b.publish(&action, at_ms).await;
        }
        if let Action::Resume { consumer } = &action {
            self.containment.detectors.forget(consumer);
        }
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => method, "result" => "ok").increment(1);
        let (event, consumer, key_id) = match &action {
            Action::Suspend { consumer } => {
                (AuditEvent::ConsumerSuspended, Some(consumer.as_str()), None)
            }
            Action::Resume { consumer } => {
                (AuditEvent::ConsumerResumed, Some(consumer.as_str()), None)
            }
            Action::RevokeConsumer { consumer } => {
                (AuditEvent::ConsumerRevoked, Some(consumer.as_str()), None)
            }
            Action::RevokeKey { key_id } => {
                (AuditEvent::KeyRevoked, None, key_id.parse::<KeyId>().ok())
            }
        };
        let mut entry = AuditEntry::new(event, &actor)
            .reason(&reason)
            .request(method, "grpc")
            .result(AuditResult::Ok);
        if let Some(c) = consumer {
            entry = entry.consumer(c);
        }
        if let Some(k) = key_id.clone() {
            entry = entry.key_id(k);
        }
        self.containment.audit.record(entry);
        if let Some(n) = &self.containment.notifier {
            n.send(Notification::admin(
                event,
                consumer.map(Arc::from),
                key_id,
                &actor,
                Some(&reason),
            ));
        }
        tracing::info!(
            action = action.name(),
            target = action.target(),
            actor,
            changed,
            "admin action applied"
        );
        Ok(Response::new(pb::ActionReply {
            changed,
            message: format!(
                "{} {}: {}",
                action.name(),
                action.target(),
                if changed { "applied" } else { "already so" }
            ),
        }))
    }

    fn audit_call(&self, method: &'static str, actor: &str) {
        self.containment.audit.record(
            AuditEntry::new(AuditEvent::AdminCall, actor)
                .request(method, "grpc")
                .result(AuditResult::Ok),
        );
    }

    fn known_consumer(&self, name: &str) -> Result<(), Status> {
        if self.gate.registry().consumer(name).is_some() {
            Ok(())
        } else {
            Err(Status::not_found(format!("no consumer named {name:?}")))
        }
    }

    /// Revocation is final: a revoked consumer (in the store or by an override) is never
    /// resumed; the team gets a new consumer instead.
    fn not_revoked(&self, name: &str) -> Result<(), Status> {
        let configured = self
            .gate
            .registry()
            .consumer(name)
            .is_some_and(|c| c.status == ConsumerStatus::Revoked);
        let overridden = self.gate.overrides().status(name) == Some(ConsumerStatus::Revoked);
        if configured || overridden {
            return Err(Status::failed_precondition(format!(
                "consumer {name:?} is revoked; revocation is final (create a new consumer)"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn suspend_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("SuspendConsumer", &request)?;
        let r = request.into_inner();
        self.known_consumer(&r.consumer)?;
        self.act(
            "SuspendConsumer",
            actor,
            Action::Suspend {
                consumer: r.consumer,
            },
            r.reason,
        )
        .await
    }

    async fn resume_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("ResumeConsumer", &request)?;
        let r = request.into_inner();
        self.known_consumer(&r.consumer)?;
        self.not_revoked(&r.consumer)?;
        self.act(
            "ResumeConsumer",
            actor,
            Action::Resume {
                consumer: r.consumer,
            },
            r.reason,
        )
        .await
    }

    async fn revoke_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("RevokeConsumer", &request)?;
        let r = request.into_inner();
        self.known_consumer(&r.consumer)?;
        self.act(
            "RevokeConsumer",
            actor,
            Action::RevokeConsumer {
                consumer: r.consumer,
            },
            r.reason,
        )
        .await
    }

    async fn revoke_key(
        &self,
        request: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("RevokeKey", &request)?;
        let r = request.into_inner();
        self.act(
            "RevokeKey",
            actor,
            Action::RevokeKey { key_id: r.key_id },
            r.reason,
        )
        .await
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersReply>, Status> {
        let actor = self.authorize("ListConsumers", &request)?;
        let registry = self.gate.registry();
        let overrides = self.gate.overrides();
        let now = SystemTime::now();
        let consumers = registry
            .consumers()
            .iter()
            .map(|c| pb::ConsumerInfo {
                name: c.name.to_string(),
                team: c.team.as_deref().unwrap_or_default().to_string(),
                provider: c.provider.name.to_string(),
                environment: c.environment.to_string(),
                status: overrides
                    .status(&c.name)
                    .unwrap_or(c.status)
                    .as_str()
                    .to_string(),
                last_seen_unix: self
                    .accounting
                    .sources
                    .last_seen(&c.name)
                    .map(|ago| unix(now) - ago.as_secs() as i64)
                    .unwrap_or(0),
                month_to_date_usd: self.accounting.ledger.month_to_date(&c.name, now) as f64 / 1e6,
                key_ids: c.key_ids(),
            })
            .collect();
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => "ListConsumers", "result" => "ok")
            .increment(1);
        self.audit_call("ListConsumers", &actor);
        Ok(Response::new(pb::ListConsumersReply { consumers }))
    }

    async fn refresh_credentials(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("RefreshCredentials", &request)?;
        self.refresh.notify_one();
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => "RefreshCredentials", "result" => "ok")
            .increment(1);
        self.audit_call("RefreshCredentials", &actor);
        Ok(Response::new(pb::ActionReply {
            changed: true,
            message: "credential refresh started".into(),
        }))
    }

    async fn list_detections(
        &self,
        request: Request<pb::ListDetectionsRequest>,
    ) -> Result<Response<pb::ListDetectionsReply>, Status> {
        let actor = self.authorize("ListDetections", &request)?;
        let limit = request.get_ref().limit.clamp(1, 1000) as usize;
        let detections = self.containment.recent(limit);
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => "ListDetections", "result" => "ok")
            .increment(1);
        self.audit_call("ListDetections", &actor);
        Ok(Response::new(pb::ListDetectionsReply { detections }))
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

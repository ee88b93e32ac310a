//! The admin gRPC service. Every call needs `authorization: Bearer <admin token>` (compared in
//! constant time), is counted, and is written to the audit log; a bad or missing token is
//! UNAUTHENTICATED and audited too. Actions go through the override service.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::counter;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use super::credentials;
use super::denied_calls::DeniedCalls;
use super::pb;
use super::pb::admin_server::Admin;
use crate::app::App;
use crate::audit::{AuditEntry, AuditEvent, AuditResult};
use crate::auth::KeyId;
use crate::detect::Detection;
use crate::overrides::{Action, Actor, OverrideError};
use crate::telemetry;

pub struct AdminService {
    pub app: Arc<App>,
    pub token: SecretString,
    /// Bounds the audit lines of refused calls.
    pub denied: DeniedCalls,
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
        let now = Instant::now();
        if ok && !presented.is_empty() {
            self.denied.flush(&self.app.audit, now);
            return Ok(actor);
        }
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => method, "result" => "unauthenticated")
            .increment(1);
        self.denied.refused(
            &self.app.audit,
            AuditEntry::new(AuditEvent::AdminCall, &actor)
                .request(method, "grpc")
                .result(AuditResult::Denied)
                .reason("unauthenticated"),
            now,
        );
        Err(Status::unauthenticated(
            "a valid admin bearer token is required",
        ))
    }

    async fn act<T>(
        &self,
        method: &'static str,
        request: Request<T>,
        action: impl FnOnce(&T) -> Result<Action, Status>,
        reason: impl FnOnce(T) -> String,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize(method, &request)?;
        let body = request.into_inner();
        let action = action(&body)?;
        let actor = Actor::Operator {
            name: actor,
            method,
        };
        let applied = self
            .app
            .overrides
            .apply(action, &actor, &reason(body))
            .await
            .map_err(|e| match e {
                OverrideError::UnknownConsumer(_) | OverrideError::UnknownCredential(_) => {
                    Status::not_found(e.to_string())
                }
                OverrideError::Final(_) => Status::failed_precondition(e.to_string()),
                OverrideError::State(_) => Status::invalid_argument(e.to_string()),
            })?;
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => method, "result" => "ok").increment(1);
        Ok(Response::new(pb::ActionReply {
            changed: applied.changed,
            message: applied.message,
        }))
    }

    fn audit_call(&self, method: &'static str, actor: &str) {
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => method, "result" => "ok").increment(1);
        self.app.audit.record(
            AuditEntry::new(AuditEvent::AdminCall, actor)
                .request(method, "grpc")
                .result(AuditResult::Ok),
        );
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn suspend_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        self.act(
            "SuspendConsumer",
            request,
            |r| {
                Ok(Action::Suspend {
                    consumer: r.consumer.clone(),
                })
            },
            |r| r.reason,
        )
        .await
    }

    async fn resume_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        self.act(
            "ResumeConsumer",
            request,
            |r| {
                Ok(Action::Resume {
                    consumer: r.consumer.clone(),
                })
            },
            |r| r.reason,
        )
        .await
    }

    async fn revoke_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        self.act(
            "RevokeConsumer",
            request,
            |r| {
                Ok(Action::RevokeConsumer {
                    consumer: r.consumer.clone(),
                })
            },
            |r| r.reason,
        )
        .await
    }

    async fn revoke_key(
        &self,
        request: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        self.act(
            "RevokeKey",
            request,
            |r| {
                let key_id: KeyId = r
                    .key_id
                    .parse()
                    .map_err(|e| Status::invalid_argument(format!("{:?}: {e}", r.key_id)))?;
                Ok(Action::RevokeKey { key_id })
            },
            |r| r.reason,
        )
        .await
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersReply>, Status> {
        let actor = self.authorize("ListConsumers", &request)?;
        let registry = self.app.gate.registry();
        let overrides = self.app.gate.overrides();
        let accounting = &self.app.accounting;
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
                last_seen_unix: accounting
                    .sources
                    .last_seen(&c.name)
                    .map(|ago| unix(now) - ago.as_secs() as i64)
                    .unwrap_or(0),
                month_to_date_usd: accounting.ledger.month_to_date(&c.name, now) as f64 / 1e6,
                key_ids: c.key_ids().iter().map(ToString::to_string).collect(),
            })
            .collect();
        self.audit_call("ListConsumers", &actor);
        Ok(Response::new(pb::ListConsumersReply { consumers }))
    }

    async fn refresh_credentials(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("RefreshCredentials", &request)?;
        let named = &request.get_ref().credentials;
        let message = if named.is_empty() {
            self.app.refresh.notify_one();
            "credential refresh started".into()
        } else {
            credentials::refresh_named(&self.app, named).await?
        };
        self.audit_call("RefreshCredentials", &actor);
        Ok(Response::new(pb::ActionReply {
            changed: true,
            message,
        }))
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsReply>, Status> {
        let actor = self.authorize("ListCredentials", &request)?;
        let reply = credentials::list(&self.app)?;
        self.audit_call("ListCredentials", &actor);
        Ok(Response::new(reply))
    }

    async fn revoke_credential(
        &self,
        request: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let app = self.app.clone();
        self.act(
            "RevokeCredential",
            request,
            move |r| credentials::revocation(&app, r),
            |r| r.reason,
        )
        .await
    }

    async fn report_rotation(
        &self,
        request: Request<pb::RotationReport>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self.authorize("ReportRotation", &request)?;
        credentials::report(&self.app, &actor, request.get_ref())?;
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => "ReportRotation", "result" => "ok")
            .increment(1);
        Ok(Response::new(pb::ActionReply {
            changed: true,
            message: "recorded".into(),
        }))
    }

    async fn list_detections(
        &self,
        request: Request<pb::ListDetectionsRequest>,
    ) -> Result<Response<pb::ListDetectionsReply>, Status> {
        let actor = self.authorize("ListDetections", &request)?;
        let limit = request.get_ref().limit.clamp(1, 1000) as usize;
        let detections = self
            .app
            .containment
            .recent(limit)
            .iter()
            .map(to_pb)
            .collect();
        self.audit_call("ListDetections", &actor);
        Ok(Response::new(pb::ListDetectionsReply { detections }))
    }
}

fn to_pb(d: &Detection) -> pb::Detection {
    pb::Detection {
        at_unix: unix(d.at),
        consumer: d.consumer.to_string(),
        detector: d.detector.as_str().into(),
        severity: d.severity.as_str().into(),
        action: d.action.as_str().into(),
        evidence_json: serde_json::to_string(&d.evidence).unwrap_or_default(),
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

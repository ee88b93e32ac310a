//! The admin gRPC service. Every call needs an operator's credential (a bearer token or a
//! client certificate, [`super::identity`]) whose role allows it, is counted, and is written
//! to the audit log under the operator's name; a refused call is UNAUTHENTICATED or
//! PERMISSION_DENIED and audited too. Actions go through the override service.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::counter;
use tonic::{Request, Response, Status};

use super::credentials;
use super::denied_calls::DeniedCalls;
use super::identity::identify;
use super::operators::Identity;
use super::pb;
use super::pb::admin_server::Admin;
use crate::app::App;
use crate::audit::{AuditEntry, AuditEvent, AuditResult};
use crate::auth::KeyId;
use crate::config::Role;
use crate::detect::Detection;
use crate::overrides::{Action, Actor, OverrideError};
use crate::telemetry;

pub struct AdminService {
    pub app: Arc<App>,
    /// Bounds the audit lines of refused calls.
    pub denied: DeniedCalls,
}

impl AdminService {
    /// The caller's identity, if it proved one and its role allows `needed`. A refusal is
    /// counted, audited (bounded; with the operator's name when one proof named them) and
    /// answered UNAUTHENTICATED or PERMISSION_DENIED.
    fn authorize<T>(
        &self,
        method: &'static str,
        needed: Role,
        request: &Request<T>,
    ) -> Result<Identity, Status> {
        let bearer = request.metadata().get("authorization").map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
        });
        let certs = request.peer_certs();
        let peer = certs.as_ref().and_then(|c| c.first());
        let operators = self.app.operators.load();
        let now = Instant::now();
        let (result, actor, reason) = match identify(&operators, bearer, peer) {
            Ok(identity) if identity.role.allows(needed) => {
                self.denied.flush(&self.app.audit, now);
                return Ok(identity);
            }
            Ok(identity) => (
                "permission_denied",
                identity.name,
                format!(
                    "permission denied: role {} may not call {method}",
                    identity.role.as_str()
                ),
            ),
            Err(refused) => (
                "unauthenticated",
                refused.known_as.unwrap_or_else(|| "unknown".into()),
                refused.reason.to_string(),
            ),
        };
        counter!(telemetry::ADMIN_CALLS_TOTAL, "method" => method, "result" => result).increment(1);
        self.denied.refused(
            &self.app.audit,
            AuditEntry::new(AuditEvent::AdminCall, &actor)
                .request(method, "grpc")
                .result(AuditResult::Denied)
                .reason(&reason),
            now,
        );
        Err(if result == "unauthenticated" {
            Status::unauthenticated(
                "a valid admin bearer token (an operator's) or client certificate is required",
            )
        } else {
            Status::permission_denied(reason)
        })
    }

    async fn act<T>(
        &self,
        method: &'static str,
        request: Request<T>,
        action: impl FnOnce(&T) -> Result<Action, Status>,
        reason: impl FnOnce(T) -> String,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let identity = self.authorize(method, Role::Operator, &request)?;
        let body = request.into_inner();
        let action = action(&body)?;
        let actor = Actor::Operator {
            name: identity.name,
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
        let actor = self
            .authorize("ListConsumers", Role::ReadOnly, &request)?
            .name;
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
                    .meters
                    .last_seen(&c.name, Instant::now())
                    .map(|ago| unix(now) - ago.as_secs() as i64)
                    .unwrap_or(0),
                month_to_date_usd: accounting.ledger.month_to_date(&c.name, now) as f64 / 1e6,
                key_ids: registry
                    .key_ids(c)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            })
            .collect();
        self.audit_call("ListConsumers", &actor);
        Ok(Response::new(pb::ListConsumersReply { consumers }))
    }

    async fn refresh_credentials(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let actor = self
            .authorize("RefreshCredentials", Role::Operator, &request)?
            .name;
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
        let actor = self
            .authorize("ListCredentials", Role::ReadOnly, &request)?
            .name;
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
        let actor = self
            .authorize("ReportRotation", Role::Operator, &request)?
            .name;
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
        let actor = self
            .authorize("ListDetections", Role::ReadOnly, &request)?
            .name;
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

    async fn unthrottle_consumer(
        &self,
        request: Request<pb::ConsumerRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let identity = self.authorize("UnthrottleConsumer", Role::Operator, &request)?;
        super::calls::unthrottle(&self.app, &identity, request.into_inner())
    }

    async fn report_leaks(
        &self,
        request: Request<pb::ReportLeaksRequest>,
    ) -> Result<Response<pb::ReportLeaksReply>, Status> {
        let identity = self.authorize("ReportLeaks", Role::Operator, &request)?;
        super::calls::report_leaks(&self.app, &identity, request.into_inner()).await
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIReply>, Status> {
        let identity = self.authorize("WhoAmI", Role::ReadOnly, &request)?;
        self.audit_call("WhoAmI", &identity.name);
        Ok(Response::new(pb::WhoAmIReply {
            name: identity.name,
            role: identity.role.as_str().into(),
            authenticated_by: identity.proof.as_str().into(),
        }))
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

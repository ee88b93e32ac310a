//! The receiver of GitHub's secret-scanning partner alerts: `POST /github/secret-scanning` on
//! a listener of its own (`leaks.github.listen`), so it can be published to GitHub through an
//! ingress while `/metrics`, health and the admin API stay private.
//!
//! A request is read up to `max_body_bytes` (413 past it, 408 when the body trickles in for
//! more than 10 s), its `Github-Public-Key-Signature` checked over the raw body with the
//! configured key `Github-Public-Key-Identifier` names (401 when unsigned or badly signed:
//! nothing in it is looked at), and only then read as an alert. Each keygate key in it goes to
//! the leak intake; GitHub gets back one `{token_hash, token_type, label}` per match, the same
//! for a known, unknown or already revoked key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use metrics::counter;
use tokio::sync::watch;

use super::denied_calls::DeniedCalls;
use crate::app::App;
use crate::audit::{AuditEntry, AuditEvent, AuditLog, AuditResult};
use crate::config::GithubAlertsConfig;
use crate::leaks::github::read_alert;
use crate::leaks::intake::LeakIntake;
use crate::leaks::signature::{SignatureError, SigningKeys};
use crate::telemetry;

/// The path GitHub is given (`https://<your ingress>/github/secret-scanning`).
pub const PATH: &str = "/github/secret-scanning";
/// The reporter the audit log and notifications name.
pub const REPORTER: &str = "github-secret-scanning";
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("leaks.github.public_keys[{index}].key_file {path}: {source}")]
    KeyFile {
        index: usize,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::leaks::signature::KeyError),
    #[error("cannot listen on {addr} (leaks.github.listen): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// What the handler needs.
pub struct Receiver {
    keys: SigningKeys,
    intake: Arc<LeakIntake>,
    audit: Arc<AuditLog>,
    denied: DeniedCalls,
    max_body: usize,
}

/// The configured signing keys, read and parsed now (a bad one stops `serve`).
pub fn signing_keys(config: &GithubAlertsConfig) -> Result<SigningKeys, AlertsError> {
    let mut pems = Vec::with_capacity(config.public_keys.len());
    for (index, key) in config.public_keys.iter().enumerate() {
        let pem = match (&key.key, &key.key_file) {
            (Some(pem), _) => pem.clone(),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|source| AlertsError::KeyFile {
                    index,
                    path: path.display().to_string(),
                    source,
                })?
            }
            (None, None) => String::new(),
        };
        pems.push((key.key_identifier.clone(), pem));
    }
    Ok(SigningKeys::from_pem(&pems)?)
}

pub fn receiver(app: &Arc<App>, config: &GithubAlertsConfig) -> Result<Arc<Receiver>, AlertsError> {
    Ok(Arc::new(Receiver {
        keys: signing_keys(config)?,
        intake: app.leaks.clone(),
        audit: app.audit.clone(),
        denied: DeniedCalls::default(),
        max_body: config.max_body_bytes,
    }))
}

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new().route(PATH, post(alert)).with_state(receiver)
}

/// Serves the receiver until `stop`.
pub async fn serve(
    receiver: Arc<Receiver>,
    listen: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AlertsError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AlertsError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    tracing::info!(github_alerts = %listen, path = PATH, "secret-scanning alert receiver listening");
    let served = axum::serve(listener, router(receiver))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "secret-scanning alert receiver stopped");
    }
    Ok(())
}

async fn alert(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > r.max_body) {
        return r.refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large");
    }
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, r.max_body)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return r.refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large")
            }
            Err(_) => return r.refuse(StatusCode::REQUEST_TIMEOUT, "bad_request", "body too slow"),
        };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = r.keys.verify(
        text("github-public-key-identifier"),
        text("github-public-key-signature"),
        &body,
    ) {
        let result = if e == SignatureError::Missing {
            "unsigned"
        } else {
            "bad_signature"
        };
        return r.refuse(StatusCode::UNAUTHORIZED, result, &e.to_string());
    }
    let (leaks, feedback) = match read_alert(&body) {
        Ok(read) => read,
        Err(e) => return r.refuse(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    r.intake.report(&leaks, REPORTER).await;
    counter!(telemetry::LEAK_ALERTS_TOTAL, "result" => "ok").increment(1);
    tracing::info!(matches = feedback.len(), "secret-scanning alert received");
    let body = serde_json::to_string(&feedback).unwrap_or_else(|_| "[]".into());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

impl Receiver {
    /// Counts, audits (bounded) and answers a refused request. `why` never quotes the request.
    fn refuse(&self, status: StatusCode, result: &'static str, why: &str) -> Response {
        counter!(telemetry::LEAK_ALERTS_TOTAL, "result" => result).increment(1);
        tracing::warn!(result, reason = why, "secret-scanning alert refused");
        self.denied.refused(
            &self.audit,
            AuditEntry::new(AuditEvent::AdminCall, "unverified")
                .request("POST", PATH)
                .result(AuditResult::Denied)
                .reason(&format!("secret-scanning alert refused: {why}")),
            Instant::now(),
        );
        let body = serde_json::json!({ "error": why }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

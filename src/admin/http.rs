//! `/healthz` (the process is up), `/readyz` (config loaded, every referenced credential
//! available, and shared limits able to grant budgets or knowingly on their fallback) and `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::gate::Gate;

#[derive(Clone)]
pub struct AdminState {
    pub gate: Arc<Gate>,
    pub accounting: Arc<crate::accounting::Accounting>,
    pub limiter: Arc<crate::limits::Limiter>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let registry = state.gate.registry();
    let missing = state
        .gate
        .credentials()
        .missing(&registry.referenced_credentials());
    let limits_ready = state.limiter.is_ready();
    let ready = missing.is_empty() && limits_ready;
    crate::telemetry::record_ready(ready);
    let missing: Vec<&str> = missing.iter().map(|m| &**m).collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "limits_ready": limits_ready,
        "consumers": registry.consumers().len(),
        "missing_credentials": missing,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render()
            + &state.accounting.render_meters()
            + &state
                .accounting
                .render_budgets(state.gate.registry().consumers()),
    )
}

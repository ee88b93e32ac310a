//! Request dispatch: recording, latency and status injection, routing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, Response, StatusCode};
use axum::Router;
use serde_json::json;

use crate::inject::Inject;
use crate::keys::{KeyStore, Provider, Seed, Verdict};
use crate::record::{RecordedRequest, Recorder};
use crate::response::{self, new_id, Flavor};
use crate::{admin, anthropic, azure, openai, responses};

/// Prefix of the mock's own control endpoints (never recorded).
pub const CONTROL_PREFIX: &str = "/__mock";

/// Server settings (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Delay before every response unless `x-mock-latency-ms` is sent.
    pub latency_ms: u64,
    /// Record requests for `GET /__mock/requests`.
    pub record: bool,
    /// Keep at most this many recorded requests.
    pub record_limit: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            record: true,
            record_limit: 10_000,
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

struct AppState {
    config: Config,
    recorder: Recorder,
    keys: KeyStore,
}

/// The whole mock as an axum router.
pub fn router(config: Config) -> Router {
    let state = Arc::new(AppState {
        recorder: Recorder::new(config.record_limit),
        keys: KeyStore::default(),
        config,
    });
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let body = axum::body::to_bytes(body, state.config.max_body_bytes).await;
    if path == CONTROL_PREFIX || path.starts_with("/__mock/") {
        return control(
            &state,
            &parts.method,
            &path,
            body.as_deref().unwrap_or_default(),
        );
    }

    let inject = Inject::from_headers(&parts.headers);
    let flavor = Flavor::for_path(&path);
    if state.config.record {
        let bytes = body.as_deref().unwrap_or_default();
        state.recorder.push(RecordedRequest::new(&parts, bytes));
    }
    let bytes = body.as_deref().unwrap_or_default();
    if let Some(resp) = admin::route(&state.keys, &parts.method, &path, &parts.headers, bytes)
        .or_else(|| azure::route(&state.keys, &parts.method, &path, &parts.headers, bytes))
    {
        return resp;
    }
    let key_delay = match state.keys.judge(admin::presented(&parts.headers)) {
        Verdict::Pass { delay_ms } => delay_ms,
        Verdict::Refused => return refused(flavor, &path),
    };
    if key_delay > 0 {
        tokio::time::sleep(Duration::from_millis(key_delay)).await;
    }

    let latency = inject.latency_ms.unwrap_or(state.config.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let mut resp = match (body, inject.status) {
        (Err(_), _) => response::error(
            flavor,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large or unreadable.",
            inject.gzip,
        ),
        (Ok(_), Some(status)) => {
            let message = format!("mock error injected by x-mock-status: {}", status.as_u16());
            response::error(flavor, status, &message, inject.gzip)
        }
        (Ok(bytes), None) => route(&parts.method, &path, &bytes, &inject),
    };
    if let Ok(value) = HeaderValue::from_str(&new_id("req_")) {
        resp.headers_mut().insert(flavor.request_id_header(), value);
    }
    if let Some(Ok(value)) = inject
        .content_encoding
        .as_deref()
        .map(HeaderValue::from_str)
    {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_ENCODING, value);
    }
    resp
}

fn route(method: &Method, path: &str, body: &[u8], inject: &Inject) -> Response<Body> {
    type Handler = fn(&serde_json::Map<String, serde_json::Value>, &Inject) -> Response<Body>;
    let post: Option<Handler> = match azure_alias(path).unwrap_or(path) {
        "/v1/chat/completions" => Some(openai::chat_completions),
        "/v1/completions" => Some(openai::completions),
        "/v1/embeddings" => Some(openai::embeddings),
        "/v1/responses" => Some(responses::create),
        "/v1/messages" => Some(anthropic::messages),
        "/v1/messages/count_tokens" => Some(anthropic::count_tokens),
        _ => None,
    };
    let flavor = Flavor::for_path(path);
    if let Some(handler) = post {
        if method != Method::POST {
            return method_not_allowed(flavor, method, path, inject);
        }
        return match response::parse_object(flavor, body, inject.gzip) {
            Ok(obj) => handler(&obj, inject),
            Err(resp) => resp,
        };
    }
    if path == "/openai/models" && method == Method::GET {
        return openai::list_models(inject);
    }
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        if method != Method::GET {
            return method_not_allowed(flavor, method, path, inject);
        }
        return match path.strip_prefix("/v1/models/") {
            Some(id) if !id.is_empty() => openai::retrieve_model(id, inject),
            _ if inject.anthropic_client => anthropic::list_models(inject),
            _ => openai::list_models(inject),
        };
    }
    response::error(
        Flavor::OpenAi,
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {path})"),
        inject.gzip,
    )
}

/// The OpenAI path an Azure OpenAI deployment path stands for:
/// `/openai/deployments/{deployment}/chat/completions` → `/v1/chat/completions`, and the same
/// for `completions` and `embeddings`. The `api-version` query is never part of `path`.
fn azure_alias(path: &str) -> Option<&'static str> {
    let (deployment, operation) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
    if deployment.is_empty() {
        return None;
    }
    match operation {
        "chat/completions" => Some("/v1/chat/completions"),
        "completions" => Some("/v1/completions"),
        "embeddings" => Some("/v1/embeddings"),
        _ => None,
    }
}

fn method_not_allowed(
    flavor: Flavor,
    method: &Method,
    path: &str,
    inject: &Inject,
) -> Response<Body> {
    response::error(
        flavor,
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method {method} not allowed for {path}"),
        inject.gzip,
    )
}

/// The provider's own answer to a key it does not accept (enforcement on).
fn refused(flavor: Flavor, path: &str) -> Response<Body> {
    let message = match flavor {
        Flavor::Anthropic => "invalid x-api-key",
        Flavor::OpenAi if path.starts_with("/openai/") => {
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."
        }
        Flavor::OpenAi => {
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        }
    };
    response::error(flavor, StatusCode::UNAUTHORIZED, message, false)
}

fn control(state: &AppState, method: &Method, path: &str, body: &[u8]) -> Response<Body> {
    match (method, path) {
        (&Method::GET, "/__mock/keys") => match serde_json::to_value(state.keys.snapshot()) {
            Ok(value) => response::json(StatusCode::OK, &value, false),
            Err(_) => response::plain(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed"),
        },
        (&Method::POST, "/__mock/keys") => match serde_json::from_slice::<Seed>(body) {
            Ok(seed) => {
                state.keys.seed(seed);
                response::json(StatusCode::OK, &json!({ "ok": true }), false)
            }
            Err(e) => response::error(
                Flavor::OpenAi,
                StatusCode::BAD_REQUEST,
                &format!("bad seed: {e}"),
                false,
            ),
        },
        (&Method::POST, "/__mock/console_keys") => console_key(state, body),
        (&Method::GET, "/__mock/health") => response::plain(StatusCode::OK, "ok"),
        (&Method::GET, "/__mock/requests") => {
            let entries = state.recorder.snapshot();
            match serde_json::to_value(entries) {
                Ok(value) => response::json(StatusCode::OK, &value, false),
                Err(_) => {
                    response::plain(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed")
                }
            }
        }
        (&Method::DELETE, "/__mock/requests") => {
            state.recorder.clear();
            response::json(StatusCode::OK, &json!({ "cleared": true }), false)
        }
        _ => response::error(
            Flavor::OpenAi,
            StatusCode::NOT_FOUND,
            &format!("Unknown mock control endpoint ({method} {path})"),
            false,
        ),
    }
}

/// `POST /__mock/console_keys {"provider": "anthropic", "name": …}`: a key created by hand in
/// the provider's console (the only way to make an Anthropic key), returned with its value.
fn console_key(state: &AppState, body: &[u8]) -> Response<Body> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let provider = match request.get("provider").and_then(|p| p.as_str()) {
        Some("openai") => Provider::Openai,
        _ => Provider::Anthropic,
    };
    let name = request
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("console key");
    let prefix = match provider {
        Provider::Anthropic => "sk-ant-api03-",
        _ => "sk-proj-",
    };
    let mut key = state.keys.mint(provider, prefix, name, None, None);
    key.minted = false;
    state.keys.seed(Seed {
        keys: vec![key.clone()],
        ..Seed::default()
    });
    match serde_json::to_value(key) {
        Ok(value) => response::json(StatusCode::OK, &value, false),
        Err(_) => response::plain(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed"),
    }
}

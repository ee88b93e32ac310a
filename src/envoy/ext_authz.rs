//! ext_authz edge (header-only mode): a Check call becomes a gate decision; an allow is an
//! OkHttpResponse with header mutations, a deny a DeniedHttpResponse with a JSON body.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::headers::{self, ValueField};
use crate::containment::Containment;
use crate::decision::Decision;
use crate::denial::Denial;
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::request::{Header, RequestView};
use crate::telemetry;

const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_UNAUTHENTICATED: i32 = 16;
const GRPC_UNAVAILABLE: i32 = 14;

/// The ext_authz gRPC service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    gate: Arc<Gate>,
    limiter: Arc<Limiter>,
    containment: Option<Arc<Containment>>,
}

impl AuthzService {
    pub fn new(
        gate: Arc<Gate>,
        limiter: Arc<Limiter>,
        containment: impl Into<Option<Arc<Containment>>>,
    ) -> Self {
        AuthzService {
            gate,
            limiter,
            containment: containment.into(),
        }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(
            check(
                &self.gate,
                &self.limiter,
                self.containment.as_deref(),
                &request.into_inner(),
            )
            .await,
        ))
    }
}

/// Decides one Check request.
/// Header-only mode sees no bodies or responses: it enforces the failed-authentication guard,
/// the declared size and the request-rate limits; token limits and budgets need ext_proc.
pub async fn check(
    gate: &Gate,
    limiter: &Limiter,
    containment: Option<&Containment>,
    request: &CheckRequest,
) -> CheckResponse {
    let attributes = request.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let Some(http) = http else {
        return CheckResponse {
            status: Some(rpc::Status {
                code: GRPC_PERMISSION_DENIED,
                message: "keygate: check request without HTTP attributes".into(),
                details: Vec::new(),
            }),
            ..Default::default()
        };
    };
    let all = header_view(http.header_map.as_ref(), &http.headers);
    let peer = attributes
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(socket_ip);
    let source = if gate.trust_forwarded_for() {
        headers::forwarded_for(&all).or(peer)
    } else {
        peer
    };
    let view = RequestView {
        method: &http.method,
        path: &http.path,
        headers: all
            .into_iter()
            .filter(|h| !h.name.starts_with(':'))
            .collect(),
        source,
    };
    let shape = crate::gate::request_shape(&view);
    let content_length = view
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
    if let Err(reason) = limiter.check_source(source) {
        telemetry::record_outcome(None, reason.outcome());
        return denied(&Denial::new(reason, shape));
    }
    let decision = gate.decide(&view);
    if let Decision::Allow(allow) = &decision {
        if let Err(reason) = limiter.admit_request(&allow.consumer, content_length).await {
            telemetry::record_outcome(Some(&allow.consumer), reason.outcome());
            return denied(&Denial::new(reason, shape));
        }
        if let Some(containment) = containment {
            if !containment.on_allowed(&allow.consumer, source).await {
                telemetry::record_outcome(Some(&allow.consumer), "suspended");
                return denied(&Denial::new(crate::denial::DenyReason::Suspended, shape));
            }
        }
        telemetry::record_outcome(Some(&allow.consumer), "allowed");
    }
    match decision {
        Decision::Allow(allow) => CheckResponse {
            status: Some(rpc::Status {
                code: GRPC_OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: headers::set_options(&allow.mutation, ValueField::Text),
                headers_to_remove: allow.mutation.remove,
                ..Default::default()
            })),
            ..Default::default()
        },
        Decision::Deny(denial) => {
            if denial.status() == 401 {
                limiter.failed_auth(source);
            }
            denied(&denial)
        }
    }
}

/// With `encode_raw_headers: true` Envoy fills `header_map`; older configs fill `headers`.
fn header_view<'a>(
    map: Option<&'a HeaderMap>,
    legacy: &'a std::collections::HashMap<String, String>,
) -> Vec<Header<'a>> {
    match map {
        Some(m) if !m.headers.is_empty() => headers::view(Some(m)),
        _ => legacy
            .iter()
            .map(|(k, v)| Header {
                name: k.as_str(),
                value: v.as_bytes(),
            })
            .collect(),
    }
}

fn socket_ip(address: &Address) -> Option<std::net::IpAddr> {
    use envoy_types::pb::envoy::config::core::v3::address::Address as Kind;
    match address.address.as_ref()? {
        Kind::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}

/// A denial as ext_authz's DeniedHttpResponse.
pub fn denied(denial: &Denial) -> CheckResponse {
    let code = match denial.status() {
        401 => GRPC_UNAUTHENTICATED,
        503 => GRPC_UNAVAILABLE,
        _ => GRPC_PERMISSION_DENIED,
    };
    let mut response_headers = vec![text_header("content-type", "application/json")];
    response_headers.extend(denial.headers.iter().map(|(k, v)| text_header(k, v)));
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: format!("keygate_{}", denial.reason.outcome()),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(denial.status()),
            }),
            headers: response_headers,
            body: String::from_utf8_lossy(&denial.body()).into_owned(),
        })),
        ..Default::default()
    }
}

fn text_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action:
            envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                as i32,
        ..Default::default()
    }
}

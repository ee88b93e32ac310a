//! ext_authz edge (header-only mode): a Check call becomes the pipeline's request phase; an
//! allow is an OkHttpResponse with header mutations, a denial a DeniedHttpResponse with a
//! JSON body. Header-only mode sees no bodies or responses, so the pipeline enforces the
//! failed-authentication guard, the declared size and the request-rate limits; token limits
//! and budgets need ext_proc.

use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::headers::{self, ValueField};
use super::metadata;
use crate::denial::Denial;
use crate::pipeline::{Admission, Phases, Pipeline};
use crate::request::{parse_address, Header};
use crate::verdict::Verdict;

const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_UNAUTHENTICATED: i32 = 16;
const GRPC_UNAVAILABLE: i32 = 14;

/// The ext_authz gRPC service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    pipeline: Pipeline,
}

impl AuthzService {
    pub fn new(pipeline: Pipeline) -> Self {
        AuthzService { pipeline }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(
            check(&self.pipeline, &request.into_inner()).await,
        ))
    }
}

/// Answers one Check request.
pub async fn check(pipeline: &Pipeline, request: &CheckRequest) -> CheckResponse {
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
    let source = attributes.and_then(|a| a.source.as_ref());
    let peer = source.and_then(|s| s.address.as_ref()).and_then(socket_ip);
    // The identity of the client certificate Envoy verified (its first URI SAN).
    let principal = source.map(|s| s.principal.as_str());
    // With `with_request_body` Envoy sends the whole body: its real length is checked, so a
    // chunked upload without `content-length` cannot pass the size limit unmeasured, and its
    // model is read.
    let body: &[u8] = match (http.raw_body.is_empty(), http.body.is_empty()) {
        (true, true) => &[],
        (true, false) => http.body.as_bytes(),
        (false, _) => &http.raw_body,
    };
    let mut view = headers::request_view(
        &http.method,
        &http.path,
        header_view(http.header_map.as_ref(), &http.headers),
        peer,
        (!body.is_empty()).then_some(body.len() as u64),
    );
    view.peer_identity = principal;
    view.body = (!body.is_empty()).then_some(body);
    match pipeline.admit(&view, Phases::HeadersOnly).await {
        Admission::Allowed(allowed) => CheckResponse {
            status: Some(rpc::Status {
                code: GRPC_OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: headers::set_options(&allowed.mutation, ValueField::Text),
                headers_to_remove: allowed.mutation.remove,
                ..Default::default()
            })),
            dynamic_metadata: Some(metadata::fields(&allowed.verdict)),
        },
        Admission::Denied(denial, verdict) => denied(&denial, &verdict),
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
        Kind::SocketAddress(s) => parse_address(&s.address),
        _ => None,
    }
}

/// A denial as ext_authz's DeniedHttpResponse, with what keygate knew as metadata.
pub fn denied(denial: &Denial, verdict: &Verdict) -> CheckResponse {
    let code = match denial.status() {
        401 => GRPC_UNAUTHENTICATED,
        503 => GRPC_UNAVAILABLE,
        _ => GRPC_PERMISSION_DENIED,
    };
    let mut response_headers = vec![headers::replace(
        "content-type",
        b"application/json",
        ValueField::Text,
    )];
    response_headers.extend(
        denial
            .headers
            .iter()
            .map(|(k, v)| headers::replace(k, v.as_bytes(), ValueField::Text)),
    );
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
        dynamic_metadata: Some(metadata::fields(verdict)),
    }
}

//! ext_proc edge: one gRPC stream per HTTP request. The request-headers message becomes a
//! gate decision; an allow is a header mutation (with a route-cache clear, because routing
//! uses `x-keygate-provider`), a deny is an ImmediateResponse.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, TrailersResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::headers::{self, ValueField};
use crate::decision::Decision;
use crate::denial::Denial;
use crate::gate::Gate;
use crate::request::RequestView;

/// The filter name Envoy keys `request_attributes` under.
const FILTER_NAME: &str = "envoy.filters.http.ext_proc";
const SOURCE_ATTRIBUTE: &str = "source.address";

/// The ext_proc gRPC service.
#[derive(Debug, Clone)]
pub struct ProcService {
    gate: Arc<Gate>,
}

impl ProcService {
    pub fn new(gate: Arc<Gate>) -> Self {
        ProcService { gate }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ProcService {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let gate = self.gate.clone();
        let inbound = request.into_inner();
        let outbound = inbound.map(move |message| message.map(|m| respond(&gate, m)));
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// Answers one message. Phases keygate did not ask for are passed through unchanged.
pub fn respond(gate: &Gate, message: ProcessingRequest) -> ProcessingResponse {
    let response = match &message.request {
        Some(In::RequestHeaders(h)) => on_request_headers(gate, &message, h),
        Some(In::ResponseHeaders(_)) => Out::ResponseHeaders(HeadersResponse::default()),
        Some(In::RequestBody(_)) => Out::RequestBody(BodyResponse::default()),
        Some(In::ResponseBody(_)) => Out::ResponseBody(BodyResponse::default()),
        Some(In::RequestTrailers(_)) => Out::RequestTrailers(TrailersResponse::default()),
        Some(In::ResponseTrailers(_)) | None => Out::ResponseTrailers(TrailersResponse::default()),
    };
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}

fn on_request_headers(gate: &Gate, message: &ProcessingRequest, h: &HttpHeaders) -> Out {
    let all = headers::view(h.headers.as_ref());
    let method = headers::pseudo(&all, ":method").unwrap_or_default();
    let path = headers::pseudo(&all, ":path").unwrap_or_default();
    let peer = source_attribute(message);
    let source = if gate.trust_forwarded_for() {
        headers::forwarded_for(&all).or(peer)
    } else {
        peer
    };
    let view = RequestView {
        method,
        path,
        headers: all
            .into_iter()
            .filter(|h| !h.name.starts_with(':'))
            .collect(),
        source,
    };
    match gate.decide(&view) {
        Decision::Allow(allow) => Out::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: headers::set_options(&allow.mutation, ValueField::Raw),
                    remove_headers: allow.mutation.remove,
                }),
                clear_route_cache: true,
                ..Default::default()
            }),
        }),
        Decision::Deny(denial) => Out::ImmediateResponse(immediate(&denial)),
    }
}

fn source_attribute(message: &ProcessingRequest) -> Option<std::net::IpAddr> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let fields = &message.attributes.get(FILTER_NAME)?.fields;
    match fields.get(SOURCE_ATTRIBUTE)?.kind.as_ref()? {
        Kind::StringValue(s) => headers::parse_address(s),
        _ => None,
    }
}

/// A denial as Envoy's locally generated response.
pub fn immediate(denial: &Denial) -> ImmediateResponse {
    let mut set_headers = vec![HeaderValueOption {
        header: Some(HeaderValue {
            key: "content-type".into(),
            raw_value: b"application/json".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    set_headers.extend(denial.headers.iter().map(|(k, v)| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(denial.status()),
        }),
        headers: Some(HeaderMutation {
            set_headers,
            remove_headers: Vec::new(),
        }),
        body: denial.body(),
        grpc_status: None,
        details: format!("keygate_{}", denial.reason.outcome()),
    }
}

//! ext_proc edge: one gRPC stream per HTTP request. The request-headers message becomes a gate
//! decision (allow = header mutation plus a route-cache clear, because routing uses
//! `x-keygate-provider`; deny = ImmediateResponse). After an allow, an [`Exchange`] follows the
//! request body and the response; `mode_override` asks Envoy for exactly the bodies it needs.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
    BodySendMode, HeaderSendMode,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::headers::{self, ValueField};
use crate::accounting::Accounting;
use crate::auth::Consumer;
use crate::containment::Containment;
use crate::decision::Decision;
use crate::denial::Denial;
use crate::denial::DenyReason;
use crate::exchange::{BodyPlan, Exchange};
use crate::gate::request_shape;
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::providers::ErrorShape;
use crate::request::RequestView;
use crate::telemetry;

/// The filter name Envoy keys `request_attributes` under.
const FILTER_NAME: &str = "envoy.filters.http.ext_proc";
const SOURCE_ATTRIBUTE: &str = "source.address";

/// The ext_proc gRPC service.
#[derive(Debug, Clone)]
pub struct ProcService {
    gate: Arc<Gate>,
    accounting: Arc<Accounting>,
    limiter: Arc<Limiter>,
    containment: Option<Arc<Containment>>,
}

impl ProcService {
    pub fn new(
        gate: Arc<Gate>,
        accounting: Arc<Accounting>,
        limiter: Arc<Limiter>,
        containment: impl Into<Option<Arc<Containment>>>,
    ) -> Self {
        ProcService {
            gate,
            accounting,
            limiter,
            containment: containment.into(),
        }
    }

    /// The state of one ext_proc stream.
    pub fn session(&self) -> Session {
        Session {
            gate: self.gate.clone(),
            limiter: self.limiter.clone(),
            containment: self.containment.clone(),
            exchange: Exchange::new(
                self.accounting.clone(),
                self.limiter.clone(),
                self.containment.clone(),
                self.accounting.exchange_settings(),
            ),
            request_body: BodySendMode::None,
            shape: ErrorShape::OpenAi,
        }
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
        let mut session = self.session();
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let reply = match message {
                    Ok(m) => Ok(session.respond(m).await),
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One HTTP request's conversation with Envoy. Dropping it (stream closed) settles the
/// exchange, so an interrupted response is still charged and its reservation released.
pub struct Session {
    gate: Arc<Gate>,
    limiter: Arc<Limiter>,
    containment: Option<Arc<Containment>>,
    exchange: Exchange,
    request_body: BodySendMode,
    shape: ErrorShape,
}

impl Session {
    /// Answers one message.
    pub async fn respond(&mut self, message: ProcessingRequest) -> ProcessingResponse {
        let (response, mode_override) = match &message.request {
            Some(In::RequestHeaders(h)) => self.on_request_headers(&message, h).await,
            Some(In::RequestBody(b)) => (self.on_request_body(b).await, None),
            Some(In::ResponseHeaders(h)) => self.on_response_headers(h),
            Some(In::ResponseBody(b)) => {
                self.exchange.response_body(&b.body, b.end_of_stream);
                (Out::ResponseBody(BodyResponse::default()), None)
            }
            Some(In::RequestTrailers(_)) => {
                (Out::RequestTrailers(TrailersResponse::default()), None)
            }
            Some(In::ResponseTrailers(_)) | None => {
                (Out::ResponseTrailers(TrailersResponse::default()), None)
            }
        };
        ProcessingResponse {
            response: Some(response),
            mode_override,
            ..Default::default()
        }
    }

    fn deny(&self, reason: DenyReason, consumer: Option<&Consumer>) -> Out {
        let denial = Denial::new(reason, self.shape);
        telemetry::record_outcome(consumer, denial.reason.outcome());
        Out::ImmediateResponse(immediate(&denial))
    }

    async fn on_request_headers(
        &mut self,
        message: &ProcessingRequest,
        h: &HttpHeaders,
    ) -> (Out, Option<ProcessingMode>) {
        let all = headers::view(h.headers.as_ref());
        let method = headers::pseudo(&all, ":method").unwrap_or_default();
        let path = headers::pseudo(&all, ":path").unwrap_or_default();
        let peer = source_attribute(message);
        let source = if self.gate.trust_forwarded_for() {
            headers::forwarded_for(&all).or(peer)
        } else {
            peer
        };
        let content_length =
            headers::pseudo(&all, "content-length").and_then(|v| v.trim().parse().ok());
        let view = RequestView {
            method,
            path,
            headers: all
                .into_iter()
                .filter(|h| !h.name.starts_with(':'))
                .collect(),
            source,
        };
        self.shape = request_shape(&view);
        if let Err(reason) = self.limiter.check_source(source) {
            return (self.deny(reason, None), None);
        }
        let allow = match self.gate.decide(&view) {
            Decision::Allow(allow) => allow,
            Decision::Deny(denial) => {
                if denial.status() == 401 {
                    self.limiter.failed_auth(source);
                }
                return (Out::ImmediateResponse(immediate(&denial)), None);
            }
        };
        if let Err(reason) = self
            .limiter
            .admit_request(&allow.consumer, content_length)
            .await
        {
            return (self.deny(reason, Some(&allow.consumer)), None);
        }
        if let Some(containment) = &self.containment {
            if !containment.on_allowed(&allow.consumer, source).await {
                return (
                    self.deny(DenyReason::Suspended, Some(&allow.consumer)),
                    None,
                );
            }
        }
        telemetry::record_outcome(Some(&allow.consumer), "allowed");
        let wants_body =
            self.exchange
                .allowed(allow.consumer.clone(), method, path, source, content_length);
        let mode = (wants_body && !h.end_of_stream).then(|| {
            self.request_body = BodySendMode::Buffered;
            mode(self.request_body, BodySendMode::Streamed)
        });
        let response = Out::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: headers::set_options(&allow.mutation, ValueField::Raw),
                    remove_headers: allow.mutation.remove,
                }),
                clear_route_cache: true,
                ..Default::default()
            }),
        });
        (response, mode)
    }

    async fn on_request_body(&mut self, body: &HttpBody) -> Out {
        let rewritten = self.exchange.request_body(&body.body);
        if let Some(consumer) = self.exchange.consumer().cloned() {
            let estimate = self.exchange.estimate();
            match self
                .limiter
                .admit_body(&consumer, body.body.len() as u64, &estimate)
                .await
            {
                Ok(reservation) => self.exchange.reserved(reservation),
                Err(reason) => return self.deny(reason, Some(&consumer)),
            }
        }
        let Some(rewritten) = rewritten else {
            return Out::RequestBody(BodyResponse::default());
        };
        Out::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: vec![raw_header(
                        "content-length",
                        rewritten.len().to_string().as_bytes(),
                    )],
                    remove_headers: Vec::new(),
                }),
                body_mutation: Some(BodyMutation {
                    mutation: Some(Mutation::Body(rewritten)),
                }),
                ..Default::default()
            }),
        })
    }

    fn on_response_headers(&mut self, h: &HttpHeaders) -> (Out, Option<ProcessingMode>) {
        let all = headers::view(h.headers.as_ref());
        let status = headers::pseudo(&all, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let content_type = headers::pseudo(&all, "content-type");
        let encoding = headers::pseudo(&all, "content-encoding");
        let length = headers::pseudo(&all, "content-length").and_then(|v| v.trim().parse().ok());
        let plan = self
            .exchange
            .response_headers(status, content_type, encoding, length);
        if h.end_of_stream {
            self.exchange.response_body(&[], true);
        }
        // The default is STREAMED, so a body Envoy already holds during this call never
        // meets its buffer limit; only bodies known to be small are switched to BUFFERED.
        let override_to = match plan {
            BodyPlan::Buffered => Some(BodySendMode::Buffered),
            BodyPlan::Streamed => None,
            BodyPlan::Skip => Some(BodySendMode::None),
        };
        // Envoy drops `content-length` while the mode is STREAMED; a body that passes
        // unchanged in one piece or not at all keeps the provider's.
        let keep_length = match (plan, length) {
            (BodyPlan::Buffered | BodyPlan::Skip, Some(n)) => Some(HeaderMutation {
                set_headers: vec![raw_header("content-length", n.to_string().as_bytes())],
                remove_headers: Vec::new(),
            }),
            _ => None,
        };
        let response = HeadersResponse {
            response: keep_length.map(|mutation| CommonResponse {
                header_mutation: Some(mutation),
                ..Default::default()
            }),
        };
        (
            Out::ResponseHeaders(response),
            override_to.map(|body| mode(self.request_body, body)),
        )
    }
}

/// A processing mode keygate asks for. The shipped Envoy config allows exactly these
/// combinations (`allowed_override_modes`).
fn mode(request_body: BodySendMode, response_body: BodySendMode) -> ProcessingMode {
    ProcessingMode {
        request_header_mode: HeaderSendMode::Default as i32,
        response_header_mode: HeaderSendMode::Send as i32,
        request_body_mode: request_body as i32,
        response_body_mode: response_body as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    }
}

fn raw_header(key: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.to_vec(),
            ..Default::default()
        }),
        append_action: envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
            as i32,
        ..Default::default()
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
    let mut set_headers = vec![raw_header("content-type", b"application/json")];
    set_headers.extend(
        denial
            .headers
            .iter()
            .map(|(k, v)| raw_header(k, v.as_bytes())),
    );
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

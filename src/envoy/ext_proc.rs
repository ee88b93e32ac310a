//! ext_proc edge: one gRPC stream per HTTP request. The request-headers message becomes the
//! pipeline's request phase (allow = header mutation plus a route-cache clear, because
//! routing uses `x-keygate-provider`; denial = ImmediateResponse). After an allow, the
//! pipeline's [`Exchange`] follows the request body and, when the responses are held, the
//! response; `mode_override` asks Envoy for exactly the bodies it needs. When a second filter
//! observes the responses (see [`Responses`]), the exchange is parked for it after the
//! request phases and this stream is done.

use std::pin::Pin;

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
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::headers::{self, ValueField};
use super::metadata;
use super::observer::Observer;
use crate::denial::Denial;
use crate::pipeline::{Admission, BodyPlan, Exchange, Phases, Pipeline};
use crate::request::parse_address;
use crate::verdict::Verdict;

/// gRPC request metadata (the filter's `grpc_service.initial_metadata`) saying where this
/// filter's responses go: `observed` means a second, observe-only ext_proc filter reads them.
pub const RESPONSES_METADATA: &str = "x-keygate-responses";

/// Who reads an allowed request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responses {
    /// This stream: Envoy stops each response phase until keygate answers.
    Held,
    /// A filter in `observability_mode`: Envoy sends the response and goes on; this stream
    /// parks the exchange after the request phases and asks for no response phase.
    Observed,
}

/// The filter name Envoy keys `request_attributes` under.
const FILTER_NAME: &str = "envoy.filters.http.ext_proc";
const SOURCE_ATTRIBUTE: &str = "source.address";
/// The first URI SAN of the client certificate Envoy verified (a SPIFFE ID in a mesh).
const PEER_URI_ATTRIBUTE: &str = "connection.uri_san_peer_certificate";

/// The ext_proc gRPC service.
#[derive(Debug, Clone)]
pub struct ProcService {
    pipeline: Pipeline,
}

impl ProcService {
    pub fn new(pipeline: Pipeline) -> Self {
        ProcService { pipeline }
    }

    /// The state of one ext_proc stream from the deciding filter.
    pub fn session(&self, responses: Responses) -> Session {
        Session {
            pipeline: self.pipeline.clone(),
            responses,
            exchange: None,
            ticket: None,
            request_body: BodySendMode::None,
            publish: None,
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
        let responses = match request.metadata().get(RESPONSES_METADATA) {
            Some(v) if v.as_bytes() == b"observed" => Responses::Observed,
            _ => Responses::Held,
        };
        let conversation = Conversation {
            inbound: request.into_inner(),
            session: self.session(responses),
            observer: None,
            closed: false,
        };
        // The answers are produced as tonic polls for them: no task or channel per stream.
        let answers = futures_util::stream::unfold(conversation, Conversation::next);
        Ok(Response::new(Box::pin(answers)))
    }
}

/// One ext_proc stream: the deciding filter's messages get answers; an observing filter's
/// (`observability_mode`) are read and never answered, and the stream ends once keygate
/// needs no more of them.
struct Conversation {
    inbound: Streaming<ProcessingRequest>,
    session: Session,
    observer: Option<Observer>,
    closed: bool,
}

impl Conversation {
    async fn next(mut self) -> Option<(Result<ProcessingResponse, Status>, Self)> {
        if self.closed {
            return None;
        }
        loop {
            let message = match self.inbound.next().await? {
                Ok(message) => message,
                Err(status) => {
                    self.closed = true;
                    return Some((Err(status), self));
                }
            };
            if message.observability_mode {
                let pipeline = &self.session.pipeline;
                let observer = self
                    .observer
                    .get_or_insert_with(|| Observer::new(pipeline.clone()));
                if observer.observe(&message) {
                    continue;
                }
                return None;
            }
            let answer = self.session.respond(message).await;
            return Some((Ok(answer), self));
        }
    }
}

/// One HTTP request's conversation with Envoy. Dropping it (stream closed) drops the
/// exchange, which settles: an interrupted response is still charged.
pub struct Session {
    pipeline: Pipeline,
    responses: Responses,
    exchange: Option<Exchange>,
    /// The ticket the exchange is parked under, with [`Responses::Observed`].
    ticket: Option<u64>,
    request_body: BodySendMode,
    /// keygate's decision to publish as dynamic metadata with the next answer.
    publish: Option<Verdict>,
}

impl Session {
    /// Answers one message.
    pub async fn respond(&mut self, message: ProcessingRequest) -> ProcessingResponse {
        let (response, mode_override) = match &message.request {
            Some(In::RequestHeaders(h)) => self.on_request_headers(&message, h).await,
            Some(In::RequestBody(b)) => (self.on_request_body(b).await, None),
            Some(In::ResponseHeaders(h)) => self.on_response_headers(h),
            Some(In::ResponseBody(b)) => {
                if let Some(exchange) = &mut self.exchange {
                    exchange.response_body(&b.body, b.end_of_stream);
                    if b.end_of_stream {
                        self.publish = Some(exchange.verdict().clone());
                    }
                }
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
            dynamic_metadata: self
                .publish
                .take()
                .map(|v| metadata::namespaced(&v, self.ticket)),
            ..Default::default()
        }
    }

    async fn on_request_headers(
        &mut self,
        message: &ProcessingRequest,
        h: &HttpHeaders,
    ) -> (Out, Option<ProcessingMode>) {
        let all = headers::view(h.headers.as_ref());
        let method = headers::text(&all, ":method").unwrap_or_default();
        let path = headers::text(&all, ":path").unwrap_or_default();
        let source = attribute(message, SOURCE_ATTRIBUTE).and_then(parse_address);
        let mut view = headers::request_view(method, path, all, source, None);
        view.peer_identity = attribute(message, PEER_URI_ATTRIBUTE);
        let phases = Phases::Full {
            body_follows: !h.end_of_stream,
        };
        let allowed = match self.pipeline.admit(&view, phases).await {
            Admission::Allowed(allowed) => allowed,
            Admission::Denied(denial, verdict) => {
                self.publish = Some(verdict);
                return (Out::ImmediateResponse(immediate(&denial)), None);
            }
        };
        // Envoy holds the headers while it buffers the body, so nothing reads the metadata
        // before the body's answer: publish once, with the last request-phase answer (Envoy
        // merges every struct it is sent; each costs it time).
        if !allowed.read_body {
            self.publish = Some(allowed.verdict);
        }
        self.exchange = allowed.exchange;
        if self.responses == Responses::Observed && self.exchange.is_some() {
            self.ticket = Some(self.pipeline.handover().ticket());
            if !allowed.read_body {
                self.park();
            }
        }
        let mode = allowed.read_body.then(|| {
            self.request_body = BodySendMode::Buffered;
            self.mode(BodySendMode::Streamed)
        });
        let response = Out::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: headers::set_options(&allowed.mutation, ValueField::Raw),
                    remove_headers: allowed.mutation.remove,
                }),
                clear_route_cache: true,
                ..Default::default()
            }),
        });
        (response, mode)
    }

    async fn on_request_body(&mut self, body: &HttpBody) -> Out {
        let Some(exchange) = &mut self.exchange else {
            return Out::RequestBody(BodyResponse::default());
        };
        let decided = exchange.request_body(&body.body).await;
        self.publish = Some(exchange.verdict().clone());
        let rewritten = match decided {
            Ok(rewritten) => {
                self.park();
                match rewritten {
                    Some(rewritten) => rewritten,
                    None => return Out::RequestBody(BodyResponse::default()),
                }
            }
            Err(denial) => {
                self.exchange = None;
                self.ticket = None;
                return Out::ImmediateResponse(immediate(&denial));
            }
        };
        let length = rewritten.len().to_string();
        Out::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: vec![headers::replace(
                        "content-length",
                        length.as_bytes(),
                        ValueField::Raw,
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
        let status = headers::text(&all, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let length = headers::text(&all, "content-length").and_then(|v| v.trim().parse().ok());
        let plan = match &mut self.exchange {
            Some(exchange) => {
                let plan = exchange.response_headers(
                    status,
                    headers::text(&all, "content-type"),
                    headers::text(&all, "content-encoding"),
                    length,
                );
                if h.end_of_stream {
                    exchange.response_body(&[], true);
                    self.publish = Some(exchange.verdict().clone());
                }
                plan
            }
            None => BodyPlan::Skip,
        };
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
                set_headers: vec![headers::replace(
                    "content-length",
                    n.to_string().as_bytes(),
                    ValueField::Raw,
                )],
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
            override_to.map(|body| self.mode(body)),
        )
    }

    /// Hands the exchange to the response observer, once its request phases are done.
    fn park(&mut self) {
        if let Some(ticket) = self.ticket {
            if let Some(exchange) = self.exchange.take() {
                self.pipeline.handover().park(ticket, exchange);
            }
        }
    }

    /// A processing mode keygate asks for. The shipped Envoy configs allow exactly these
    /// combinations (`allowed_override_modes`): with observed responses, this filter never
    /// asks for a response phase.
    fn mode(&self, response_body: BodySendMode) -> ProcessingMode {
        let (response_headers, response_body) = match self.responses {
            Responses::Held => (HeaderSendMode::Send, response_body),
            Responses::Observed => (HeaderSendMode::Skip, BodySendMode::None),
        };
        ProcessingMode {
            request_header_mode: HeaderSendMode::Default as i32,
            response_header_mode: response_headers as i32,
            request_body_mode: self.request_body as i32,
            response_body_mode: response_body as i32,
            request_trailer_mode: HeaderSendMode::Skip as i32,
            response_trailer_mode: HeaderSendMode::Skip as i32,
        }
    }
}

/// A string attribute Envoy evaluated for the request (`request_attributes`); empty is none.
fn attribute<'a>(message: &'a ProcessingRequest, name: &str) -> Option<&'a str> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let fields = &message.attributes.get(FILTER_NAME)?.fields;
    match fields.get(name)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A denial as Envoy's locally generated response.
pub fn immediate(denial: &Denial) -> ImmediateResponse {
    let mut set_headers = vec![headers::replace(
        "content-type",
        b"application/json",
        ValueField::Raw,
    )];
    set_headers.extend(
        denial
            .headers
            .iter()
            .map(|(k, v)| headers::replace(k, v.as_bytes(), ValueField::Raw)),
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

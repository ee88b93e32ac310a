//! A do-nothing ext_authz and ext_proc server: it allows every request without reading it.
//! Behind the same Envoy configs as keygate it measures the floor of an external-processing
//! hop on this machine (Envoy's filter and gRPC client, the loopback round trip, tonic and
//! h2), so the end-to-end report can say how much of keygate's added latency is keygate.
//! It is built with the same runtime and transport settings as `keygate serve`, and answers
//! the way keygate's ext_proc edge does: as tonic polls (no task or channel per stream). Behind
//! the shipped ext_proc config it sends the same messages keygate does, so it measures the
//! floor of that shape: it asks for the request body of a request that has one (the
//! override keygate sends), and reads an observe-only filter's messages without answering,
//! closing that stream at the end of the response.
//!
//! With `KEYGATE_NULL_SHAPED=1` (or `headers`, `metadata` for one part) its answers also have keygate's shape, not its work: the
//! request-headers answer swaps a credential header and clears the route cache, and both
//! request answers carry a verdict-sized dynamic metadata struct (`keygate` and
//! `keygate.handover` namespaces). The difference it makes is what Envoy spends on keygate's
//! answers, apart from what keygate spends making them.

use std::pin::Pin;

use anyhow::{Context, Result};
use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
    BodySendMode, HeaderSendMode,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ProcessingRequest,
    ProcessingResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};
use envoy_types::pb::google::rpc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Parser)]
#[command(about = "ext_authz + ext_proc server that allows everything (the hop's floor)")]
struct Args {
    /// Address to listen on; port 0 picks a free one. Prints `listening on ADDR` first.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

struct Null;

#[tonic::async_trait]
impl Authorization for Null {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Null {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let observed = request
            .metadata()
            .get("x-keygate-responses")
            .is_some_and(|v| v.as_bytes() == b"observed");
        let inbound = request.into_inner();
        let answers = futures_util::stream::unfold(inbound, move |mut inbound| async move {
            loop {
                let message = inbound.next().await?.ok()?;
                if message.observability_mode {
                    match &message.request {
                        Some(In::ResponseBody(b)) if b.end_of_stream => return None,
                        Some(In::ResponseHeaders(h)) if h.end_of_stream => return None,
                        _ => continue,
                    }
                }
                let (swap, metadata) = shape();
                let (response, mode_override) = match message.request {
                    Some(In::RequestHeaders(h)) => {
                        let body = (observed && !h.end_of_stream).then(ask_for_body);
                        let answer = if swap {
                            swap_credential()
                        } else {
                            HeadersResponse::default()
                        };
                        (Out::RequestHeaders(answer), body)
                    }
                    Some(In::ResponseHeaders(_)) => {
                        (Out::ResponseHeaders(HeadersResponse::default()), None)
                    }
                    Some(In::RequestBody(_)) => (Out::RequestBody(BodyResponse::default()), None),
                    Some(In::ResponseBody(_)) => (Out::ResponseBody(BodyResponse::default()), None),
                    _ => continue,
                };
                let request_phase =
                    matches!(response, Out::RequestHeaders(_) | Out::RequestBody(_));
                let reply = ProcessingResponse {
                    response: Some(response),
                    mode_override,
                    dynamic_metadata: (metadata && request_phase).then(verdict_sized),
                    ..Default::default()
                };
                return Some((Ok(reply), inbound));
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// Which parts of keygate's answer shape to send: `1` both, `headers` the credential swap,
/// `metadata` the verdict-sized metadata (unset or `0`: neither).
fn shape() -> (bool, bool) {
    static SHAPE: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    *SHAPE.get_or_init(|| match std::env::var("KEYGATE_NULL_SHAPED").as_deref() {
        Ok("1") => (true, true),
        Ok("headers") => (true, false),
        Ok("metadata") => (false, true),
        _ => (false, false),
    })
}

/// keygate's request-headers answer: the client's key header out, the provider's in, and the
/// route cache cleared.
fn swap_credential() -> HeadersResponse {
    HeadersResponse {
        response: Some(CommonResponse {
            header_mutation: Some(HeaderMutation {
                set_headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "authorization".into(),
                        raw_value: b"Bearer sk-null-processor-upstream-key-0000000000".to_vec(),
                        ..Default::default()
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                }],
                remove_headers: vec!["x-api-key".into()],
            }),
            clear_route_cache: true,
            ..Default::default()
        }),
    }
}

/// A struct the size of keygate's verdict, under keygate's two namespaces.
fn verdict_sized() -> Struct {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let inner = |fields: Vec<(&str, Value)>| Value {
        kind: Some(Kind::StructValue(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })),
    };
    let verdict = inner(vec![
        ("outcome", text("allowed")),
        ("consumer", text("bench-000001")),
        ("team", text("bench")),
        ("provider", text("openai")),
        ("key_id", text("kid_0123456789abcdef")),
        ("authenticated_by", text("key")),
        ("client_address", text("127.0.0.1")),
        ("model", text("gpt-4o-mini")),
    ]);
    let ticket = inner(vec![(
        "ticket",
        Value {
            kind: Some(Kind::NumberValue(42.0)),
        },
    )]);
    Struct {
        fields: [
            ("keygate".to_string(), verdict),
            ("keygate.handover".to_string(), ticket),
        ]
        .into_iter()
        .collect(),
    }
}

/// The override keygate sends for a request body it reads, with observed responses.
fn ask_for_body() -> ProcessingMode {
    ProcessingMode {
        request_header_mode: HeaderSendMode::Default as i32,
        response_header_mode: HeaderSendMode::Skip as i32,
        request_body_mode: BodySendMode::Buffered as i32,
        response_body_mode: BodySendMode::None as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("listening on {}", listener.local_addr()?);
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|tcp| {
                let _ = tcp.set_nodelay(true);
            })
        });
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Null))
            .add_service(ExternalProcessorServer::new(Null))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving")
    })
}

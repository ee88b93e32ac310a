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

use std::pin::Pin;

use anyhow::{Context, Result};
use clap::Parser;
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
    BodyResponse, HeadersResponse, ProcessingRequest, ProcessingResponse,
};
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
                let (response, mode_override) = match message.request {
                    Some(In::RequestHeaders(h)) => {
                        let body = (observed && !h.end_of_stream).then(ask_for_body);
                        (Out::RequestHeaders(HeadersResponse::default()), body)
                    }
                    Some(In::ResponseHeaders(_)) => {
                        (Out::ResponseHeaders(HeadersResponse::default()), None)
                    }
                    Some(In::RequestBody(_)) => (Out::RequestBody(BodyResponse::default()), None),
                    Some(In::ResponseBody(_)) => (Out::ResponseBody(BodyResponse::default()), None),
                    _ => continue,
                };
                let reply = ProcessingResponse {
                    response: Some(response),
                    mode_override,
                    ..Default::default()
                };
                return Some((Ok(reply), inbound));
            }
        });
        Ok(Response::new(Box::pin(answers)))
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

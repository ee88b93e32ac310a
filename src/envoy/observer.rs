//! The response observer: an ext_proc stream from a filter in `observability_mode`, which
//! sends the response's headers and body chunks without waiting for an answer. keygate
//! claims the exchange the deciding filter parked (its ticket arrives in the
//! `keygate.handover` dynamic metadata namespace, forwarded with
//! `metadata_options.forwarding_namespaces`), reads the response for its usage exactly as the
//! held path does, and closes the stream as soon as it needs nothing more (a body it does not
//! read, or the end of the body).

use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingRequest};
use envoy_types::pb::google::protobuf::value::Kind;

use super::headers;
use super::metadata::{HANDOVER_NAMESPACE, TICKET};
use crate::pipeline::{BodyPlan, Exchange, Pipeline};

/// One observed response. Dropping it (stream closed) settles a claimed exchange, so an
/// interrupted response is still charged.
pub struct Observer {
    pipeline: Pipeline,
    exchange: Option<Exchange>,
}

impl Observer {
    pub fn new(pipeline: Pipeline) -> Self {
        Observer {
            pipeline,
            exchange: None,
        }
    }

    /// Reads one message. Returns false when keygate needs no more of this response (the
    /// caller closes the stream, which tells Envoy to stop sending).
    pub fn observe(&mut self, message: &ProcessingRequest) -> bool {
        match &message.request {
            Some(In::ResponseHeaders(h)) => self.on_headers(message, h),
            Some(In::ResponseBody(b)) => match &mut self.exchange {
                Some(exchange) => {
                    exchange.response_body(&b.body, b.end_of_stream);
                    !b.end_of_stream
                }
                None => false,
            },
            // Request phases, if an operator sends them here, carry nothing keygate needs yet.
            Some(In::RequestHeaders(_)) | Some(In::RequestBody(_)) => true,
            Some(In::RequestTrailers(_)) | Some(In::ResponseTrailers(_)) | None => false,
        }
    }

    fn on_headers(&mut self, message: &ProcessingRequest, h: &HttpHeaders) -> bool {
        let Some(ticket) = ticket(message) else {
            // Nothing parked for this request: denied, or not an exchange keygate follows.
            return false;
        };
        let Some(mut exchange) = self.pipeline.handover().claim(ticket) else {
            return false;
        };
        let all = headers::view(h.headers.as_ref());
        let status = headers::text(&all, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let length = headers::text(&all, "content-length").and_then(|v| v.trim().parse().ok());
        let plan = exchange.response_headers(
            status,
            headers::text(&all, "content-type"),
            headers::text(&all, "content-encoding"),
            length,
        );
        if h.end_of_stream || plan == BodyPlan::Skip {
            exchange.response_body(&[], true);
            return false;
        }
        self.exchange = Some(exchange);
        true
    }
}

/// The ticket the deciding filter published for this request, if any.
fn ticket(message: &ProcessingRequest) -> Option<u64> {
    let fields = &message
        .metadata_context
        .as_ref()?
        .filter_metadata
        .get(HANDOVER_NAMESPACE)?
        .fields;
    match fields.get(TICKET)?.kind.as_ref()? {
        Kind::NumberValue(n) if n.is_finite() && *n >= 1.0 && n.fract() == 0.0 => Some(*n as u64),
        _ => None,
    }
}

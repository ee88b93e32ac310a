//! The model check of both phases: the model a request names against its consumer's
//! `scope.models`, at the headers when the body is already known (ext_authz with
//! `with_request_body`) or there is none, else with the body (ext_proc).

use crate::auth::registry::Consumer;
use crate::denial::DenyReason;
use crate::denial_binding::BindingDenial;
use crate::model_scope::{self, requested_model, Body, ModelRefusal};
use crate::request::RequestView;

/// The model the request names (for the verdict), and whether its consumer may call it.
pub(super) fn check(
    consumer: &Consumer,
    path: &str,
    body: Body<'_>,
) -> (Option<String>, Result<(), DenyReason>) {
    let model = requested_model(consumer.provider.kind, path, body);
    let checked = model_scope::check(&consumer.binding.models, &model).map_err(denial);
    (model.name().map(str::to_string), checked)
}

/// What the edge delivered of the body with the headers: all of it, nothing because there is
/// none, or not all of a body there is (no `with_request_body`, or Envoy's partial body).
pub(super) fn body_seen<'a>(req: &RequestView<'a>) -> Body<'a> {
    let partial = req
        .header("x-envoy-auth-partial-body")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"true"));
    match req.body {
        Some(bytes) if !bytes.is_empty() && !partial => Body::Whole {
            bytes,
            compressed: compressed(req),
        },
        _ if partial || req.content_length().is_some_and(|n| n > 0) => Body::Unseen,
        _ if req.header("transfer-encoding").is_some() => Body::Unseen,
        _ => Body::Absent,
    }
}

/// The request body has a content coding (it cannot be read as sent).
pub(super) fn compressed(req: &RequestView<'_>) -> bool {
    req.header("content-encoding")
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("identity"))
}

/// A model refusal as a denial reason.
fn denial(refusal: ModelRefusal) -> DenyReason {
    DenyReason::Binding(match refusal {
        ModelRefusal::NotAllowed(model) => BindingDenial::ModelNotAllowed { model },
        ModelRefusal::Unreadable => BindingDenial::ModelUnreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Header;

    fn view<'a>(headers: &'a [(&'a str, &'a str)], body: Option<&'a [u8]>) -> RequestView<'a> {
        RequestView {
            method: "POST",
            path: "/v1/chat/completions",
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name,
                    value: value.as_bytes(),
                })
                .collect(),
            header_count: 0,
            body_len: body.map(|b| b.len() as u64),
            peer: None,
            peer_identity: None,
            body,
        }
    }

    #[test]
    fn what_the_headers_phase_knows_of_the_body() {
        let json: &[u8] = br#"{"model":"m"}"#;
        let whole = Body::Whole {
            bytes: json,
            compressed: false,
        };
        assert_eq!(
            body_seen(&view(&[("content-length", "13")], Some(json))),
            whole
        );
        assert_eq!(body_seen(&view(&[], None)), Body::Absent);
        assert_eq!(
            body_seen(&view(&[("content-length", "0")], None)),
            Body::Absent
        );
        // A body Envoy did not send (no with_request_body), or sent only in part.
        assert_eq!(
            body_seen(&view(&[("content-length", "13")], None)),
            Body::Unseen
        );
        assert_eq!(
            body_seen(&view(&[("transfer-encoding", "chunked")], None)),
            Body::Unseen
        );
        let partial = [("x-envoy-auth-partial-body", "true")];
        assert_eq!(body_seen(&view(&partial, Some(json))), Body::Unseen);
        let gzip = [("content-encoding", "gzip")];
        assert_eq!(
            body_seen(&view(&gzip, Some(json))),
            Body::Whole {
                bytes: json,
                compressed: true
            }
        );
    }
}

//! The Envoy edges translate faithfully: the same gate decision becomes the right ext_proc and
//! ext_authz wire messages (raw_value vs value, overwrite not append, route-cache clear).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod common;

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AuthRequest,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, ProcessingRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use keygate::envoy::{ext_authz, ext_proc};
use keygate::pipeline::Pipeline;

fn pipeline(f: &common::Fixture) -> Pipeline {
    let ledger = std::sync::Arc::new(keygate::accounting::Ledger::in_memory());
    let accounting = std::sync::Arc::new(keygate::accounting::Accounting::new(
        keygate::usage::PriceTable::defaults(),
        ledger.clone(),
    ));
    let limiter = std::sync::Arc::new(keygate::limits::Limiter::new(ledger));
    Pipeline::new(f.gate.clone(), limiter, accounting, None)
}

fn proc_session(f: &common::Fixture) -> ext_proc::Session {
    ext_proc::ProcService::new(pipeline(f)).session(ext_proc::Responses::Held)
}

fn respond(
    session: &mut ext_proc::Session,
    m: ProcessingRequest,
) -> envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse {
    block(session.respond(m))
}

/// Runs an edge's async handler to completion.
fn block<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn raw(headers: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    }
}

fn proc_request(headers: &[(&str, &str)]) -> ProcessingRequest {
    let mut fields = HashMap::new();
    fields.insert(
        "source.address".to_string(),
        Value {
            kind: Some(Kind::StringValue("127.0.0.2:40000".into())),
        },
    );
    let mut attributes = HashMap::new();
    attributes.insert("envoy.filters.http.ext_proc".to_string(), Struct { fields });
    ProcessingRequest {
        request: Some(In::RequestHeaders(HttpHeaders {
            headers: Some(raw(headers)),
            end_of_stream: true,
            ..Default::default()
        })),
        attributes,
        ..Default::default()
    }
}

/// The upstream response headers Envoy sends in the response-headers phase.
fn upstream_headers(headers: &[(&str, &str)]) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(In::ResponseHeaders(HttpHeaders {
            headers: Some(raw(headers)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The whole request body, in one message (Envoy's BUFFERED mode).
fn whole_body(body: &[u8]) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(In::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The request headers of an OpenAI chat POST whose body follows.
fn chat_post(bearer: &str) -> ProcessingRequest {
    let mut req = proc_request(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("authorization", bearer),
    ]);
    if let Some(In::RequestHeaders(h)) = &mut req.request {
        h.end_of_stream = false;
    }
    req
}

#[test]
fn ext_proc_allow_overwrites_the_credential_in_raw_value_and_clears_the_route() {
    let f = common::fixture();
    let bearer = format!("Bearer {}", f.keys.openai);
    let req = proc_request(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("authorization", &bearer),
        ("x-keygate-provider", "anthropic"),
    ]);
    let Some(Out::RequestHeaders(h)) = block(proc_session(&f).respond(req)).response else {
        panic!("expected a headers response");
    };
    let common = h.response.unwrap();
    assert!(common.clear_route_cache);
    let mutation = common.header_mutation.unwrap();
    let find = |name: &str| {
        mutation
            .set_headers
            .iter()
            .find(|o| o.header.as_ref().unwrap().key == name)
            .unwrap()
    };
    let auth = find("authorization");
    assert_eq!(
        auth.append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    let value = auth.header.as_ref().unwrap();
    assert_eq!(
        value.raw_value,
        format!("Bearer {}", common::OPENAI_SECRET).into_bytes()
    );
    assert!(value.value.is_empty(), "ext_proc reads raw_value only");
    assert_eq!(
        find("x-keygate-provider")
            .header
            .as_ref()
            .unwrap()
            .raw_value,
        b"openai"
    );
}

#[test]
fn ext_proc_deny_is_an_immediate_json_response() {
    let f = common::fixture();
    let req = proc_request(&[
        (":method", "GET"),
        (":path", "/v1/models"),
        ("authorization", "Bearer nope"),
    ]);
    let Some(Out::ImmediateResponse(r)) = block(proc_session(&f).respond(req)).response else {
        panic!("expected an immediate response");
    };
    assert_eq!(r.status.unwrap().code, 401);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let ct = &r.headers.unwrap().set_headers[0];
    assert_eq!(ct.header.as_ref().unwrap().key, "content-type");
    assert_eq!(ct.header.as_ref().unwrap().raw_value, b"application/json");
    assert_eq!(r.details, "keygate_malformed_key");
}

#[test]
fn ext_proc_passes_through_phases_it_did_not_ask_for() {
    let f = common::fixture();
    let req = ProcessingRequest {
        request: Some(In::ResponseHeaders(HttpHeaders::default())),
        ..Default::default()
    };
    assert!(matches!(
        block(proc_session(&f).respond(req)).response,
        Some(Out::ResponseHeaders(_))
    ));
}

fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: "127.0.0.3".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(AuthRequest {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    header_map: Some(raw(headers)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn ext_authz_allow_sets_text_values_and_removes_client_credentials() {
    let f = common::fixture();
    let req = check_request(
        "POST",
        "/v1/messages",
        &[
            ("x-api-key", &f.keys.anthropic),
            ("authorization", ""),
            ("x-keygate-team", "x"),
        ],
    );
    let resp = block(ext_authz::check(&pipeline(&f), &req));
    assert_eq!(resp.status.unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = resp.http_response else {
        panic!("not ok")
    };
    let key = ok
        .headers
        .iter()
        .find(|o| o.header.as_ref().unwrap().key == "x-api-key")
        .unwrap();
    assert_eq!(key.header.as_ref().unwrap().value, common::ANTHROPIC_SECRET);
    assert_eq!(
        key.append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert!(ok.headers_to_remove.contains(&"authorization".to_string()));
    assert!(ok.headers_to_remove.contains(&"x-keygate-team".to_string()));
}

#[test]
fn ext_authz_deny_carries_status_and_body() {
    let f = common::fixture();
    let bearer = format!("Bearer {}", f.keys.suspended);
    let resp = block(ext_authz::check(
        &pipeline(&f),
        &check_request("GET", "/v1/models", &[("authorization", &bearer)]),
    ));
    assert_eq!(resp.status.unwrap().code, 7);
    let Some(HttpResponse::DeniedResponse(d)) = resp.http_response else {
        panic!("not denied")
    };
    assert_eq!(d.status.unwrap().code, 403);
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"]["code"], "consumer_suspended");
}

#[test]
fn ext_authz_without_http_attributes_is_denied() {
    let f = common::fixture();
    let resp = block(ext_authz::check(&pipeline(&f), &CheckRequest::default()));
    assert_ne!(resp.status.unwrap().code, 0);
}

#[test]
fn ext_proc_asks_for_the_body_it_needs_and_rewrites_openai_streams() {
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
    use envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation;

    let f = common::fixture();
    let mut session = proc_session(&f);
    let bearer = format!("Bearer {}", f.keys.openai);
    let out = respond(&mut session, chat_post(&bearer));
    let mode = out
        .mode_override
        .expect("a POST to an LLM endpoint asks for its body");
    assert_eq!(mode.request_body_mode, BodySendMode::Buffered as i32);
    assert_eq!(
        mode.response_body_mode,
        BodySendMode::Streamed as i32,
        "Envoy never buffers a response body (it fails bodies over its buffer limit)"
    );

    let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let out = respond(&mut session, whole_body(body));
    let Some(Out::RequestBody(b)) = out.response else {
        panic!("body response expected")
    };
    let common = b.response.expect("rewritten");
    let Some(Mutation::Body(new_body)) = common.body_mutation.and_then(|m| m.mutation) else {
        panic!("no body")
    };
    let parsed: serde_json::Value = serde_json::from_slice(&new_body).unwrap();
    assert_eq!(parsed["stream_options"]["include_usage"], true);
    let length = &common.header_mutation.unwrap().set_headers[0];
    assert_eq!(length.header.as_ref().unwrap().key, "content-length");
    assert_eq!(
        length.header.as_ref().unwrap().raw_value,
        new_body.len().to_string().into_bytes()
    );

    let sse = upstream_headers(&[
        (":status", "200"),
        ("content-type", "text/event-stream; charset=utf-8"),
    ]);
    let out = respond(&mut session, sse);
    assert_eq!(
        out.mode_override, None,
        "a body keygate reads stays STREAMED, as the request headers set it"
    );

    let error = upstream_headers(&[(":status", "500"), ("content-type", "application/json")]);
    let mut session = proc_session(&f);
    respond(&mut session, chat_post(&bearer));
    let out = respond(&mut session, error);
    let Some(Out::ResponseHeaders(kept)) = &out.response else {
        panic!("headers response expected")
    };
    let length = kept
        .response
        .as_ref()
        .and_then(|c| c.header_mutation.as_ref())
        .map(|m| m.set_headers.clone())
        .unwrap_or_default();
    assert!(
        length.is_empty(),
        "no content-length to keep without one: {length:?}"
    );
    let mode = out.mode_override.expect("an error body is not read");
    assert_eq!(mode.response_body_mode, BodySendMode::None as i32);
    assert_eq!(
        mode.request_body_mode,
        BodySendMode::Buffered as i32,
        "must match an allowed override exactly"
    );
}

#[test]
fn ext_proc_buffers_small_json_and_keeps_its_content_length() {
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
    let f = common::fixture();
    let mut session = proc_session(&f);
    let bearer = format!("Bearer {}", f.keys.openai);
    respond(&mut session, chat_post(&bearer));
    let json = |length: &str| {
        upstream_headers(&[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", length),
        ])
    };
    let out = respond(&mut session, json("120"));
    let mode = out
        .mode_override
        .expect("small JSON is switched to BUFFERED");
    assert_eq!(mode.response_body_mode, BodySendMode::Buffered as i32);
    let Some(Out::ResponseHeaders(h)) = out.response else {
        panic!("headers response expected")
    };
    let set = h.response.unwrap().header_mutation.unwrap().set_headers;
    let header = set[0].header.as_ref().unwrap();
    assert_eq!(
        (header.key.as_str(), header.raw_value.as_slice()),
        ("content-length", b"120".as_slice())
    );

    let mut session = proc_session(&f);
    respond(&mut session, chat_post(&bearer));
    let out = respond(&mut session, json("2000000"));
    assert_eq!(
        out.mode_override, None,
        "a large JSON body stays STREAMED, never meeting Envoy's buffer limit"
    );
}

#[test]
fn ext_proc_skips_bodies_of_errors_and_get_requests() {
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
    let f = common::fixture();
    let mut session = proc_session(&f);
    let bearer = format!("Bearer {}", f.keys.openai);
    let out = respond(
        &mut session,
        proc_request(&[
            (":method", "GET"),
            (":path", "/v1/models"),
            ("authorization", &bearer),
        ]),
    );
    assert!(out.mode_override.is_none(), "a GET has no body to ask for");
    let error = upstream_headers(&[(":status", "503"), ("content-type", "application/json")]);
    let mode = respond(&mut session, error)
        .mode_override
        .expect("error bodies are skipped");
    assert_eq!(mode.response_body_mode, BodySendMode::None as i32);
    assert_eq!(mode.request_body_mode, BodySendMode::None as i32);
}

#[test]
fn ext_proc_publishes_the_verdict_once_with_the_last_request_answer() {
    let f = common::fixture();
    let mut session = proc_session(&f);
    let bearer = format!("Bearer {}", f.keys.openai);
    let headers = respond(&mut session, chat_post(&bearer));
    assert!(headers.mode_override.is_some(), "the body is read");
    assert_eq!(
        headers.dynamic_metadata, None,
        "Envoy holds the headers until the body's answer: no metadata yet"
    );
    let body = respond(
        &mut session,
        whole_body(br#"{"model":"gpt-4o","messages":[]}"#),
    );
    let published = body
        .dynamic_metadata
        .expect("the verdict, with the body's answer");
    let Some(Kind::StructValue(verdict)) = published.fields["keygate"].kind.clone() else {
        panic!("keygate's namespace is a struct: {published:?}");
    };
    for (field, value) in [("outcome", "allowed"), ("model", "gpt-4o")] {
        assert_eq!(
            verdict.fields[field].kind,
            Some(Kind::StringValue(value.into())),
            "{field}"
        );
    }
    assert!(verdict.fields.contains_key("consumer"));

    let mut bodiless = proc_session(&f);
    let get = respond(
        &mut bodiless,
        proc_request(&[
            (":method", "GET"),
            (":path", "/v1/models"),
            ("authorization", &bearer),
        ]),
    );
    assert!(
        get.dynamic_metadata.is_some(),
        "a request without a body read is published with the headers' answer"
    );
}

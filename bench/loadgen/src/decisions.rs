//! The gRPC messages Envoy sends keygate for the benchmark request (`POST
//! /v1/chat/completions` with a consumer key): an ext_authz `CheckRequest` and the ext_proc
//! request-headers message, built the way Envoy 1.40 fills them.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AuthRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

/// The headers Envoy forwards for the e2e request (pseudo-headers included).
fn headers(key: &str) -> HeaderMap {
    let bearer = format!("Bearer {key}");
    let pairs = [
        (":authority", "127.0.0.1:10000"),
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "98"),
        ("authorization", bearer.as_str()),
        ("user-agent", "keygate-bench/0.1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5a1c7c0e-8d4f-4b8e-9a53-0c2f7b5e9d11"),
    ];
    HeaderMap {
        headers: pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).to_string(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    }
}

fn peer(ip: &str, port: u32) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port),
                ),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// The ext_authz check for one request presenting `key`.
pub fn check_request(key: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("127.0.0.1", 40000)),
            destination: Some(peer("127.0.0.1", 10000)),
            request: Some(AuthRequest {
                http: Some(HttpRequest {
                    id: "5a1c7c0e-8d4f-4b8e-9a53-0c2f7b5e9d11".into(),
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    host: "127.0.0.1:10000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    size: 98,
                    header_map: Some(headers(key)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The ext_proc request-headers message for one request presenting `key`.
pub fn proc_request(key: &str) -> ProcessingRequest {
    let mut fields = HashMap::new();
    let source = Kind::StringValue("127.0.0.1:40000".into());
    fields.insert("source.address".to_string(), Value { kind: Some(source) });
    let mut attributes = HashMap::new();
    attributes.insert("envoy.filters.http.ext_proc".to_string(), Struct { fields });
    ProcessingRequest {
        request: Some(In::RequestHeaders(HttpHeaders {
            headers: Some(headers(key)),
            end_of_stream: false,
            ..Default::default()
        })),
        attributes,
        ..Default::default()
    }
}

//! The two Envoy edges are translators of one pipeline: the same requests sent through
//! ext_proc (headers phase, no body) and ext_authz get the same statuses, the same JSON bodies
//! and headers, and the same `keygate_requests_total` increments, for an allow, every kind of
//! denial, the request-rate and size limits, and a canary key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AuthRequest,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use keygate::app::App;
use keygate::auth::{key, KeyEnv, KeyHash};
use keygate::envoy::{ext_authz, ext_proc};
use keygate::secrets::CredentialCache;
use metrics_exporter_prometheus::PrometheusBuilder;

const PEER: &str = "127.0.0.7";

struct Keys {
    team: String,
    suspended: String,
    revoked: String,
    canary: String,
}

fn mint() -> String {
    key::reveal(&key::generate(KeyEnv::Live).unwrap()).to_string()
}

fn config(keys: &Keys) -> String {
    let h = |k: &str| KeyHash::of(k).to_string();
    format!(
        r#"
credentials: {{source: file, path: secrets.yaml}}
providers:
  openai: {{kind: openai, credentials: {{production: openai/production}}}}
usage: {{ledger: ""}}
admin: {{state_file: state.yaml}}
limits: {{failed_auth_per_minute: 3}}
consumers:
  - name: team
    environment: production
    provider: openai
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["POST /v1/chat/completions", "GET /v1/models"]}}
    limits: {{requests_per_minute: 2, max_request_bytes: 100}}
  - {{name: paused, environment: production, provider: openai, status: suspended, keys: [{{hash: "{}"}}], scope: {{routes: ["* /v1/**"]}}}}
  - {{name: gone, environment: production, provider: openai, status: revoked, keys: [{{hash: "{}"}}], scope: {{routes: ["* /v1/**"]}}}}
  - {{name: trap, environment: production, provider: openai, canary: true, keys: [{{hash: "{}"}}], scope: {{routes: ["* /v1/**"]}}}}
"#,
        h(&keys.team),
        h(&keys.suspended),
        h(&keys.revoked),
        h(&keys.canary)
    )
}

/// One request: method, path, headers.
type Req<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

/// What an edge answered, in edge-independent terms.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    body: Option<serde_json::Value>,
    headers: Vec<(String, String)>,
}

fn header_map(headers: &[(&str, String)]) -> HeaderMap {
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

fn via_ext_proc(session: &mut ext_proc::Session, rt: &tokio::runtime::Runtime, r: &Req) -> Answer {
    let mut all = vec![(":method", r.0.to_string()), (":path", r.1.to_string())];
    all.extend(r.2.iter().cloned());
    let mut fields = HashMap::new();
    fields.insert(
        "source.address".to_string(),
        Value {
            kind: Some(Kind::StringValue(format!("{PEER}:40000"))),
        },
    );
    let message = ProcessingRequest {
        request: Some(In::RequestHeaders(HttpHeaders {
            headers: Some(header_map(&all)),
            end_of_stream: true,
            ..Default::default()
        })),
        attributes: HashMap::from([("envoy.filters.http.ext_proc".to_string(), Struct { fields })]),
        ..Default::default()
    };
    match rt.block_on(session.respond(message)).response {
        Some(Out::RequestHeaders(_)) => Answer {
            status: 200,
            body: None,
            headers: Vec::new(),
        },
        Some(Out::ImmediateResponse(i)) => Answer {
            status: i.status.unwrap().code as u16,
            body: Some(serde_json::from_slice(&i.body).unwrap()),
            headers: i
                .headers
                .unwrap()
                .set_headers
                .into_iter()
                .map(|o| {
                    let h = o.header.unwrap();
                    (h.key, String::from_utf8(h.raw_value).unwrap())
                })
                .collect(),
        },
        other => panic!("unexpected ext_proc answer {other:?}"),
    }
}

fn via_ext_authz(
    pipeline: &keygate::pipeline::Pipeline,
    rt: &tokio::runtime::Runtime,
    r: &Req,
) -> Answer {
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: PEER.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(AuthRequest {
                http: Some(HttpRequest {
                    method: r.0.into(),
                    path: r.1.into(),
                    header_map: Some(header_map(&r.2)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let response = rt.block_on(ext_authz::check(pipeline, &request));
    match response.http_response {
        Some(HttpResponse::OkResponse(_)) => Answer {
            status: 200,
            body: None,
            headers: Vec::new(),
        },
        Some(HttpResponse::DeniedResponse(d)) => Answer {
            status: d.status.unwrap().code as u16,
            body: Some(serde_json::from_str(&d.body).unwrap()),
            headers: d
                .headers
                .into_iter()
                .map(|o| {
                    let h = o.header.unwrap();
                    (h.key, h.value)
                })
                .collect(),
        },
        other => panic!("unexpected ext_authz answer {other:?}"),
    }
}

#[derive(Clone, Copy)]
enum Edge {
    ExtProc,
    ExtAuthz,
}

/// Runs `requests` in order through a fresh keygate on one edge; returns the answers and the
/// `keygate_requests_total` lines.
fn run(edge: Edge, keys: &Keys, requests: &[Req]) -> (Vec<Answer>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keygate.yaml"), config(keys)).unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "openai/production: {api_key: sk-upstream-0001}\n",
    )
    .unwrap();
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (answers, meters) = metrics::with_local_recorder(&recorder, || {
        let cache = Arc::new(CredentialCache::new());
        let prepared = rt
            .block_on(keygate::reload::prepare(
                &dir.path().join("keygate.yaml"),
                &cache,
                false,
            ))
            .unwrap();
        let app = {
            let _guard = rt.enter();
            App::build(&prepared.config, cache).unwrap()
        };
        let (_config, _background) = {
            let _guard = rt.enter();
            app.activate(prepared, None).unwrap()
        };
        let service = ext_proc::ProcService::new(app.pipeline.clone());
        let answers = requests
            .iter()
            .map(|r| match edge {
                Edge::ExtProc => via_ext_proc(
                    &mut service.session(keygate::envoy::Responses::Held),
                    &rt,
                    r,
                ),
                Edge::ExtAuthz => via_ext_authz(&app.pipeline, &rt, r),
            })
            .collect::<Vec<_>>();
        (answers, app.accounting.render_meters())
    });
    let mut counted: Vec<String> = (handle.render() + &meters)
        .lines()
        .filter(|l| l.starts_with("keygate_requests_total{"))
        .map(str::to_string)
        .collect();
    counted.sort();
    (answers, counted)
}

#[test]
fn both_edges_answer_and_count_every_outcome_alike() {
    let keys = Keys {
        team: mint(),
        suspended: mint(),
        revoked: mint(),
        canary: mint(),
    };
    let bearer = |k: &str| ("authorization", format!("Bearer {k}"));
    let chat = "/v1/chat/completions";
    let requests: Vec<Req> = vec![
        ("POST", chat, vec![bearer(&keys.team)]),
        (
            "POST",
            chat,
            vec![bearer(&keys.team), ("content-length", "500".into())],
        ),
        ("GET", "/v1/models", vec![bearer(&keys.team)]),
        ("POST", chat, vec![bearer(&keys.team)]),
        ("DELETE", "/v1/files/x", vec![bearer(&keys.team)]),
        ("GET", "/v1/models", vec![bearer(&keys.suspended)]),
        ("GET", "/v1/models", vec![bearer(&keys.revoked)]),
        ("GET", "/v1/models", vec![bearer(&keys.canary)]),
        (
            "POST",
            "/v1/messages",
            vec![
                ("x-api-key", keys.suspended.clone()),
                ("anthropic-version", "2023-06-01".into()),
            ],
        ),
        ("GET", "/v1/%2e%2e/admin", vec![bearer(&keys.team)]),
        ("GET", "/v1/models", vec![]),
        ("GET", "/v1/models", vec![bearer("kg_live_not-a-key")]),
        ("GET", "/v1/models", vec![bearer("nope")]),
        ("GET", "/v1/models", vec![bearer("nope")]),
        ("GET", "/v1/models", vec![bearer(&keys.team)]),
    ];
    let (proc_answers, proc_counts) = run(Edge::ExtProc, &keys, &requests);
    let (authz_answers, authz_counts) = run(Edge::ExtAuthz, &keys, &requests);
    for (i, (p, a)) in proc_answers.iter().zip(&authz_answers).enumerate() {
        assert_eq!(
            p, a,
            "request {i} ({} {}) answered differently",
            requests[i].0, requests[i].1
        );
    }
    assert_eq!(proc_counts, authz_counts, "metric increments differ");

    let statuses: Vec<u16> = proc_answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200, 413, 200, 429, 403, 403, 403, 403, 403, 400, 401, 401, 401, 429, 429],
        "allow, too large, allow, rate limited, out of scope, suspended, revoked, canary, suspended (Anthropic shape), bad path, missing key, malformed, malformed, the failed-auth guard for the address, and the valid key from that address, past the guard, rate limited"
    );
    let count = |outcome: &str| {
        proc_counts
            .iter()
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    for (outcome, n) in [
        ("allowed", 2),
        ("too_large", 1),
        ("rate_limited", 2),
        ("out_of_scope", 1),
        ("suspended", 3),
        ("revoked", 1),
        ("bad_path", 1),
        ("missing_key", 1),
        ("malformed_key", 2),
        ("auth_flood", 1),
    ] {
        assert_eq!(count(outcome), n, "{outcome} in {proc_counts:#?}");
    }
    let total: u64 = proc_counts
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        total,
        requests.len() as u64,
        "every request counted exactly once"
    );
}

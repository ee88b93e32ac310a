//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`, from the
//! repository's own examples: the provider fixtures in `src/usage/fixtures` (captured from the
//! mock provider and from the providers' docs), the configs in `examples/`, `deploy/`, the
//! README and the fixture config of the Envoy targets, and Envoy messages encoded here the way
//! Envoy sends them. Run from the repository root:
//!
//! ```sh
//! cargo run --manifest-path fuzz/seeds/Cargo.toml
//! ```
//!
//! A crate of its own, so writing seeds does not build keygate.
//!
//! Seeds only start the fuzzers; the committed corpora are what `cargo fuzz cmin` kept.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AuthRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, ProcessingRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
#[path = "../../src/keys.rs"]
#[allow(dead_code)]
mod keys;

use keys::{ANTHROPIC_KEY, AZURE_KEY, COHERE_KEY, GENERIC_KEY, OPENAI_KEY, SUSPENDED_KEY};
use prost::Message;

struct Seeds {
    root: PathBuf,
    out: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }

    fn read(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn fixture(&self, name: &str) -> Vec<u8> {
        self.read(&format!("src/usage/fixtures/{name}"))
    }
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz dir");
    let seeds = Seeds {
        root: fuzz.parent().expect("repo root").to_path_buf(),
        out: fuzz.join("corpus"),
    };
    keys(&seeds);
    paths(&seeds);
    headers(&seeds);
    usage(&seeds);
    requests(&seeds);
    compressed(&seeds);
    configs(&seeds);
    ext_proc(&seeds);
    ext_authz(&seeds);
    eprintln!("seeds written under {}", seeds.out.display());
}

fn keys(s: &Seeds) {
    let all = [
        OPENAI_KEY,
        ANTHROPIC_KEY,
        COHERE_KEY,
        // The demo key the README publishes.
        "kg_test_U6495exsEaIqrZ6nx1AZeZT6nZsehY_1wwHSo",
        "kg_live_FuzzOpenAIKey00000000000000000_2EN2wm",
        "kg_prod_FuzzOpenAIKey00000000000000000_2EN2wl",
        "sha256:7965799baa91c68b9477277d65f65af74af61df24a302eb590291b0c2bee2082",
        "sha256:7965799BAA91C68B9477277D65F65AF74AF61DF24A302EB590291B0C2BEE2082",
        "kid_7965799baa91",
        "kid_7965799BAA91",
        "sk-proj-abc",
    ];
    for (i, key) in all.iter().enumerate() {
        s.write("key", &i.to_string(), key.as_bytes());
    }
}

fn paths(s: &Seeds) {
    let cases = [
        "POST /v1/chat/completions\nPOST /v1/chat/completions\nGET /v1/models\nGET /v1/models/*",
        "GET //v1///models/gpt-4o/?limit=3#x\n* /v1/**\nGET /v1/*",
        "GET /v1/chat/completions/%2e%2E/files\n* /v1/**",
        "POST /v1/chat%2Fcompletions\n* /**",
        "GET /v1/files/abc/content\n* /v1/**\nGET /v1/files/**",
        "POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21\n* /openai/**",
        "POST /openai/v1/fine_tuning/jobs\n* /openai/**\nPOST /openai/v1/fine_tuning/jobs",
        "POST /v1/messages/batches\nPOST /v1/messages\nPOST /v1/messages/**",
        "DELETE /v1/organization/api_keys/k1\nDELETE /v1/**\n* /v1/organization/**",
        "GET /v1/models/a%20b%7e\nGET /v1/models/*\nPOTS /v1\nGET v1\nGET /**/x\nGET /v1/../x",
        "GET /\nGET /",
        "GET /v1\\files\n* /**",
    ];
    for (i, case) in cases.iter().enumerate() {
        s.write("path_scope", &i.to_string(), case.as_bytes());
    }
}

fn headers(s: &Seeds) {
    let cases = [
        format!("authorization:Bearer {OPENAI_KEY}\ncontent-length: 120"),
        format!("authorization:bearer  {OPENAI_KEY} \nx-api-key:{OPENAI_KEY}"),
        format!("x-api-key:{ANTHROPIC_KEY}\nanthropic-version:2023-06-01"),
        format!("api-key:{AZURE_KEY}\nauthorization:Bearer {OPENAI_KEY}"),
        "authorization:Basic dXNlcjpwYXNz".to_string(),
        "authorization:\nx-api-key: \ncontent-length:abc".to_string(),
        "authorization:Bearer \u{ff}\u{fe}".to_string(),
    ];
    for (i, case) in cases.iter().enumerate() {
        s.write("headers", &i.to_string(), case.as_bytes());
    }
}

/// Dialect selector bytes: 0 OpenAI, 1 Anthropic, 2 Cohere.
fn usage(s: &Seeds) {
    let bodies = [
        (0u8, "mock_openai_chat.json"),
        (0, "mock_openai_completion.json"),
        (0, "mock_openai_embeddings.json"),
        (0, "mock_openai_responses.json"),
        (0, "openai_chat_doc.json"),
        (0, "openai_embeddings_doc.json"),
        (0, "openai_responses_doc.json"),
        (0, "azure_chat.json"),
        (1, "mock_anthropic_message.json"),
        (1, "anthropic_message_doc.json"),
        (2, "cohere_v1_chat.json"),
        (2, "cohere_v2_chat.json"),
    ];
    for (dialect, name) in bodies {
        s.write(
            "usage_body",
            name,
            &[&[dialect], &s.fixture(name)[..]].concat(),
        );
    }
    let streams = [
        (0u8, "mock_openai_chat_stream_usage.sse"),
        (0, "mock_openai_chat_stream_no_usage.sse"),
        (0, "mock_openai_chat_stream_interrupted.sse"),
        (0, "mock_openai_completion_stream.sse"),
        (0, "mock_openai_responses_stream.sse"),
        (0, "azure_chat_stream.sse"),
        (1, "mock_anthropic_stream.sse"),
        (1, "mock_anthropic_stream_interrupted.sse"),
        (1, "anthropic_stream_doc.sse"),
        (1, "anthropic_stream_error.sse"),
        (2, "cohere_v2_stream.sse"),
    ];
    for (i, (dialect, name)) in streams.into_iter().enumerate() {
        // Alternate the event limit (selector / 3) and the chunking byte.
        let selector = dialect + 3 * (i as u8 % 4);
        let chunking = (i as u8).wrapping_mul(37);
        s.write(
            "usage_stream",
            name,
            &[&[selector, chunking], &s.fixture(name)[..]].concat(),
        );
    }
}

fn requests(s: &Seeds) {
    let bodies: [(u8, &str); 14] = [
        (
            0,
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#,
        ),
        (
            0,
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}"#,
        ),
        (
            0,
            r#"{"model":"gpt-4o-mini","stream":true,"stream_options":null,"messages":[]}"#,
        ),
        (
            0,
            r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{},"messages":[]}"#,
        ),
        (
            0,
            r#" { "stream" : true , "stream_options" : { "include_usage" : false , "x" : 1 } , "prompt" : "abc" } "#,
        ),
        (
            0,
            r#"{"stream":true,"stream_options":{"continuous_usage_stats":true},"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{\"a\":1}"}}]}]}"#,
        ),
        (
            0,
            r#"{"str\u0065am":true,"messages":[],"stream":false,"stream":true}"#,
        ),
        (
            0,
            r#"{"model":"text-embedding-3-small","input":["abcd","efgh"]}"#,
        ),
        (0, r#"{"prompt":[[1,2,3],[4]],"max_tokens":7}"#),
        (
            0,
            r#"{"model":"o3","instructions":"abcd","input":[{"role":"user","content":[{"type":"input_text","text":"abcdefgh"}]},{"type":"function_call_output","call_id":"c","output":"abcd"}],"max_output_tokens":9}"#,
        ),
        (
            1,
            r#"{"model":"claude-opus-4-20250514","max_tokens":1024,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"42"}]}]}],"stream":true}"#,
        ),
        (
            2,
            r#"{"message":"abcd","preamble":"abcd","chat_history":[{"role":"USER","message":"abcd"}]}"#,
        ),
        (
            2,
            r#"{"model":"command-r","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        ),
        (0, "not json at all"),
    ];
    for (i, (dialect, body)) in bodies.iter().enumerate() {
        s.write(
            "request_body",
            &i.to_string(),
            &[&[*dialect], body.as_bytes()].concat(),
        );
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).expect("br");
    }
    out
}

/// Selector bytes index `ENCODINGS` in `fuzz_targets/decompress.rs`: 0 identity, 1 gzip,
/// 3 deflate, 4 br, 6 "gzip, br", 7 "br, gzip".
fn compressed(s: &Seeds) {
    let json = s.fixture("mock_openai_chat.json");
    let sse = s.fixture("mock_anthropic_stream.sse");
    // Limit bytes (see the target): 0x90 0x00 is 64 KiB; 0x00 0x40 is 64 bytes, too small.
    let cases: Vec<(&str, u8, [u8; 2], u8, Vec<u8>)> = vec![
        ("identity", 0, [0x90, 0], 0, json.clone()),
        ("gzip", 1, [0x90, 0], 1, gzip(&json)),
        (
            "gzip-fixture",
            1,
            [0x90, 0],
            5,
            s.fixture("mock_openai_chat.json.gz"),
        ),
        (
            "gzip-multimember",
            1,
            [0x90, 0],
            3,
            [gzip(&json), gzip(&sse)].concat(),
        ),
        ("gzip-small-limit", 1, [0, 0x40], 2, gzip(&json)),
        ("deflate-zlib", 3, [0x90, 0], 4, zlib(&sse)),
        ("deflate-raw", 3, [0x90, 0], 1, raw_deflate(&sse)),
        ("br", 4, [0x90, 0], 6, br(&sse)),
        ("br-small-limit", 4, [0, 0x40], 7, br(&json)),
        ("gzip-br", 6, [0x90, 0], 0, br(&gzip(&json))),
        ("br-gzip", 7, [0x90, 0], 0, gzip(&br(&json))),
        ("bomb-gzip", 1, [0x90, 0], 6, gzip(&vec![b'a'; 1 << 20])),
        ("bomb-br", 4, [0x90, 0], 6, br(&vec![b'a'; 1 << 20])),
    ];
    for (name, selector, limit, chunking, body) in cases {
        let mut input = vec![selector, limit[0], limit[1], chunking];
        input.extend_from_slice(&body);
        s.write("decompress", name, &input);
    }
}

fn configs(s: &Seeds) {
    s.write(
        "config",
        "examples-keygate",
        &s.read("examples/keygate.yaml"),
    );
    s.write(
        "config",
        "examples-secrets",
        &s.read("examples/secrets.yaml"),
    );
    // The keygate.yaml inside the Kubernetes ConfigMap, and every YAML block of the README.
    let deploy = String::from_utf8(s.read("deploy/kubernetes/keygate.yaml")).expect("utf-8");
    if let Some(start) = deploy.find("keygate.yaml: |") {
        let block: String = deploy[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        s.write("config", "deploy-kubernetes", block.as_bytes());
    }
    let readme = String::from_utf8(s.read("README.md")).expect("utf-8");
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let yaml = block.split("```").next().unwrap_or_default();
        s.write("config", &format!("readme-{i}"), yaml.as_bytes());
    }
    s.write(
        "config",
        "state-file",
        b"status:\n  team-a: suspended\n  team-b: active\nrevoked_keys:\n- kid_0123456789ab\n- kid_7965799baa91\n",
    );
    s.write("config", "state-file-empty", b"{}\n");
    s.write(
        "config",
        "anchors",
        b"providers: &p\n  openai: {kind: openai, credentials: {production: openai/production}}\nteams: {a: {monthly_budget_usd: 1.5e3}}\nx: *p\n",
    );
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
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

fn request_headers(headers: &[(&str, &str)], end_of_stream: bool) -> ProcessingRequest {
    let mut fields = HashMap::new();
    fields.insert(
        "source.address".to_string(),
        Value {
            kind: Some(Kind::StringValue("10.1.2.3:40000".into())),
        },
    );
    let mut attributes = HashMap::new();
    attributes.insert("envoy.filters.http.ext_proc".to_string(), Struct { fields });
    ProcessingRequest {
        request: Some(In::RequestHeaders(HttpHeaders {
            headers: Some(header_map(headers)),
            end_of_stream,
            ..Default::default()
        })),
        attributes,
        ..Default::default()
    }
}

fn request_body(body: &[u8]) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(In::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn response_headers(headers: &[(&str, &str)], end_of_stream: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(In::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(headers)),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn response_body(body: &[u8], end_of_stream: bool) -> Vec<ProcessingRequest> {
    let pieces = if end_of_stream && body.len() > 64 {
        // Envoy streams a body in pieces; the last one ends the stream.
        let third = body.len() / 3;
        vec![&body[..third], &body[third..2 * third], &body[2 * third..]]
    } else {
        vec![body]
    };
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| ProcessingRequest {
            request: Some(In::ResponseBody(HttpBody {
                body: piece.to_vec(),
                end_of_stream: end_of_stream && i == last,
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect()
}

fn session(messages: Vec<ProcessingRequest>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        m.encode_length_delimited(&mut out).expect("encode");
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn exchange(
    method: &str,
    path: &str,
    credential: (&str, &str),
    request: &[u8],
    status: &str,
    content_type: &str,
    encoding: Option<&str>,
    response: &[u8],
) -> Vec<u8> {
    let length = request.len().to_string();
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.example.com"),
        credential,
        ("content-type", "application/json"),
    ];
    if !request.is_empty() {
        headers.push(("content-length", &length));
    }
    let mut messages = vec![request_headers(&headers, request.is_empty())];
    if !request.is_empty() {
        messages.push(request_body(request));
    }
    let response_length = response.len().to_string();
    let mut upstream = vec![(":status", status), ("content-type", content_type)];
    if let Some(encoding) = encoding {
        upstream.push(("content-encoding", encoding));
    }
    if !content_type.starts_with("text/event-stream") {
        upstream.push(("content-length", &response_length));
    }
    messages.push(response_headers(&upstream, response.is_empty()));
    if !response.is_empty() {
        messages.extend(response_body(response, true));
    }
    session(messages)
}

fn ext_proc(s: &Seeds) {
    let bearer = format!("Bearer {OPENAI_KEY}");
    let openai = ("authorization", bearer.as_str());
    let chat = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let chat_stream =
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let json = "application/json";
    let sse = "text/event-stream; charset=utf-8";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "openai-chat",
            exchange("POST", "/v1/chat/completions", openai, chat, "200", json, None, &s.fixture("mock_openai_chat.json")),
        ),
        (
            "openai-chat-gzip",
            exchange("POST", "/v1/chat/completions", openai, chat, "200", json, Some("gzip"), &s.fixture("mock_openai_chat.json.gz")),
        ),
        (
            "openai-chat-stream",
            exchange("POST", "/v1/chat/completions?x=1", openai, chat_stream, "200", sse, None, &s.fixture("mock_openai_chat_stream_usage.sse")),
        ),
        (
            "openai-chat-stream-br",
            exchange("POST", "/v1/chat/completions", openai, chat_stream, "200", sse, Some("br"), &br(&s.fixture("mock_openai_chat_stream_interrupted.sse"))),
        ),
        (
            "openai-responses-stream",
            exchange("POST", "/v1/responses", openai, br#"{"model":"gpt-4.1","input":"hi","stream":true}"#, "200", sse, None, &s.fixture("mock_openai_responses_stream.sse")),
        ),
        (
            "openai-embeddings",
            exchange("POST", "/v1/embeddings", openai, br#"{"model":"text-embedding-3-small","input":["abcd"]}"#, "200", json, None, &s.fixture("mock_openai_embeddings.json")),
        ),
        (
            "openai-error",
            exchange("POST", "/v1/chat/completions", openai, chat, "429", json, None, br#"{"error":{"message":"slow down","type":"rate_limit"}}"#),
        ),
        (
            "openai-models",
            exchange("GET", "/v1/models", openai, b"", "200", json, None, br#"{"data":[]}"#),
        ),
        (
            "anthropic-stream",
            exchange("POST", "/v1/messages", ("x-api-key", ANTHROPIC_KEY), br#"{"model":"claude-opus-4-20250514","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#, "200", sse, None, &s.fixture("mock_anthropic_stream.sse")),
        ),
        (
            "anthropic-message-deflate",
            exchange("POST", "/v1/messages", ("x-api-key", ANTHROPIC_KEY), br#"{"model":"claude-opus-4-20250514","max_tokens":64,"messages":[]}"#, "200", json, Some("deflate"), &zlib(&s.fixture("mock_anthropic_message.json"))),
        ),
        (
            "azure-chat-stream",
            exchange("POST", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", ("api-key", AZURE_KEY), chat_stream, "200", sse, None, &s.fixture("azure_chat_stream.sse")),
        ),
        (
            "cohere-v2-stream",
            exchange("POST", "/v2/chat", ("authorization", &format!("bearer {COHERE_KEY}")), br#"{"model":"command-r","stream":true,"messages":[{"role":"user","content":"hi"}]}"#, "200", sse, None, &s.fixture("cohere_v2_stream.sse")),
        ),
        (
            "cohere-v1",
            exchange("POST", "/v1/chat", ("authorization", &format!("Bearer {COHERE_KEY}")), br#"{"message":"abcd","chat_history":[{"role":"USER","message":"abcd"}]}"#, "200", json, None, &s.fixture("cohere_v1_chat.json")),
        ),
        (
            "generic",
            exchange("PUT", "/anything/at/all", ("authorization", &format!("Bearer {GENERIC_KEY}")), b"payload", "204", "text/plain", None, b""),
        ),
        (
            "denied-suspended",
            exchange("POST", "/v1/chat/completions", ("authorization", &format!("Bearer {SUSPENDED_KEY}")), chat, "200", json, None, b"{}"),
        ),
        (
            "denied-sensitive",
            exchange("POST", "/v1/files", openai, b"x", "200", json, None, b"{}"),
        ),
        (
            "denied-traversal",
            exchange("POST", "/v1/chat/completions/../files", openai, chat, "200", json, None, b"{}"),
        ),
        (
            "denied-ambiguous",
            session(vec![request_headers(&[(":method", "POST"), (":path", "/v1/messages"), ("authorization", &bearer), ("x-api-key", ANTHROPIC_KEY), ("anthropic-version", "2023-06-01")], true)]),
        ),
        (
            "denied-no-key",
            session(vec![request_headers(&[(":method", "GET"), (":path", "/v1/models")], true)]),
        ),
        (
            "denied-too-large",
            session(vec![request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), ("authorization", &bearer), ("content-length", "99999999")], false)]),
        ),
        (
            "trailers",
            session(vec![
                ProcessingRequest { request: Some(In::RequestTrailers(Default::default())), ..Default::default() },
                ProcessingRequest { request: Some(In::ResponseTrailers(Default::default())), ..Default::default() },
            ]),
        ),
    ];
    for (name, bytes) in cases {
        s.write("ext_proc", name, &bytes);
    }
}

fn check_request(method: &str, path: &str, headers: &[(&str, &str)], raw: bool) -> Vec<u8> {
    let mut http = HttpRequest {
        method: method.into(),
        path: path.into(),
        host: "api.example.com".into(),
        ..Default::default()
    };
    if raw {
        http.header_map = Some(header_map(headers));
    } else {
        http.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: "10.1.2.3".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(AuthRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

fn ext_authz(s: &Seeds) {
    let bearer = format!("Bearer {OPENAI_KEY}");
    let cases = [
        (
            "allow-raw",
            check_request(
                "POST",
                "/v1/chat/completions",
                &[("authorization", &bearer), ("content-length", "42")],
                true,
            ),
        ),
        (
            "allow-legacy",
            check_request(
                "GET",
                "/v1/models?limit=2",
                &[
                    ("authorization", &bearer),
                    ("x-keygate-provider", "spoofed"),
                ],
                false,
            ),
        ),
        (
            "anthropic",
            check_request(
                "POST",
                "/v1/messages",
                &[
                    ("x-api-key", ANTHROPIC_KEY),
                    ("anthropic-version", "2023-06-01"),
                ],
                true,
            ),
        ),
        (
            "azure",
            check_request(
                "POST",
                "/openai/deployments/x/embeddings",
                &[("api-key", AZURE_KEY)],
                true,
            ),
        ),
        (
            "denied-sensitive",
            check_request(
                "GET",
                "/v1/fine_tuning/jobs",
                &[("authorization", &bearer)],
                true,
            ),
        ),
        (
            "denied-suspended",
            check_request(
                "GET",
                "/v1/models",
                &[("authorization", &format!("Bearer {SUSPENDED_KEY}"))],
                false,
            ),
        ),
        (
            "denied-typo",
            check_request(
                "GET",
                "/v1/models",
                &[(
                    "authorization",
                    "Bearer kg_live_FuzzOpenAIKey00000000000000000_2EN2wm",
                )],
                true,
            ),
        ),
        (
            "denied-no-key",
            check_request("GET", "/v1/models", &[], true),
        ),
        ("no-http", CheckRequest::default().encode_to_vec()),
    ];
    for (name, bytes) in cases {
        s.write("ext_authz", name, &bytes);
    }
}

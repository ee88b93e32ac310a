//! The exchange after an allow, driven directly: how response bodies reach keygate, what is
//! charged when a response has no usage, and that response bytes are counted once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::sync::Arc;
use std::time::SystemTime;

use keygate::accounting::{Accounting, Ledger};
use keygate::auth::{key, KeyEnv, KeyHash};
use keygate::gate::Gate;
use keygate::limits::Limiter;
use keygate::pipeline::{
    Admission, BodyPlan, Exchange, Phases, Pipeline, MAX_ENVOY_BUFFERED, MAX_PARSED_BODY,
};
use keygate::request::{Header, RequestView};
use keygate::secrets::CredentialCache;
use keygate::usage::PriceTable;

const CONFIG: &str = r#"
credentials: {source: file, path: secrets.yaml}
providers:
  openai: {kind: openai, credentials: {production: openai/production}}
consumers:
  - name: team-a
    environment: production
    provider: openai
    keys: [{hash: "HASH"}]
    scope: {routes: ["POST /v1/**"]}
"#;

const PRICE: &str =
    "{provider: openai, model: gpt-test, input_per_mtok_usd: 1.0, output_per_mtok_usd: 2.0}";

struct Setup {
    key: String,
    accounting: Arc<Accounting>,
    pipeline: Pipeline,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let key = key::reveal(&key::generate(KeyEnv::Live).unwrap()).to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "openai/production: {api_key: sk-x}\n",
    )
    .unwrap();
    let config = CONFIG.replace("HASH", &KeyHash::of(&key).to_string());
    std::fs::write(dir.path().join("keygate.yaml"), config).unwrap();
    let cache = CredentialCache::new();
    let registry = block(keygate::reload::prepare(
        &dir.path().join("keygate.yaml"),
        &cache,
        false,
    ))
    .unwrap()
    .registry;
    let gate = Arc::new(Gate::new(registry, Arc::new(cache)));
    let prices = PriceTable::defaults()
        .with_overrides(&[serde_yaml::from_str(PRICE).unwrap()])
        .unwrap();
    let ledger = Arc::new(Ledger::in_memory());
    let accounting = Arc::new(Accounting::new(prices, ledger.clone()));
    let limiter = Arc::new(Limiter::new(ledger));
    let pipeline = Pipeline::new(gate, limiter, accounting.clone(), None);
    Setup {
        key,
        accounting,
        pipeline,
        _dir: dir,
    }
}

fn block<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

impl Setup {
    /// An exchange admitted by the pipeline, its request body read.
    fn exchange(&self, path: &str, request: &str) -> Exchange {
        let bearer = format!("Bearer {}", self.key);
        let view = RequestView {
            method: "POST",
            path,
            headers: vec![Header {
                name: "authorization",
                value: bearer.as_bytes(),
            }],
            peer: None,
            header_count: 0,
            body_len: None,
            peer_identity: None,
            body: None,
        };
        let admitted = match block(
            self.pipeline
                .admit(&view, Phases::Full { body_follows: true }),
        ) {
            Admission::Allowed(a) => a,
            Admission::Denied(d, _) => panic!("denied: {d:?}"),
        };
        assert!(admitted.read_body, "an LLM POST's body is read");
        let mut exchange = admitted.exchange.expect("ext_proc has an exchange");
        block(exchange.request_body(request.as_bytes())).expect("reserved");
        exchange
    }

    fn spent(&self) -> u64 {
        self.accounting
            .ledger
            .month_to_date("team-a", SystemTime::now())
    }
}

const CHAT: &str = r#"{"model":"gpt-test","max_tokens":50,"messages":[{"role":"user","content":"0123456789abcdef0123456789abcdef"}]}"#;

fn chat_response(usage: bool) -> String {
    let usage = if usage {
        r#","usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}"#
    } else {
        ""
    };
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-test","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}]{usage}}}"#,
        "x".repeat(4000)
    )
}

#[test]
fn small_sized_json_is_buffered_and_large_or_unsized_json_is_streamed() {
    let s = setup();
    let plan = |status: u16, media: &str, length: Option<u64>| {
        s.exchange("/v1/chat/completions", CHAT)
            .response_headers(status, Some(media), None, length)
    };
    let json = "application/json";
    assert_eq!(plan(200, json, Some(1_000)), BodyPlan::Buffered);
    assert_eq!(
        plan(200, json, Some(MAX_ENVOY_BUFFERED)),
        BodyPlan::Buffered
    );
    assert_eq!(
        plan(200, json, Some(MAX_ENVOY_BUFFERED + 1)),
        BodyPlan::Streamed
    );
    assert_eq!(plan(200, json, Some(5 << 20)), BodyPlan::Streamed);
    assert_eq!(plan(200, json, None), BodyPlan::Streamed);
    assert_eq!(plan(200, "text/event-stream", None), BodyPlan::Streamed);
    assert_eq!(plan(200, "text/html", Some(10)), BodyPlan::Skip);
    assert_eq!(plan(429, json, Some(80)), BodyPlan::Skip);
}

#[test]
fn a_streamed_json_body_is_assembled_and_charged_its_exact_usage() {
    let s = setup();
    let body = chat_response(true);
    let mut exchange = s.exchange("/v1/chat/completions", CHAT);
    let plan = exchange.response_headers(200, Some("application/json"), None, None);
    assert_eq!(plan, BodyPlan::Streamed);
    let (a, rest) = body.as_bytes().split_at(1500);
    let (b, c) = rest.split_at(1500);
    exchange.response_body(a, false);
    exchange.response_body(b, false);
    exchange.response_body(c, false);
    assert_eq!(
        s.spent(),
        0,
        "nothing is charged before the end of the body"
    );
    exchange.response_body(&[], true);
    // 1,000 input × $1/M + 500 output × $2/M = 2,000 micro-dollars.
    assert_eq!(s.spent(), 2_000);
}

#[test]
fn a_generation_without_usage_is_charged_an_estimate_other_endpoints_nothing() {
    let s = setup();
    let body = chat_response(false);
    let mut exchange = s.exchange("/v1/chat/completions", CHAT);
    exchange.response_headers(200, Some("application/json"), None, Some(body.len() as u64));
    exchange.response_body(body.as_bytes(), true);
    // Input: the request's prompt estimate (32 bytes of text → 8 tokens) at $1/M; output:
    // body bytes / 4, capped at max_tokens (50) at $2/M.
    assert_eq!(s.spent(), 8 + 50 * 2);

    let before = s.spent();
    let mut exchange = s.exchange("/v1/moderations", r#"{"model":"gpt-test","input":"hi"}"#);
    exchange.response_headers(200, Some("application/json"), None, Some(20));
    exchange.response_body(br#"{"id":"modr-1"}"#, true);
    assert_eq!(
        s.spent(),
        before,
        "an endpoint that bills no tokens is not charged"
    );
}

#[test]
fn response_bytes_are_counted_once_whether_measured_or_skipped() {
    let s = setup();
    let body = chat_response(true);
    {
        let mut buffered = s.exchange("/v1/chat/completions", CHAT);
        buffered.response_headers(200, Some("application/json"), None, Some(body.len() as u64));
        buffered.response_body(body.as_bytes(), true);
        // The same body in three chunks: each is counted (through one counter handle).
        let mut chunked = s.exchange("/v1/chat/completions", CHAT);
        chunked.response_headers(200, Some("application/json"), None, None);
        let (head, rest) = body.as_bytes().split_at(body.len() / 3);
        let (middle, tail) = rest.split_at(rest.len() / 2);
        chunked.response_body(head, false);
        chunked.response_body(middle, false);
        chunked.response_body(tail, true);
        let mut skipped = s.exchange("/v1/chat/completions", CHAT);
        let plan = skipped.response_headers(500, Some("application/json"), None, Some(123));
        assert_eq!(plan, BodyPlan::Skip);
        drop(skipped);
    }
    let text = s.accounting.render_meters();
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("keygate_response_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 2 * body.len() as u64 + 123, "{text}");
}

#[test]
fn a_body_too_large_to_read_is_charged_the_worst_case() {
    let s = setup();
    let mut exchange = s.exchange("/v1/chat/completions", CHAT);
    let plan = exchange.response_headers(200, Some("application/json"), None, None);
    assert_eq!(plan, BodyPlan::Streamed);
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..=(MAX_PARSED_BODY >> 20) {
        exchange.response_body(&chunk, false);
    }
    exchange.response_body(&chat_response(true).into_bytes(), true);
    // Not the 2,000 of the usage at the end: the body was not read, so it is charged the most
    // the request could have cost, as its reservation held: every byte of its body as an input
    // token at $1/M and its max_tokens (50) at $2/M.
    assert_eq!(s.spent(), CHAT.len() as u64 + 50 * 2);
}

#[test]
fn a_compressed_answer_without_usage_is_estimated_from_its_decoded_size() {
    use std::io::Write;
    let s = setup();
    let request = r#"{"model":"gpt-test","messages":[{"role":"user","content":"0123456789abcdef0123456789abcdef"}]}"#;
    let plain = chat_response(false);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(plain.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    assert!(
        compressed.len() * 10 < plain.len(),
        "the body compresses well"
    );
    let mut exchange = s.exchange("/v1/chat/completions", request);
    exchange.response_headers(
        200,
        Some("application/json"),
        Some("gzip"),
        Some(compressed.len() as u64),
    );
    exchange.response_body(&compressed, true);
    // 8 input tokens at $1/M, and ceil(decoded bytes / 4) output tokens at $2/M (no
    // max_tokens to cap them).
    let output = (plain.len() as u64).div_ceil(4);
    assert_eq!(s.spent(), 8 + 2 * output);
}

#[test]
fn the_json_assembled_at_once_is_bounded_across_exchanges_and_given_back() {
    let s = setup();
    s.pipeline.configure(keygate::pipeline::Settings {
        max_assembled_bytes: 5_000,
        ..keygate::pipeline::Settings::default()
    });
    let body = chat_response(true);
    let (head, tail) = body.as_bytes().split_at(3_000);
    let mut first = s.exchange("/v1/chat/completions", CHAT);
    let mut second = s.exchange("/v1/chat/completions", CHAT);
    for exchange in [&mut first, &mut second] {
        assert_eq!(
            exchange.response_headers(200, Some("application/json"), None, None),
            BodyPlan::Streamed
        );
        exchange.response_body(head, false);
    }
    assert_eq!(
        s.pipeline.assembling(),
        3_000,
        "the second body did not fit beside the first and was let go"
    );
    first.response_body(tail, true);
    second.response_body(tail, true);
    // The first is read: its usage, 2,000 micro-dollars. The second was not: the most its
    // request could cost, its body's bytes as input tokens at $1/M and 50 output at $2/M.
    assert_eq!(s.spent(), 2_000 + CHAT.len() as u64 + 50 * 2);
    assert_eq!(
        s.pipeline.assembling(),
        0,
        "every byte of the bound given back"
    );
}

#[test]
fn a_parked_exchange_is_claimed_once_by_its_ticket_or_settled_when_it_expires() {
    let s = setup();
    let handover = s.pipeline.handover();
    let ticket = handover.ticket();
    assert_ne!(ticket, handover.ticket(), "tickets are unique");
    handover.park(ticket, s.exchange("/v1/chat/completions", CHAT));
    assert!(
        handover.claim(ticket + 1_000_000).is_none(),
        "another ticket"
    );
    let mut exchange = handover.claim(ticket).expect("parked under its ticket");
    assert!(handover.claim(ticket).is_none(), "claimed once");
    exchange.response_headers(200, Some("application/json"), None, None);
    exchange.response_body(chat_response(true).as_bytes(), true);
    assert_eq!(s.spent(), 1000 + 2 * 500, "charged its exact usage");

    // Nobody claims the next one: it waits, then is settled on its estimate.
    let ticket = handover.ticket();
    handover.park(ticket, s.exchange("/v1/chat/completions", CHAT));
    assert_eq!(handover.expire(std::time::Duration::from_secs(60)), 0);
    assert_eq!(handover.len(), 1);
    assert_eq!(handover.expire(std::time::Duration::ZERO), 1);
    assert!(handover.is_empty() && handover.claim(ticket).is_none());
    // Its worst case, as its reservation held: every body byte an input token at $1/M and
    // its max_tokens (50) at $2/M; the provider may have served it.
    assert_eq!(s.spent(), 2000 + CHAT.len() as u64 + 50 * 2);
}

#[test]
fn past_its_capacity_an_exchange_is_charged_its_worst_case_at_once() {
    let s = setup();
    let handover = keygate::pipeline::Handover::with_capacity(1);
    handover.park(handover.ticket(), s.exchange("/v1/chat/completions", CHAT));
    assert_eq!(s.spent(), 0, "the first one waits for its response");
    let ticket = handover.ticket();
    handover.park(ticket, s.exchange("/v1/chat/completions", CHAT));
    assert_eq!(handover.len(), 1);
    assert!(
        handover.claim(ticket).is_none(),
        "the second was not parked"
    );
    assert_eq!(
        s.spent(),
        CHAT.len() as u64 + 50 * 2,
        "and was charged its worst case"
    );
}

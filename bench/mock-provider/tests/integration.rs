//! End-to-end tests against the real `mock-provider` binary: JSON
//! endpoints, errors, gzip, recording, latency and shutdown.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{chat_body, gunzip, Server, CHAT_PROMPT_TOKENS};

#[test]
fn chat_completion_json() {
    let server = Server::start(&[]);
    let reply = server.post_json(
        "/v1/chat/completions",
        &[
            ("x-mock-cached-tokens", "4"),
            ("x-mock-reasoning-tokens", "2"),
        ],
        &chat_body(false, json!({"max_completion_tokens": 5})),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("x-request-id").is_some());
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "lorem ipsum dolor sit amet"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], CHAT_PROMPT_TOKENS);
    assert_eq!(u["completion_tokens"], 5);
    assert_eq!(u["total_tokens"], CHAT_PROMPT_TOKENS + 5);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 2);
}

#[test]
fn anthropic_json_and_errors() {
    let server = Server::start(&[]);
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100,
        "messages": [{"role": "user", "content": "one two"}]});
    let v = server.post_json("/v1/messages", &[], &body).json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["usage"]["input_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 16);

    let r = server.post_json("/v1/messages", &[("x-mock-status", "529")], &body);
    assert_eq!(r.status, 529);
    let e = r.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "overloaded_error");
    assert!(e["error"]["message"].is_string());

    let r = server.request("POST", "/v1/messages", &[], "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn openai_errors() {
    let server = Server::start(&[]);
    let r = server.post_json(
        "/v1/chat/completions",
        &[("x-mock-status", "429")],
        &chat_body(true, json!({})),
    );
    assert_eq!(r.status, 429);
    let e = r.json();
    assert_eq!(e["error"]["type"], "requests");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert!(e["error"]["param"].is_null());
    assert!(e["error"]["message"].is_string());

    let r = server.request("POST", "/v1/chat/completions", &[], "[");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = server.request("GET", "/v2/nothing?x=1", &[], "");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
}

#[test]
fn gzip_only_for_json() {
    let server = Server::start(&[]);
    let gz = [("accept-encoding", "gzip, deflate")];
    let r = server.post_json("/v1/chat/completions", &gz, &chat_body(false, json!({})));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let v: Value = serde_json::from_slice(&gunzip(&r.body)).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], CHAT_PROMPT_TOKENS);

    let r = server.post_json("/v1/chat/completions", &gz, &chat_body(true, json!({})));
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));

    let r = server.post_json("/v1/chat/completions", &[], &chat_body(false, json!({})));
    assert_eq!(r.header("content-encoding"), None);
}

#[test]
fn records_duplicate_headers_and_bodies() {
    let server = Server::start(&["--record-limit", "2"]);
    let body = chat_body(false, json!({}));
    server.post_json(
        "/v1/chat/completions?trace=1",
        &[("x-dup", "first"), ("x-dup", "second"), ("x-other", "o")],
        &body,
    );
    let list = server.request("GET", "/__mock/requests", &[], "").json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "control requests are not recorded");
    let rec = &list[0];
    assert_eq!(rec["method"], "POST");
    assert_eq!(rec["path"], "/v1/chat/completions?trace=1");
    assert_eq!(rec["body_len"], body.to_string().len());
    assert_eq!(rec["body"], body.to_string());
    let dups: Vec<&Value> = rec["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-dup")
        .collect();
    assert_eq!(
        dups,
        vec![&json!(["x-dup", "first"]), &json!(["x-dup", "second"])]
    );

    // The limit drops the oldest entries.
    for path in ["/v1/a", "/v1/b"] {
        server.request("GET", path, &[], "");
    }
    let list = server.request("GET", "/__mock/requests", &[], "").json();
    let paths: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["/v1/a", "/v1/b"]);

    let r = server.request("DELETE", "/__mock/requests", &[], "");
    assert_eq!(r.status, 200);
    let list = server.request("GET", "/__mock/requests", &[], "").json();
    assert_eq!(list, json!([]));
    let health = server.request("GET", "/__mock/health", &[], "");
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
}

#[test]
fn no_record_flag() {
    let server = Server::start(&["--no-record"]);
    server.request("GET", "/v1/models", &[], "");
    let list = server.request("GET", "/__mock/requests", &[], "").json();
    assert_eq!(list, json!([]));
}

#[test]
fn latency_and_chunk_delay() {
    let server = Server::start(&["--latency-ms", "150"]);
    let start = Instant::now();
    server.request("GET", "/v1/models", &[], "");
    assert!(start.elapsed() >= Duration::from_millis(150));

    let start = Instant::now();
    server.request("GET", "/v1/models", &[("x-mock-latency-ms", "0")], "");
    assert!(start.elapsed() < Duration::from_millis(150));

    let start = Instant::now();
    let r = server.post_json(
        "/v1/chat/completions",
        &[("x-mock-latency-ms", "0"), ("x-mock-chunk-delay-ms", "20")],
        &chat_body(true, json!({"max_tokens": 4})),
    );
    // 7 frames => 6 gaps of 20 ms.
    assert_eq!(r.sse_data().len(), 7);
    assert!(start.elapsed() >= Duration::from_millis(120));
}

#[test]
fn other_openai_endpoints() {
    let server = Server::start(&[]);
    let v = server
        .post_json(
            "/v1/embeddings",
            &[],
            &json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}),
        )
        .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let v = server
        .post_json(
            "/v1/completions",
            &[],
            &json!({"model": "m", "prompt": "x y", "max_tokens": 2}),
        )
        .json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "lorem ipsum");
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let v = server
        .post_json(
            "/v1/responses",
            &[("x-mock-cached-tokens", "1")],
            &json!({"model": "gpt-4.1-mini", "input": "hi there", "max_output_tokens": 3}),
        )
        .json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "lorem ipsum dolor");
    assert_eq!(v["usage"]["input_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 8);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 1);

    let r = server.post_json(
        "/v1/responses",
        &[],
        &json!({"model": "m", "input": "hi", "stream": true, "max_output_tokens": 2}),
    );
    let events = r.sse_events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "response.completed");
    let done: Value = serde_json::from_str(data).unwrap();
    assert_eq!(done["response"]["usage"]["output_tokens"], 2);
    assert_eq!(done["sequence_number"], events.len() - 1);

    let v = server.request("GET", "/v1/models", &[], "").json();
    assert_eq!(v["object"], "list");
    assert!(v["data"][0]["id"].is_string());
    let v = server
        .request(
            "GET",
            "/v1/models",
            &[("anthropic-version", "2023-06-01")],
            "",
        )
        .json();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}

#[test]
fn large_body_accepted() {
    let server = Server::start(&[]);
    let big = "word ".repeat(4 * 1024 * 1024); // 20 MiB of content
    let body = json!({"model": "m", "messages": [{"role": "user", "content": big}]});
    let r = server.post_json("/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["prompt_tokens"], 4 * 1024 * 1024 + 3);
}

#[test]
fn exits_cleanly_on_sigterm() {
    let mut server = Server::start(&[]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

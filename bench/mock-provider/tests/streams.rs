//! End-to-end tests of the SSE endpoints against the real binary.

mod support;

use serde_json::{json, Value};
use support::{chat_body, Server, CHAT_PROMPT_TOKENS};

#[test]
fn chat_stream_without_include_usage() {
    let server = Server::start(&[]);
    let reply = server.post_json("/v1/chat/completions", &[], &chat_body(true, json!({})));
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(reply.complete);
    let data = reply.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // role chunk + 16 words + finish chunk.
    assert_eq!(chunks.len(), 18);
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c.get("usage").is_none(), "usage must be absent: {c}");
        if let Some(s) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(s);
        }
    }
    assert_eq!(text.split_whitespace().count(), 16);
    assert_eq!(chunks[17]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn chat_stream_with_include_usage() {
    let server = Server::start(&[]);
    let body = chat_body(
        true,
        json!({"max_tokens": 3, "stream_options": {"include_usage": true}}),
    );
    let reply = server.post_json("/v1/chat/completions", &[], &body);
    assert!(reply.complete);
    let data = reply.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // role + 3 words + finish + usage chunk.
    assert_eq!(chunks.len(), 6);
    for c in &chunks[..5] {
        assert_eq!(c.get("usage"), Some(&Value::Null));
    }
    let last = &chunks[5];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], CHAT_PROMPT_TOKENS);
    assert_eq!(last["usage"]["completion_tokens"], 3);
    assert_eq!(last["usage"]["total_tokens"], CHAT_PROMPT_TOKENS + 3);
}

#[test]
fn anthropic_stream() {
    let server = Server::start(&[]);
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 4,
        "stream": true,
        "system": "you are terse",
        "messages": [{"role": "user", "content": "hello there"}]
    });
    let reply = server.post_json(
        "/v1/messages",
        &[
            ("anthropic-version", "2023-06-01"),
            ("x-mock-cached-tokens", "7"),
            ("x-mock-cache-creation-tokens", "2"),
        ],
        &body,
    );
    assert_eq!(reply.status, 200);
    assert!(reply.complete);
    assert!(reply.header("request-id").is_some());
    let events = reply.sse_events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 4]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let payloads: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for ((name, _), p) in events.iter().zip(&payloads) {
        assert_eq!(p["type"], name.as_str());
    }
    let start_usage = &payloads[0]["message"]["usage"];
    assert_eq!(start_usage["input_tokens"], (3 + 3) + (2 + 3));
    assert_eq!(start_usage["cache_read_input_tokens"], 7);
    assert_eq!(start_usage["cache_creation_input_tokens"], 2);
    assert_eq!(start_usage["output_tokens"], 1);
    let text: String = payloads[3..7]
        .iter()
        .map(|p| p["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "lorem ipsum dolor sit");
    assert_eq!(payloads[8]["delta"]["stop_reason"], "end_turn");
    assert_eq!(payloads[8]["usage"]["output_tokens"], 4);
}

#[test]
fn interrupt_truncates_stream() {
    let server = Server::start(&[]);
    let r = server.post_json(
        "/v1/chat/completions",
        &[("x-mock-interrupt-after", "3")],
        &chat_body(true, json!({})),
    );
    assert_eq!(r.status, 200);
    assert!(!r.complete, "stream must not be terminated cleanly");
    let data = r.sse_data();
    assert_eq!(data.len(), 3);
    assert!(!data.iter().any(|d| d == "[DONE]"));

    let body = json!({"model": "c", "max_tokens": 8, "stream": true,
        "messages": [{"role": "user", "content": "x"}]});
    let r = server.post_json("/v1/messages", &[("x-mock-interrupt-after", "4")], &body);
    assert!(!r.complete);
    assert_eq!(r.sse_events().len(), 4);
}

//! End-to-end tests of the Azure OpenAI deployment paths against the real binary:
//! `/openai/deployments/{deployment}/{chat/completions,completions,embeddings}` answer exactly
//! like their `/v1/...` counterparts, whatever the `api-version` query says.

mod support;

use serde_json::{json, Value};
use support::{chat_body, Server, CHAT_PROMPT_TOKENS};

const CHAT: &str = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";

#[test]
fn azure_chat_completion_json() {
    let server = Server::start(&[]);
    let reply = server.post_json(
        CHAT,
        &[("x-mock-cached-tokens", "3")],
        &chat_body(false, json!({"model": "my-gpt4o", "max_tokens": 4})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("x-request-id").is_some());
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "my-gpt4o");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "lorem ipsum dolor sit"
    );
    assert_eq!(v["usage"]["prompt_tokens"], CHAT_PROMPT_TOKENS);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    // Recorded with the path and query as sent.
    let recorded = server.request("GET", "/__mock/requests", &[], "").json();
    assert_eq!(recorded[0]["path"], CHAT);
}

#[test]
fn azure_chat_completion_stream_matches_openai() {
    let server = Server::start(&[]);
    let body = chat_body(
        true,
        json!({"max_tokens": 3, "stream_options": {"include_usage": true}}),
    );
    let azure = server.post_json(
        "/openai/deployments/d/chat/completions?api-version=2025-01-01-preview",
        &[],
        &body,
    );
    let openai = server.post_json("/v1/chat/completions", &[], &body);
    assert_eq!(azure.status, 200);
    assert!(azure
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(azure.complete);
    let shape = |reply: &support::Reply| -> Vec<Value> {
        let data = reply.sse_data();
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        data[..data.len() - 1]
            .iter()
            .map(|d| {
                let mut chunk: Value = serde_json::from_str(d).unwrap();
                // Ids and timestamps differ between two responses.
                chunk.as_object_mut().unwrap().remove("id");
                chunk.as_object_mut().unwrap().remove("created");
                chunk
            })
            .collect()
    };
    let chunks = shape(&azure);
    assert_eq!(chunks, shape(&openai));
    // role + 3 words + finish + usage chunk.
    assert_eq!(chunks.len(), 6);
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks[5]["usage"]["prompt_tokens"], CHAT_PROMPT_TOKENS);
}

#[test]
fn azure_completions_and_embeddings() {
    let server = Server::start(&[]);
    let v = server
        .post_json(
            "/openai/deployments/emb/embeddings?api-version=2024-10-21",
            &[],
            &json!({"input": ["a b", "c"]}),
        )
        .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let v = server
        .post_json(
            "/openai/deployments/instruct/completions",
            &[],
            &json!({"prompt": "x y", "max_tokens": 2}),
        )
        .json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "lorem ipsum");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
}

#[test]
fn azure_unknown_paths_and_methods() {
    let server = Server::start(&[]);
    for path in [
        "/openai/deployments//chat/completions",
        "/openai/deployments/d/chat/completions/extra",
        "/openai/deployments/d/files",
        "/openai/deployments/d",
        "/openai/files",
        "/openai/fine_tuning/jobs",
    ] {
        let r = server.post_json(path, &[], &json!({}));
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unknown_url", "{path}");
    }
    let r = server.request("GET", CHAT, &[], "");
    assert_eq!(r.status, 405);
}

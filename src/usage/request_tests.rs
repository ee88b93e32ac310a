use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn ensure(body: &str) -> Option<String> {
    ensure_include_usage(body.as_bytes())
        .unwrap()
        .map(|b| String::from_utf8(b).unwrap())
}

/// Applies the change and checks it is exactly "include_usage became true".
fn check(body: &str) -> String {
    let out = ensure(body).expect("a change");
    let mut before: Value = serde_json::from_str(body).unwrap();
    let after: Value = serde_json::from_str(&out).unwrap();
    let options = before
        .as_object_mut()
        .unwrap()
        .entry("stream_options")
        .or_insert(json!({}));
    if options.is_null() {
        *options = json!({});
    }
    options["include_usage"] = json!(true);
    assert_eq!(after, before, "{out}");
    assert_eq!(ensure(&out), None, "idempotent");
    out
}

#[test]
fn adds_stream_options_when_missing() {
    let out =
        check(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    assert_eq!(
        out,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#
    );
}

#[test]
fn keeps_other_stream_options_and_formatting() {
    let body = "{\n  \"stream\": true,\n  \"seed\": 12345678901234567890123,\n  \"temperature\": 0.10000000000000001,\n  \"stream_options\": {\"include_obfuscation\": false},\n  \"prompt\": \"x\"\n}";
    let out = check(body);
    assert!(out.contains("12345678901234567890123"));
    assert!(out.contains("0.10000000000000001"));
    assert!(out.contains(r#"{"include_obfuscation": false,"include_usage":true}"#));
}

#[test]
fn flips_false_and_fills_null_or_empty_options() {
    let out =
        check(r#"{"messages":[],"stream":true,"stream_options":{"include_usage":false,"x":1}}"#);
    assert!(out.contains(r#"{"include_usage":true,"x":1}"#));
    check(r#"{"messages":[],"stream":true,"stream_options":null}"#);
    check(r#"{"messages":[],"stream":true,"stream_options":{ }}"#);
    // The last duplicate is what providers read, so that one is changed.
    let dup = r#"{"messages":[],"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}"#;
    let out = ensure(dup).unwrap();
    assert!(out.ends_with(r#""stream_options":{"include_usage":true}}"#));
}

#[test]
fn leaves_alone_what_needs_no_change() {
    for body in [
        r#"{"messages":[],"stream":false}"#,
        r#"{"messages":[]}"#,
        r#"{"messages":[],"stream":"true"}"#,
        r#"{"messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        r#"{"input":"hi","stream":true}"#,
        r#"{"messages":[],"stream":true,"stream_options":"yes"}"#,
        r#"[1,2]"#,
    ] {
        assert_eq!(ensure(body), None, "{body}");
    }
    assert!(matches!(
        ensure_include_usage(b"{\"stream\":tru"),
        Err(UsageError::InvalidJson(_))
    ));
}

#[test]
fn bodies_that_are_not_utf8_are_not_json() {
    // The fuzz target's input (request_body corpus: regression-non-utf8-key): an invalid
    // UTF-8 key inside the `include_usage` value used to pass validation, and the splice
    // replaced it, so a body keygate reads as non-JSON went upstream rewritten.
    let body = b"{\"stream\":true,\"stream_options\":{\"include_usage\":{\"incl\x98\x98\":false}},\"prompt\":\"abc\"}";
    assert!(serde_json::from_slice::<Value>(body).is_err());
    assert!(matches!(
        ensure_include_usage(body),
        Err(UsageError::InvalidJson(_))
    ));
    assert!(!request_estimate(Dialect::OpenAi, body).stream);
    // Non-ASCII UTF-8 is fine.
    assert!(ensure(r#"{"stream":true,"prompt":"héllo ✓"}"#).is_some());
}

#[test]
fn estimates_openai_chat() {
    let body = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "max_completion_tokens": 300,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
            ]},
            {"role": "tool", "tool_call_id": "c", "content": "42"}
        ]
    });
    let e = request_estimate(Dialect::OpenAi, body.to_string().as_bytes());
    let bytes = "Be brief.".len() + "What is in this image?".len() + "{\"a\":1}".len() + 2;
    assert_eq!(e.prompt_tokens_estimate, (bytes as u64).div_ceil(4));
    assert_eq!(e.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(e.max_output_tokens, Some(300));
    assert!(e.stream);
}

#[test]
fn estimates_anthropic_with_system_and_tool_results() {
    let body = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "and tomorrow?"}
        ]}]
    });
    let e = request_estimate(Dialect::Anthropic, body.to_string().as_bytes());
    assert_eq!(e.prompt_tokens_estimate, (14u64 + 5 + 13).div_ceil(4));
    assert_eq!(e.max_output_tokens, Some(1024));
    assert!(!e.stream);
}

#[test]
fn estimates_embeddings_responses_legacy_and_cohere() {
    let e = request_estimate(
        Dialect::OpenAi,
        br#"{"model":"text-embedding-3-small","input":["abcd","efgh"]}"#,
    );
    assert_eq!(e.prompt_tokens_estimate, 2);
    let e = request_estimate(Dialect::OpenAi, br#"{"prompt":[[1,2,3],[4]]}"#);
    assert_eq!(e.prompt_tokens_estimate, 4);
    let e = request_estimate(
        Dialect::OpenAi,
        br#"{"model":"o3","instructions":"abcd","input":[{"role":"user","content":[{"type":"input_text","text":"abcdefgh"}]},{"type":"function_call_output","call_id":"c","output":"abcd"}],"max_output_tokens":9}"#,
    );
    assert_eq!(
        (e.prompt_tokens_estimate, e.max_output_tokens),
        (4, Some(9))
    );
    let e = request_estimate(
        Dialect::Cohere,
        br#"{"message":"abcd","preamble":"abcd","chat_history":[{"role":"USER","message":"abcd"}]}"#,
    );
    assert_eq!(e.prompt_tokens_estimate, 3);
}

#[test]
fn estimate_of_non_json_uses_length() {
    let e = request_estimate(Dialect::OpenAi, b"not json at all");
    assert_eq!(e.prompt_tokens_estimate, 4);
    assert_eq!(e.model, None);
    assert_eq!(
        request_estimate(Dialect::OpenAi, b"").prompt_tokens_estimate,
        1
    );
    assert_eq!(
        request_estimate(Dialect::OpenAi, b"{}").prompt_tokens_estimate,
        1
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z\"\\\\ ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "stream|stream_options|include_usage|messages|prompt|x",
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn ensure_never_panics_and_yields_valid_json(value in arb_json(), pretty in any::<bool>()) {
        let body = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
        let body = body.unwrap();
        if let Some(out) = ensure_include_usage(body.as_bytes()).unwrap() {
            let after: Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(&after["stream_options"]["include_usage"], &json!(true));
            prop_assert_eq!(ensure_include_usage(&out).unwrap(), None);
        }
    }

    #[test]
    fn request_helpers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ensure_include_usage(&bytes);
        prop_assert!(request_estimate(Dialect::OpenAi, &bytes).prompt_tokens_estimate >= 1);
    }
}

#[test]
fn an_output_cap_is_written_only_where_none_is_named() {
    let add = |body: &str| {
        ensure_output_cap(body.as_bytes(), "max_completion_tokens", 1024)
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    };
    assert_eq!(
        add(r#"{"model":"gpt-4o","messages":[]}"#).as_deref(),
        Some(r#"{"model":"gpt-4o","messages":[],"max_completion_tokens":1024}"#)
    );
    assert_eq!(
        add("{}").as_deref(),
        Some(r#"{"max_completion_tokens":1024}"#)
    );
    for named in [
        r#"{"model":"m","max_tokens":5}"#,
        r#"{"model":"m","max_completion_tokens":5}"#,
        r#"{"model":"m","max_output_tokens":5}"#,
    ] {
        assert_eq!(add(named), None, "{named}");
    }
    assert_eq!(add("[1,2]"), None);
    assert!(ensure_output_cap(b"not json", "max_tokens", 1).is_err());
    let written = add(r#"{ "model" : "m" , "messages": [ ] }"#).unwrap();
    let v: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(v["max_completion_tokens"], 1024);
}

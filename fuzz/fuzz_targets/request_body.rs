//! Request bodies: the stream splice that forces `stream_options.include_usage` and the
//! prompt-size estimate taken before the response. Byte 0 picks the dialect; the rest is the
//! body a client sent.
#![no_main]

use keygate::usage::{ensure_include_usage, request_estimate, Dialect, MAX_MODEL_CHARS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let dialect = match selector % 3 {
        0 => Dialect::OpenAi,
        1 => Dialect::Anthropic,
        _ => Dialect::Cohere,
    };

    let estimate = request_estimate(dialect, body);
    assert!(estimate.prompt_tokens_estimate >= 1);
    if let Some(model) = &estimate.model {
        assert!(!model.is_empty() && model.chars().count() <= MAX_MODEL_CHARS);
    }

    let splice = ensure_include_usage(body);
    if std::str::from_utf8(body).is_err() {
        // JSON is UTF-8; a body that is not is never edited.
        assert!(splice.is_err());
    }
    let Ok(Some(spliced)) = splice else {
        return;
    };
    // A rewritten body is JSON whenever the original was, asks for usage, and keeps every
    // other member as sent; splicing it again changes nothing.
    let original = serde_json::from_slice::<Value>(body);
    let rewritten = serde_json::from_slice::<Value>(&spliced);
    if let Ok(Value::Object(before)) = original {
        // Both request readers agree on what they read.
        assert_eq!(request_estimate(dialect, &spliced).stream, estimate.stream);
        let Ok(Value::Object(after)) = rewritten else {
            panic!(
                "splice broke the JSON: {:?} -> {:?}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&spliced)
            );
        };
        assert_eq!(
            after
                .get("stream_options")
                .and_then(|o| o.get("include_usage")),
            Some(&Value::Bool(true)),
            "{:?}",
            String::from_utf8_lossy(&spliced)
        );
        for (key, value) in &before {
            if key != "stream_options" {
                assert_eq!(after.get(key), Some(value), "member {key:?} changed");
            }
        }
        for key in after.keys() {
            assert!(key == "stream_options" || before.contains_key(key));
        }
        if let Some(Value::Object(options)) = before.get("stream_options") {
            for (key, value) in options {
                if key != "include_usage" {
                    assert_eq!(after["stream_options"].get(key), Some(value));
                }
            }
        }
    }
    assert!(matches!(ensure_include_usage(&spliced), Ok(None)));
});

//! OpenAI endpoints: chat completions, legacy completions, embeddings, models.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::inject::Inject;
use crate::response::{self, model_of, new_id, unix_now, wants_stream, Flavor};
use crate::sse::{self, Pacing};
use crate::text;
use crate::usage::{self, Tokens};

/// Number of floats in every embedding vector.
pub const EMBEDDING_DIMS: usize = 8;

/// Model ids listed by `GET /v1/models`.
pub const MODELS: [&str; 5] = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o3-mini",
    "text-embedding-3-small",
];

const FINGERPRINT: &str = "fp_mock";

/// Generation always ends naturally (see [`usage::output_tokens`]).
const FINISH_REASON: &str = "stop";

fn include_usage(body: &Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn pacing(inject: &Inject) -> Pacing {
    Pacing {
        chunk_delay: inject.chunk_delay(),
        interrupt_after: inject.interrupt_after,
    }
}

/// `POST /v1/chat/completions`.
pub fn chat_completions(body: &Map<String, Value>, inject: &Inject) -> Response<Body> {
    let model = model_of(body);
    let input = usage::messages_tokens(body.get("messages"));
    let output = usage::output_tokens(
        body,
        &["max_completion_tokens", "max_tokens"],
        inject.output_tokens,
    );
    let tokens = Tokens::new(input, output, inject);
    let finish = FINISH_REASON;
    let id = new_id("chatcmpl-");
    let created = unix_now();

    if !wants_stream(body) {
        let value = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text::completion(output),
                    "refusal": null,
                    "annotations": []
                },
                "logprobs": null,
                "finish_reason": finish
            }],
            "usage": usage::openai_usage(&tokens),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT
        });
        return response::json(StatusCode::OK, &value, inject.gzip);
    }

    let with_usage = include_usage(body);
    let chunk = |choices: Value| -> Bytes {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices
        });
        if with_usage {
            c["usage"] = Value::Null;
        }
        sse::data_frame(&c)
    };
    let choice = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);

    let pieces = text::pieces(output);
    let mut frames = Vec::with_capacity(pieces.len() + 4);
    frames.push(chunk(choice(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )));
    for piece in pieces {
        frames.push(chunk(choice(json!({ "content": piece }), Value::Null)));
    }
    frames.push(chunk(choice(json!({}), json!(finish))));
    if with_usage {
        frames.push(sse::data_frame(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage::openai_usage(&tokens)
        })));
    }
    frames.push(sse::done_frame());
    sse::response(frames, pacing(inject))
}

/// `POST /v1/completions` (legacy text completion).
pub fn completions(body: &Map<String, Value>, inject: &Inject) -> Response<Body> {
    let model = model_of(body);
    let input = usage::text_input_tokens(body.get("prompt"));
    let output = usage::output_tokens(body, &["max_tokens"], inject.output_tokens);
    let tokens = Tokens::new(input, output, inject);
    let finish = FINISH_REASON;
    let id = new_id("cmpl-");
    let created = unix_now();
    let envelope = |choices: Value| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices
        })
    };
    let choice = |text: &str, finish: Value| json!([{ "text": text, "index": 0, "logprobs": null, "finish_reason": finish }]);

    if !wants_stream(body) {
        let mut value = envelope(choice(&text::completion(output), json!(finish)));
        value["usage"] = usage::openai_usage(&tokens);
        return response::json(StatusCode::OK, &value, inject.gzip);
    }

    let with_usage = include_usage(body);
    let frame = |choices: Value| {
        let mut c = envelope(choices);
        if with_usage {
            c["usage"] = Value::Null;
        }
        sse::data_frame(&c)
    };
    let mut frames: Vec<Bytes> = text::pieces(output)
        .iter()
        .map(|p| frame(choice(p, Value::Null)))
        .collect();
    frames.push(frame(choice("", json!(finish))));
    if with_usage {
        let mut last = envelope(json!([]));
        last["usage"] = usage::openai_usage(&tokens);
        frames.push(sse::data_frame(&last));
    }
    frames.push(sse::done_frame());
    sse::response(frames, pacing(inject))
}

/// `POST /v1/embeddings`.
pub fn embeddings(body: &Map<String, Value>, inject: &Inject) -> Response<Body> {
    let inputs: Vec<&Value> = match body.get("input") {
        Some(v @ Value::String(_)) => vec![v],
        // A flat list of token ids is a single pre-tokenised input.
        Some(v @ Value::Array(items)) if items.first().is_some_and(Value::is_number) => vec![v],
        Some(Value::Array(items)) if !items.is_empty() => items.iter().collect(),
        _ => {
            return response::error(
                Flavor::OpenAi,
                StatusCode::BAD_REQUEST,
                "'input' is a required property and must be a string or a non-empty array",
                inject.gzip,
            )
        }
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(&input.to_string());
            let embedding = if base64 {
                json!(encode_base64(&vector))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let input_tokens = usage::text_input_tokens(body.get("input"));
    let value = json!({
        "object": "list",
        "data": data,
        "model": model_of(body),
        "usage": usage::embeddings_usage(input_tokens)
    });
    response::json(StatusCode::OK, &value, inject.gzip)
}

/// Deterministic unit-length vector derived from the input text.
pub fn embedding_vector(input: &str) -> Vec<f32> {
    // FNV-1a over the input, then an LCG to spread it over the dimensions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let raw: Vec<f32> = (0..EMBEDDING_DIMS)
        .map(|_| {
            h = h
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        raw.iter().map(|x| x / norm).collect()
    } else {
        raw
    }
}

/// Little-endian f32 bytes, base64 encoded (`encoding_format: "base64"`).
pub fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn model_object(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-provider" })
}

/// `GET /v1/models`.
pub fn list_models(inject: &Inject) -> Response<Body> {
    let data: Vec<Value> = MODELS.iter().map(|id| model_object(id)).collect();
    response::json(
        StatusCode::OK,
        &json!({ "object": "list", "data": data }),
        inject.gzip,
    )
}

/// `GET /v1/models/{id}`: any id is reported as existing.
pub fn retrieve_model(id: &str, inject: &Inject) -> Response<Body> {
    response::json(StatusCode::OK, &model_object(id), inject.gzip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_is_deterministic_unit_vector() {
        let a = embedding_vector("\"hello\"");
        let b = embedding_vector("\"hello\"");
        let c = embedding_vector("\"world\"");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), EMBEDDING_DIMS);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let s = encode_base64(&[1.0, -2.0]);
        let raw = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(raw.len(), 8);
        assert_eq!(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]), 1.0);
        assert_eq!(f32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]), -2.0);
    }

    #[test]
    fn include_usage_flag() {
        let on = json!({"stream_options": {"include_usage": true}});
        let off = json!({"stream_options": {"include_usage": false}});
        assert!(include_usage(on.as_object().unwrap()));
        assert!(!include_usage(off.as_object().unwrap()));
        assert!(!include_usage(&Map::new()));
    }
}

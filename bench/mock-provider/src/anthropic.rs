//! Anthropic endpoints: messages (plain and streaming), token counting, models.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::inject::Inject;
use crate::response::{self, model_of, new_id, wants_stream};
use crate::sse::{self, Pacing};
use crate::text;
use crate::usage::{self, Tokens};

/// Model ids listed by `GET /v1/models` for Anthropic clients.
pub const MODELS: [(&str, &str); 3] = [
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-opus-4-1", "Claude Opus 4.1"),
];

/// Input tokens of a messages request: `messages` plus `system`.
pub fn input_tokens(body: &Map<String, Value>) -> u64 {
    usage::messages_tokens(body.get("messages")) + usage::system_tokens(body.get("system"))
}

/// Generation always ends naturally (see [`usage::output_tokens`]).
const STOP_REASON: &str = "end_turn";

/// `POST /v1/messages`.
pub fn messages(body: &Map<String, Value>, inject: &Inject) -> Response<Body> {
    let model = model_of(body);
    let output = usage::output_tokens(body, &["max_tokens"], inject.output_tokens);
    let tokens = Tokens::new(input_tokens(body), output, inject);
    let id = new_id("msg_");

    if !wants_stream(body) {
        let value = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{ "type": "text", "text": text::completion(output) }],
            "stop_reason": STOP_REASON,
            "stop_sequence": null,
            "usage": usage::anthropic_usage(&tokens, output)
        });
        return response::json(StatusCode::OK, &value, inject.gzip);
    }

    let pieces = text::pieces(output);
    let mut frames = Vec::with_capacity(pieces.len() + 6);
    frames.push(sse::event_frame(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage::anthropic_usage(&tokens, 1)
            }
        }),
    ));
    frames.push(sse::event_frame(
        "content_block_start",
        &json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": { "type": "text", "text": "" }
        }),
    ));
    frames.push(sse::event_frame("ping", &json!({ "type": "ping" })));
    for piece in pieces {
        frames.push(sse::event_frame(
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": { "type": "text_delta", "text": piece }
            }),
        ));
    }
    frames.push(sse::event_frame(
        "content_block_stop",
        &json!({ "type": "content_block_stop", "index": 0 }),
    ));
    frames.push(sse::event_frame(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": STOP_REASON, "stop_sequence": null },
            "usage": { "output_tokens": output }
        }),
    ));
    frames.push(sse::event_frame(
        "message_stop",
        &json!({ "type": "message_stop" }),
    ));
    sse::response(
        frames,
        Pacing {
            chunk_delay: inject.chunk_delay(),
            interrupt_after: inject.interrupt_after,
        },
    )
}

/// `POST /v1/messages/count_tokens`.
pub fn count_tokens(body: &Map<String, Value>, inject: &Inject) -> Response<Body> {
    response::json(
        StatusCode::OK,
        &json!({ "input_tokens": input_tokens(body) }),
        inject.gzip,
    )
}

/// `GET /v1/models` in Anthropic's shape (chosen when the request carries
/// `anthropic-version`).
pub fn list_models(inject: &Inject) -> Response<Body> {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name)| {
            json!({
                "type": "model",
                "id": id,
                "display_name": name,
                "created_at": "2025-01-01T00:00:00Z"
            })
        })
        .collect();
    let value = json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS.first().map(|m| m.0),
        "last_id": MODELS.last().map(|m| m.0)
    });
    response::json(StatusCode::OK, &value, inject.gzip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_counts_system_as_a_message() {
        let body = json!({
            "system": "be terse",
            "messages": [
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}
            ]
        });
        let body = body.as_object().unwrap();
        assert_eq!(input_tokens(body), (2 + 3) + (2 + 3) + (1 + 3));
    }
}

//! OpenAI Responses API: `POST /v1/responses`, plain and streaming.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::inject::Inject;
use crate::response::{self, model_of, new_id, unix_now, wants_stream};
use crate::sse::{self, Pacing};
use crate::text;
use crate::usage::{self, Tokens};

/// Input tokens: `input` plus `instructions`.
pub fn input_tokens(body: &Map<String, Value>) -> u64 {
    usage::responses_input_tokens(body.get("input"))
        + usage::system_tokens(body.get("instructions"))
}

/// The assistant message output item.
fn message_item(item_id: &str, status: &str, content: Value) -> Value {
    json!({
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content
    })
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

/// The response object; `output`/`usage` vary between stream phases.
fn response_object(
    body: &Map<String, Value>,
    id: &str,
    created: u64,
    status: &str,
    output: Value,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "model": model_of(body),
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": body.get("previous_response_id").cloned().unwrap_or(Value::Null),
        "reasoning": { "effort": null, "summary": null },
        "service_tier": "default",
        "store": body.get("store").and_then(Value::as_bool).unwrap_or(true),
        "temperature": 1.0,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({}))
    })
}

/// `POST /v1/responses`. Generation always completes (`status: completed`).
pub fn create(body: &Map<String, Value>, inject: &Inject) -> Response<Body> {
    let output = usage::output_tokens(body, &["max_output_tokens"], inject.output_tokens);
    let tokens = Tokens::new(input_tokens(body), output, inject);
    let id = new_id("resp_");
    let item_id = new_id("msg_");
    let created = unix_now();
    let full_text = text::completion(output);
    let done_item = message_item(&item_id, "completed", json!([text_part(&full_text)]));
    let final_usage = usage::responses_usage(&tokens);

    if !wants_stream(body) {
        let value = response_object(
            body,
            &id,
            created,
            "completed",
            json!([done_item]),
            final_usage,
        );
        return response::json(StatusCode::OK, &value, inject.gzip);
    }

    let in_progress = response_object(body, &id, created, "in_progress", json!([]), Value::Null);
    let mut events: Vec<(&str, Value)> = vec![
        ("response.created", json!({ "response": in_progress })),
        ("response.in_progress", json!({ "response": in_progress })),
        (
            "response.output_item.added",
            json!({
                "output_index": 0,
                "item": message_item(&item_id, "in_progress", json!([]))
            }),
        ),
        (
            "response.content_part.added",
            json!({
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": text_part("")
            }),
        ),
    ];
    for piece in text::pieces(output) {
        events.push((
            "response.output_text.delta",
            json!({
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": []
            }),
        ));
    }
    events.push((
        "response.output_text.done",
        json!({
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "text": full_text,
            "logprobs": []
        }),
    ));
    events.push((
        "response.content_part.done",
        json!({
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": text_part(&full_text)
        }),
    ));
    events.push((
        "response.output_item.done",
        json!({ "output_index": 0, "item": done_item }),
    ));
    let completed = response_object(
        body,
        &id,
        created,
        "completed",
        json!([done_item]),
        final_usage,
    );
    events.push(("response.completed", json!({ "response": completed })));

    let frames = events
        .into_iter()
        .enumerate()
        .map(|(seq, (name, mut payload))| {
            payload["type"] = json!(name);
            payload["sequence_number"] = json!(seq);
            sse::event_frame(name, &payload)
        })
        .collect();
    sse::response(
        frames,
        Pacing {
            chunk_delay: inject.chunk_delay(),
            interrupt_after: inject.interrupt_after,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_counts_instructions() {
        let body = json!({"instructions": "be nice", "input": "tell me a joke"});
        assert_eq!(input_tokens(body.as_object().unwrap()), (2 + 3) + (4 + 3));
    }
}

//! The Responses API server-sent events codex 0.169.0 understands.
//!
//! A successful response is `response.created`, then for each output item
//! `response.output_item.added` / (`response.output_text.delta`) /
//! `response.output_item.done`, then `response.completed {id, usage}`.
//! Codex takes the item from `.done`; the delta only drives streaming UIs.

use serde_json::{json, Value};

/// Token counts reported by every completed response. Codex reports usage
/// cumulatively over a thread, so tests can predict `turn.completed` usage.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 10;

/// Encodes events as an SSE body (`event:` line plus `data:` line each).
pub(crate) fn encode(events: &[Value]) -> String {
    events
        .iter()
        .map(|event| {
            format!(
                "event: {}\ndata: {event}\n\n",
                event["type"].as_str().unwrap_or("")
            )
        })
        .collect()
}

pub(crate) fn created(response_id: &str) -> Value {
    json!({"type": "response.created", "response": {"id": response_id}})
}

pub(crate) fn completed(response_id: &str) -> Value {
    json!({
        "type": "response.completed",
        "response": {
            "id": response_id,
            "usage": {
                "input_tokens": INPUT_TOKENS,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": OUTPUT_TOKENS,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
            }
        }
    })
}

pub(crate) fn failed(response_id: &str, message: &str) -> Value {
    json!({
        "type": "response.failed",
        "response": {
            "id": response_id,
            "status": "failed",
            "error": {"code": "server_error", "message": message}
        }
    })
}

/// The events of one output item, added and done.
pub(crate) fn item(item: Value) -> Vec<Value> {
    let mut events =
        vec![json!({"type": "response.output_item.added", "output_index": 0, "item": item})];
    if item["type"] == "message" {
        let text = &item["content"][0]["text"];
        events.push(json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": text}));
    }
    events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    events
}

pub(crate) fn message(id: &str, text: &str) -> Value {
    json!({
        "type": "message",
        "role": "assistant",
        "id": id,
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
    })
}

/// A call of a tool inside a namespace (`mcp__<server>`), as gpt-5.5 emits
/// for MCP tools. `arguments` is a JSON string on the wire.
pub(crate) fn function_call(call_id: &str, namespace: &str, name: &str, args: &Value) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{call_id}"),
        "call_id": call_id,
        "namespace": namespace,
        "name": name,
        "arguments": args.to_string(),
    })
}

/// A client-executed tool search: codex answers it with a `tool_search_output`
/// input item that reveals the matching (deferred) MCP tools.
pub(crate) fn tool_search_call(call_id: &str, query: &str) -> Value {
    json!({
        "type": "tool_search_call",
        "id": format!("ts_{call_id}"),
        "call_id": call_id,
        "execution": "client",
        "status": "completed",
        "arguments": {"query": query},
    })
}

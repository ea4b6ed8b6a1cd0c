//! Tool definitions shared by the HTTP and stdio MCP probes.
//!
//! The read-only annotation matters: codex exec runs with approval policy
//! `never`, so under a read-only or workspace-write sandbox it only runs MCP
//! tools annotated `readOnlyHint` (or explicitly approved in config.toml).
//! `write_note` deliberately lacks it, to test that approval path.

use std::{sync::Arc, time::Duration};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(object) => Arc::new(object),
        _ => unreachable!("schemas are objects"),
    }
}

fn no_args() -> Arc<JsonObject> {
    schema(json!({"type": "object", "properties": {}}))
}

pub(crate) fn read_only(tool: Tool) -> Tool {
    tool.annotate(ToolAnnotations::new().read_only(true))
}

pub(crate) fn whoami() -> Tool {
    read_only(Tool::new(
        "whoami",
        "Returns the HTTP headers and _meta of this tools/call request.",
        no_args(),
    ))
}

pub(crate) fn write_note() -> Tool {
    let args = json!({
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"]
    });
    Tool::new(
        "write_note",
        "Stores a note (a mutating tool).",
        schema(args),
    )
}

pub(crate) fn echo() -> Tool {
    let args = json!({"type": "object", "properties": {"text": {"type": "string"}}});
    read_only(Tool::new(
        "echo",
        "Returns its text argument.",
        schema(args),
    ))
}

pub(crate) fn slow() -> Tool {
    let args = json!({"type": "object", "properties": {"seconds": {"type": "number"}}});
    read_only(Tool::new(
        "slow",
        "Sleeps for `seconds` (default 30) before answering; for cancel tests.",
        schema(args),
    ))
}

/// Sleeps as `slow` asks, or until the client cancels the request.
pub(crate) async fn run_slow(args: &JsonObject, cancelled: CancellationToken) -> CallToolResult {
    let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(30.0);
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))) => text(format!("slept {seconds} s")),
        () = cancelled.cancelled() => text("cancelled".to_owned()),
    }
}

/// The `text` argument, or "".
pub(crate) fn text_arg(args: &JsonObject) -> &str {
    args.get("text").and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn text(text: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

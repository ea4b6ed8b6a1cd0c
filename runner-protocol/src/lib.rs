//! Wire types of the codex-runner protocol.
//!
//! codex-runner reads newline-delimited JSON requests on stdin and writes
//! newline-delimited JSON output lines on stdout. This crate holds the types of
//! both directions, the machine-readable error codes, and the validation a
//! request goes through before any process is spawned, so that a Rust
//! orchestrator can build and parse lines without pulling in an async runtime.
//!
//! # Requests (stdin)
//!
//! ```json
//! {"type":"run","id":"r1","params":{"input":{"content":[{"type":"text","text":"hi"}]}}}
//! {"type":"cancel","id":"r1"}
//! ```
//!
//! [`decode_request`] turns one line into a [`Request`], or into a
//! [`Rejection`] when the line cannot be attributed to a run (malformed JSON,
//! no usable id, unknown `type`). A `run` line whose id is usable but whose
//! params are invalid decodes to [`Request::Run`] carrying the
//! [`InvalidParams`] error: the protocol answers that with the run's own
//! `end` line. A client writes its lines with [`RequestLine`].
//!
//! # Output (stdout)
//!
//! ```json
//! {"type":"event","id":"r1","event":{"type":"thread.started","thread_id":"..."}}
//! {"type":"end","id":"r1","status":"ok","thread_id":"...","usage":{...},"exit_code":0,"duration_ms":412}
//! {"type":"rejected","code":"malformed_json","error":"...","line":7}
//! ```
//!
//! See [`output`] for every line and [`codes`] for the error codes. The
//! `event` of an `event` line is codex's own; [`events`] types it.
//!
//! With the `schema` feature every type derives `schemars::JsonSchema`; the
//! generated schemas are checked in under `docs/schema/`.
#![warn(missing_docs)]

pub mod codes;
mod decode;
mod encode;
pub mod events;
pub mod output;
mod params;
pub mod status;
mod strict;
mod validate;

pub use decode::{decode_request, Rejection, Request};
pub use encode::RequestLine;
pub use events::{ItemDetails, ThreadEvent, ThreadItem};
pub use output::{DiagLevel, End, EndStatus, OutputLine, Rejected, StderrLine};
pub use params::{
    ApprovalPolicy, ContentPart, Effort, Input, InputContent, McpServer, RunParams, SandboxMode,
    ToolsApproval,
};
pub use validate::{seconds_text, tool_namespace, InvalidParams, MAX_RUN_ID_BYTES, MAX_SECONDS};

//! Output lines: what the daemon writes.
//!
//! stdout carries only [`OutputLine`]s, one JSON object per line with `type`
//! first. stderr carries [`StderrLine`]s (`diag`, `fatal`) between free-form
//! log lines, which clients ignore.
//!
//! Compatibility: fields are only ever added, never removed or renamed, and
//! clients must ignore fields they do not know.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stdout line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputLine {
    /// One event line of the run's codex child, exactly as codex printed it.
    ///
    /// The daemon forwards codex's bytes untouched (codex prints `web_search`
    /// items with a duplicate `id` key; a [`Value`] keeps the last one).
    Event {
        /// The run id.
        id: String,
        /// The codex `ThreadEvent`.
        event: Value,
    },
    /// The last line of every accepted run.
    End(End),
    /// A request line that could not be attributed to a run. It never ends a
    /// run: it carries no `id` field (see [`Rejected::request_id`]).
    Rejected(Rejected),
    /// The answer to a `status` request.
    Status(crate::status::StatusReport),
}

/// `{"type":"end",...}`: exactly one per accepted run, after all its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct End {
    /// The run id.
    pub id: String,
    /// `ok` only if codex exited 0, printed no `turn.failed`, and every JSON
    /// line it printed was read and forwarded (none over
    /// `--max-event-bytes`). A line that is not JSON is dropped with a
    /// `diag` warning and does not by itself fail the run.
    pub status: EndStatus,
    /// One-line reason, when `status` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Machine-readable reason, one of the `END_*` codes, when `status` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The codex thread id, once `thread.started` was seen (or the resumed id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The `usage` of the last `turn.completed` (cumulative over the thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Codex's exit code, if it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended codex, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Milliseconds from the turn's start (when it left the queue: its
    /// home, then codex's spawn) to its end; absent for runs that never
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Milliseconds the run waited in the queue before it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
}

/// `status` of an [`End`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// The turn completed.
    Ok,
    /// The turn failed, was refused, cancelled or timed out.
    Error,
}

/// `{"type":"rejected",...}`: the answer to a line that names no run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Rejected {
    /// One of the `REJECT_*` codes.
    pub code: String,
    /// What was wrong.
    pub error: String,
    /// 1-based number of the offending line on stdin.
    pub line: u64,
    /// The id the line carried, if any. Deliberately not named `id`: a
    /// rejected duplicate must not be mistaken for the live run's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One structured stderr line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StderrLine {
    /// A diagnostic about one run (child stderr, dropped output lines).
    Diag {
        /// The run id.
        id: String,
        /// `info`, `warn` or `error`.
        level: DiagLevel,
        /// The message.
        message: String,
    },
    /// The daemon cannot go on; every stream should be failed.
    Fatal {
        /// Why.
        message: String,
    },
}

/// Level of a [`StderrLine::Diag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum DiagLevel {
    Info,
    Warn,
    Error,
}

impl End {
    /// A failed end with `code` and `error` and nothing else known.
    pub fn error(id: impl Into<String>, code: &str, error: impl Into<String>) -> Self {
        End {
            id: id.into(),
            status: EndStatus::Error,
            error: Some(error.into()),
            code: Some(code.to_owned()),
            thread_id: None,
            usage: None,
            exit_code: None,
            signal: None,
            duration_ms: None,
            queued_ms: None,
        }
    }
}

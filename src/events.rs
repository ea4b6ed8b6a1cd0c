//! What a turn learns from codex's event lines, and how its `end` is decided.
//!
//! Each line is parsed once, into a borrowed peek of the few top-level fields
//! we need; the rest (including `item`, where codex prints a duplicate `id`
//! key for `web_search`) is only validated and skipped, and the line is
//! forwarded as the exact bytes codex printed.

use std::borrow::Cow;
use std::process::ExitStatus;
use std::time::Duration;

use runner_protocol::{codes, End, EndStatus};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::diag::{one_line, Redactor};
use crate::turn::StopReason;

/// What to do with one stdout line.
#[derive(Debug, PartialEq, Eq)]
pub enum EventPeek {
    /// A JSON object: forward it. Carries the thread id if this line is the
    /// first `thread.started`.
    Event {
        /// Newly announced thread id.
        thread_started: Option<String>,
    },
    /// Not a JSON object: report, do not forward.
    NotJson,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thread_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    error: Option<ErrorPeek>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorPeek {
    message: Option<String>,
}

/// The state of one turn, built from its lines.
#[derive(Debug, Default)]
pub struct TurnState {
    thread_id: Option<String>,
    usage: Option<Box<RawValue>>,
    turn_failed: Option<String>,
    last_error: Option<String>,
    non_json_lines: u64,
    too_long: Option<usize>,
    io_error: Option<String>,
}

impl TurnState {
    /// Looks at one line (without its newline).
    pub fn observe(&mut self, line: &[u8]) -> EventPeek {
        // serde would read a JSON array into a struct positionally.
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            self.non_json_lines += 1;
            return EventPeek::NotJson;
        }
        let peek: Peek = match serde_json::from_slice(line) {
            Ok(peek) => peek,
            Err(_) => {
                // Valid JSON with an unexpected shape at top level (say, a
                // duplicate `type`) is still an event: forward it untouched.
                if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
                    return EventPeek::Event {
                        thread_started: None,
                    };
                }
                self.non_json_lines += 1;
                return EventPeek::NotJson;
            }
        };
        let mut thread_started = None;
        match peek.kind.as_deref() {
            Some("thread.started") => {
                if let (None, Some(thread)) = (&self.thread_id, peek.thread_id) {
                    self.thread_id = Some(thread.clone().into_owned());
                    thread_started = Some(thread.into_owned());
                }
            }
            Some("turn.completed") => {
                if let Some(usage) = peek.usage {
                    self.usage = Some(usage.to_owned());
                }
            }
            Some("turn.failed") => {
                self.turn_failed = Some(
                    peek.error
                        .and_then(|e| e.message)
                        .unwrap_or_else(|| "turn failed (no message)".to_owned()),
                );
            }
            Some("error") => self.last_error = peek.message,
            _ => {}
        }
        EventPeek::Event { thread_started }
    }

    /// Records a line over the size limit.
    pub fn too_long(&mut self, len: usize) {
        self.too_long.get_or_insert(len);
    }

    /// Records a failure reading codex's output.
    pub fn io_error(&mut self, error: String) {
        self.io_error.get_or_insert(error);
    }

    /// Decides the `end`. Precedence: a stop we caused, then what codex said
    /// (`turn.failed`), then how it exited, then our own output limits.
    pub fn into_end(
        self,
        id: &str,
        exit: ExitStatus,
        stop: Option<StopReason>,
        timed_out: Option<Duration>,
        stderr_tail: &[String],
        redactor: &Redactor,
    ) -> End {
        use std::os::unix::process::ExitStatusExt;
        let exit_code = exit.code();
        let signal = exit.signal();
        let usage = self
            .usage
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok());
        let base = End {
            id: id.to_owned(),
            status: EndStatus::Ok,
            error: None,
            code: None,
            thread_id: self.thread_id.clone(),
            usage,
            exit_code,
            signal,
            duration_ms: None,
            queued_ms: None,
        };
        let fail = |code: &str, error: String| End {
            status: EndStatus::Error,
            code: Some(code.to_owned()),
            error: Some(redactor.redact(&one_line(&error))),
            ..base.clone()
        };
        if let Some(reason) = stop {
            return match reason {
                StopReason::Cancelled => fail(codes::END_CANCELLED, "cancelled by request".into()),
                StopReason::Shutdown | StopReason::ShutdownNow => fail(
                    codes::END_SHUTDOWN,
                    "cancelled: the runner is shutting down".into(),
                ),
            };
        }
        if let Some(after) = timed_out {
            return fail(
                codes::END_TIMEOUT,
                format!("timed out after {}", humanize(after)),
            );
        }
        if let Some(message) = &self.turn_failed {
            return fail(codes::END_TURN_FAILED, message.clone());
        }
        if !exit.success() {
            let how = match (exit_code, signal) {
                (Some(code), _) => format!("codex exited with status {code}"),
                (None, Some(sig)) => format!("codex was killed by signal {sig}"),
                (None, None) => "codex exited abnormally".to_owned(),
            };
            let why = self
                .last_error
                .clone()
                .or_else(|| stderr_summary(stderr_tail));
            let mut error = match why {
                Some(why) => format!("{how}: {why}"),
                None => how,
            };
            if self.non_json_lines > 0 {
                error.push_str(&format!(
                    " ({} non-JSON stdout lines dropped)",
                    self.non_json_lines
                ));
            }
            return fail(codes::END_CODEX_EXITED, error);
        }
        if let Some(len) = self.too_long {
            return fail(
                codes::END_PROTOCOL_ERROR,
                format!("codex printed a {len}-byte line, over the event size limit; it was not forwarded"),
            );
        }
        if let Some(error) = &self.io_error {
            return fail(
                codes::END_IO_ERROR,
                format!("reading codex output failed: {error}"),
            );
        }
        base
    }
}

/// Why codex failed, from its stderr: its own last `Error…` line when it
/// printed one (codex ends with `Error: <reason>` after log lines that can
/// be kilobytes long), else the last few lines, each cut short.
fn stderr_summary(tail: &[String]) -> Option<String> {
    let lines: Vec<&str> = tail
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(error) = lines.iter().rev().find(|l| l.starts_with("Error")) {
        return Some((*error).to_owned());
    }
    let start = lines.len().saturating_sub(3);
    let cut = |line: &&str| -> String {
        match line.char_indices().nth(STDERR_LINE_CHARS) {
            Some((at, _)) => format!("{}…", &line[..at]),
            None => (*line).to_owned(),
        }
    };
    (!lines.is_empty()).then(|| {
        lines[start..]
            .iter()
            .map(cut)
            .collect::<Vec<_>>()
            .join(" | ")
    })
}

/// Longest piece of one stderr line in an error message.
const STDERR_LINE_CHARS: usize = 400;

fn humanize(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{secs:.3}s")
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;

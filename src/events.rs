//! What a turn learns from codex's event lines, and how its `end` is decided.
//!
//! Each line is forwarded as the exact bytes codex printed, once we know it
//! is a JSON object. Most lines (`item.*`, `turn.started`) need nothing more:
//! a single-pass scanner ([`scan`]) validates them exactly as serde_json
//! would and finds their top-level `type`, without building anything. The few
//! lines a turn learns from (`thread.started`, `turn.completed`,
//! `turn.failed`, `error`), and anything the scanner is unsure of (escaped
//! top-level keys, nesting deeper than 128), are parsed once into a borrowed
//! peek of the top-level fields we need; the rest (including `item`, where
//! codex prints a duplicate `id` key for `web_search`) is only validated and
//! skipped.

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
    wait_error: Option<String>,
}

impl TurnState {
    /// Looks at one line (without its newline).
    pub fn observe(&mut self, line: &[u8]) -> EventPeek {
        // serde would read a JSON array into a struct positionally.
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            self.non_json_lines += 1;
            return EventPeek::NotJson;
        }
        // JSON text is UTF-8 (RFC 8259), and so is our stdout: a line that
        // is not is not forwarded. Codex's lines always are; the scanner
        // notes any byte above ASCII, so only such lines are checked again.
        let utf8 = |non_ascii: bool| !non_ascii || std::str::from_utf8(line).is_ok();
        match scan::object(line) {
            scan::Scan::Valid { kind, non_ascii } if utf8(non_ascii) => {
                if !kind.is_some_and(is_learned_from) {
                    return EventPeek::Event {
                        thread_started: None,
                    };
                }
            }
            // An odd line: the full peek below.
            scan::Scan::Unsure if utf8(true) => {}
            _ => {
                self.non_json_lines += 1;
                return EventPeek::NotJson;
            }
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

    /// Records that codex's exit status could not be learned.
    pub fn wait_failed(&mut self, error: String) {
        self.wait_error.get_or_insert(error);
    }

    /// Decides the `end`. Precedence: a stop we caused, then what codex said
    /// (`turn.failed`), then how it exited, then our own output limits.
    /// `exit` is `None` when waiting for codex failed: the end then says
    /// so rather than report an exit code nobody saw.
    pub fn into_end(
        self,
        id: &str,
        exit: Option<ExitStatus>,
        stop: Option<StopReason>,
        timed_out: Option<Duration>,
        stderr_tail: &[String],
        redactor: &Redactor,
    ) -> End {
        use std::os::unix::process::ExitStatusExt;
        let exit_code = exit.and_then(|e| e.code());
        let signal = exit.and_then(|e| e.signal());
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
            // Redacted before it is cut: a cut secret is not found whole.
            error: Some(one_line(&redactor.redact(&error))),
            ..base.clone()
        };
        if let Some(reason) = stop {
            return match reason {
                StopReason::Cancelled => fail(codes::END_CANCELLED, "cancelled by request".into()),
                StopReason::Shutdown => fail(
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
        let Some(exit) = exit else {
            let error = self.wait_error.as_deref().unwrap_or("no status");
            return fail(
                codes::END_IO_ERROR,
                format!("waiting for codex to exit failed: {error}"),
            );
        };
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

/// Event types whose fields a turn records (see [`TurnState::observe`]).
fn is_learned_from(kind: &[u8]) -> bool {
    matches!(
        kind,
        b"thread.started" | b"turn.completed" | b"turn.failed" | b"error"
    )
}

/// A single-pass JSON validator for one line, exactly as strict as
/// `serde_json::from_slice::<IgnoredAny>` (which it replaces on the hot path;
/// the tests check the two agree): RFC 8259 grammar, whitespace is space, tab,
/// CR and LF only, no control characters in strings, valid escapes, no
/// trailing characters; like serde_json, it does not check UTF-8 inside
/// strings, but it says whether it saw any byte above ASCII. It also finds
/// the first top-level `"type"` whose value is a string without escapes.
pub(crate) mod scan {
    /// What [`object`] found.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Scan<'a> {
        /// Valid JSON; `kind` is the top-level `type` if it is a plain string.
        Valid {
            /// The raw bytes of the `type` value, without quotes.
            kind: Option<&'a [u8]>,
            /// Whether the line has a byte of 0x80 or above (in a string:
            /// anywhere else it is not JSON), so that only such lines need
            /// their UTF-8 checked.
            non_ascii: bool,
        },
        /// Not JSON.
        Invalid,
        /// Valid as far as we looked, but the caller should parse it fully:
        /// an escaped top-level key or `type` value, or deeper nesting than
        /// serde_json's limit.
        Unsure,
    }

    const MAX_DEPTH: usize = 128;

    fn ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }

    /// Index of the first `"`, `\` or control character at or after `i`:
    /// 16 bytes at a time with SSE2 (every x86-64 has it), the rest as below.
    /// Sets `high` if a byte it read (up to the end of the last block, so
    /// possibly past the one found) is 0x80 or above.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn special(b: &[u8], mut i: usize, high: &mut bool) -> usize {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8, _mm_xor_si128,
        };
        // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16
        // bytes inside `b` (unaligned loads).
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            // Unsigned `x < 0x20` as a signed compare, both sides flipped
            // by 0x80 (so bytes of 0x80 and above never match).
            let flip = _mm_set1_epi8(i8::MIN);
            let below = _mm_set1_epi8((0x20u8 ^ 0x80) as i8);
            // The top bit of every byte read: one more instruction a block.
            let mut tops = 0;
            while i + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(i).cast());
                tops |= _mm_movemask_epi8(x);
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    _mm_cmplt_epi8(_mm_xor_si128(x, flip), below),
                );
                let mask = _mm_movemask_epi8(hits) as u32;
                if mask != 0 {
                    *high |= tops != 0;
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
            *high |= tops != 0;
        }
        special_swar(b, i, high)
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn special(b: &[u8], i: usize, high: &mut bool) -> usize {
        special_swar(b, i, high)
    }

    /// As [`special`], 8 bytes at a time in a `u64`.
    pub(super) fn special_swar(b: &[u8], mut i: usize, high: &mut bool) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        while i + 8 <= b.len() {
            let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
            let quote = x ^ (ONES * b'"' as u64);
            let backslash = x ^ (ONES * b'\\' as u64);
            let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
            // Bytes below 0x20 (bytes of 0x80 and above never match).
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
            let hits = zero(quote) | zero(backslash) | control;
            *high |= x & HIGHS != 0;
            if hits != 0 {
                // The lowest flagged byte is exact (later ones may not be).
                return i + (hits.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
            *high |= b[i] >= 0x80;
            i += 1;
        }
        i
    }

    /// A string whose opening quote is at `i - 1`: the index after its
    /// closing quote, and whether it had escapes.
    fn string(b: &[u8], mut i: usize, high: &mut bool) -> Option<(usize, bool)> {
        let mut escaped = false;
        loop {
            i = special(b, i, high);
            match b.get(i)? {
                b'"' => return Some((i + 1, escaped)),
                b'\\' => {
                    escaped = true;
                    match b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = b.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
        }
    }

    fn number(b: &[u8], mut i: usize) -> Option<usize> {
        let digits = |b: &[u8], mut i: usize| {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            (i > start).then_some(i)
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i)? {
            b'0' => {
                i += 1;
                if b.get(i).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
            }
            b'1'..=b'9' => i = digits(b, i)?,
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i = digits(b, i + 1)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits(b, i)?;
        }
        Some(i)
    }

    enum Step {
        Value,
        Key,
        After,
    }

    /// Scans one line that should hold exactly one JSON value.
    pub fn object(b: &[u8]) -> Scan<'_> {
        match scan(b) {
            Ok(scan) => scan,
            Err(()) => Scan::Invalid,
        }
    }

    fn scan(b: &[u8]) -> Result<Scan<'_>, ()> {
        let mut stack = [0u8; MAX_DEPTH + 1];
        let mut depth = 0;
        let mut kind: Option<&[u8]> = None;
        let mut high = false;
        // The value being read is the top-level `type`.
        let mut is_type = false;
        let mut i = 0;
        let mut step = Step::Value;
        loop {
            match step {
                Step::Value => {
                    i = ws(b, i);
                    let this_is_type = std::mem::take(&mut is_type);
                    match *b.get(i).ok_or(())? {
                        open @ (b'{' | b'[') => {
                            depth += 1;
                            if depth > MAX_DEPTH {
                                return Ok(Scan::Unsure);
                            }
                            stack[depth] = open;
                            i = ws(b, i + 1);
                            let close = if open == b'{' { b'}' } else { b']' };
                            if b.get(i) == Some(&close) {
                                depth -= 1;
                                i += 1;
                                step = Step::After;
                            } else {
                                step = if open == b'{' { Step::Key } else { Step::Value };
                            }
                            continue;
                        }
                        b'"' => {
                            let (end, escaped) = string(b, i + 1, &mut high).ok_or(())?;
                            if this_is_type && kind.is_none() {
                                if escaped {
                                    return Ok(Scan::Unsure);
                                }
                                kind = Some(&b[i + 1..end - 1]);
                            }
                            i = end;
                        }
                        b't' if b[i..].starts_with(b"true") => i += 4,
                        b'f' if b[i..].starts_with(b"false") => i += 5,
                        b'n' if b[i..].starts_with(b"null") => i += 4,
                        b'-' | b'0'..=b'9' => i = number(b, i).ok_or(())?,
                        _ => return Err(()),
                    }
                    step = Step::After;
                }
                Step::Key => {
                    if b.get(i) != Some(&b'"') {
                        return Err(());
                    }
                    let (end, escaped) = string(b, i + 1, &mut high).ok_or(())?;
                    if depth == 1 {
                        if escaped {
                            // Could spell `type`: let serde decide.
                            return Ok(Scan::Unsure);
                        }
                        is_type = &b[i + 1..end - 1] == b"type";
                    }
                    i = ws(b, end);
                    if b.get(i) != Some(&b':') {
                        return Err(());
                    }
                    i += 1;
                    step = Step::Value;
                }
                Step::After => {
                    i = ws(b, i);
                    if depth == 0 {
                        return if i == b.len() {
                            Ok(Scan::Valid {
                                kind,
                                non_ascii: high,
                            })
                        } else {
                            Err(())
                        };
                    }
                    match (stack[depth], *b.get(i).ok_or(())?) {
                        (b'{', b',') => {
                            i = ws(b, i + 1);
                            step = Step::Key;
                        }
                        (b'[', b',') => {
                            i += 1;
                            step = Step::Value;
                        }
                        (b'{', b'}') | (b'[', b']') => {
                            depth -= 1;
                            i += 1;
                        }
                        _ => return Err(()),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;

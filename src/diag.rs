//! Run-scoped diagnostics on stderr, and keeping secrets out of them.
//!
//! `{"type":"diag","id",...}` lines are part of the existing protocol:
//! clients route them to the run's stream. Every message that can contain
//! text from codex passes through the run's [`Redactor`] first.

use std::collections::VecDeque;

use runner_protocol::output::StderrLine;
use runner_protocol::{DiagLevel, RunParams};
use tokio::net::unix::pipe;

use crate::lines::{ChunkReader, Frame, LineFramer};

/// Stderr lines kept per turn for its error message.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept or forwarded, in bytes.
const STDERR_LINE_LIMIT: usize = 4096;
/// Longest sample of a dropped stdout line in a diag.
const SAMPLE_CHARS: usize = 200;

/// Queues one diag line for stderr, whole, so it never interleaves with log
/// lines.
pub fn emit(id: &str, level: DiagLevel, message: &str) {
    crate::stderr::write(&diag_line(id, level, message));
}

/// As [`emit`], for a line of codex's own stderr: the first to be dropped
/// when stderr is not being read (see [`crate::stderr`]).
fn emit_codex_stderr(id: &str, level: DiagLevel, message: &str) {
    crate::stderr::write_bulk(&diag_line(id, level, message));
}

fn diag_line(id: &str, level: DiagLevel, message: &str) -> Vec<u8> {
    stderr_line(&StderrLine::Diag {
        id: id.to_owned(),
        level,
        message: message.to_owned(),
    })
}

/// Writes a `fatal` line: the daemon cannot go on.
pub fn fatal(message: &str) {
    crate::stderr::write(&stderr_line(&StderrLine::Fatal {
        message: message.to_owned(),
    }));
}

fn stderr_line(line: &StderrLine) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(line).expect("stderr lines serialise");
    bytes.push(b'\n');
    bytes
}

/// Replaces the run's secret values (HTTP header values, env values) with
/// `[redacted]` in text that may echo them.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Collects the secrets of a request.
    pub fn for_params(p: &RunParams) -> Redactor {
        let mut values: Vec<String> = p.env.values().cloned().collect();
        for server in p.mcp_servers.values() {
            values.extend(server.http_headers.iter().flatten().map(|(_, v)| v.clone()));
            values.extend(server.env.iter().flatten().map(|(_, v)| v.clone()));
            // A password in the URL (`http://user:pass@host/`) is one too:
            // codex's connection errors quote the URL. So are its query's
            // values (`?api_key=…`). Either may be quoted decoded as well.
            let url = server.url.as_deref();
            for value in url
                .and_then(url_password)
                .into_iter()
                .chain(url.into_iter().flat_map(url_query_values))
            {
                values.extend(percent_decoded(&value));
                values.push(value);
            }
        }
        let mut secrets = Vec::new();
        for value in values {
            secrets.extend(parts_quoted_alone(&value));
            secrets.push(value);
        }
        // Short values ("1", "true") would redact ordinary words.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_unstable();
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced. Where two secrets overlap in the
    /// text, the whole span of both goes.
    pub fn redact(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            spans.extend(
                text.match_indices(secret.as_str())
                    .map(|(at, found)| (at, at + found.len())),
            );
        }
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        let mut spans = spans.into_iter().peekable();
        while let Some((from, mut to)) = spans.next() {
            while let Some(&(next_from, next_to)) = spans.peek() {
                if next_from > to {
                    break;
                }
                to = to.max(next_to);
                spans.next();
            }
            out.push_str(&text[done..from]);
            out.push_str("[redacted]");
            done = to;
        }
        out.push_str(&text[done..]);
        out
    }

    /// As [`redact`](Self::redact), for text that was cut short: a secret
    /// the cut went through is not there whole, so an end of the text that
    /// begins a secret (4 bytes of it or more) is replaced too.
    pub fn redact_cut(&self, text: &str) -> String {
        let mut out = self.redact(text);
        let longest_partial = self
            .secrets
            .iter()
            .filter_map(|secret| {
                (4..secret.len())
                    .rev()
                    .filter(|&n| secret.is_char_boundary(n))
                    .find(|&n| out.ends_with(&secret[..n]))
            })
            .max();
        if let Some(n) = longest_partial {
            out.truncate(out.len() - n);
            out.push_str("[redacted]");
        }
        out
    }
}

/// `bytes` as text, without a character the cut went through.
fn utf8_head(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A message on one line.
pub fn one_line(text: &str) -> String {
    let joined: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.len() > 2000 {
        let mut cut = 2000;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &joined[..cut])
    } else {
        joined
    }
}

/// The password of a URL's userinfo (`scheme://user:password@host…`).
pub(crate) fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// The values of a URL's query (`?name=value&…`, before any `#`); a part
/// without `=` (`?token`) is a value as a whole.
pub(crate) fn url_query_values(url: &str) -> Vec<String> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(_, value)| value))
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `value` with its `%XX` escapes decoded, if it has any that decode to
/// UTF-8 (an error may quote a URL's parts decoded).
fn percent_decoded(value: &str) -> Option<String> {
    if !value.contains('%') {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .ok()
        .filter(|decoded| decoded != value)
}

/// Parts of a secret value that text may quote without the rest: each line
/// of a value of several (a PEM key: codex's stderr reaches us a line at a
/// time), and the credential of an `Authorization`-style value
/// (`Bearer <token>`, `Basic <credentials>`).
fn parts_quoted_alone(value: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    if value.contains(['\n', '\r']) {
        parts.extend(
            value
                .split(['\n', '\r'])
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned),
        );
    }
    if let Some((scheme, credential)) = value.trim().split_once(' ') {
        let credential = credential.trim();
        if !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_alphabetic())
            && !credential.is_empty()
            && !credential.contains(char::is_whitespace)
        {
            parts.push(credential.to_owned());
        }
    }
    parts
}

/// A short printable sample of a raw line.
pub fn sample(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut sample: String = text.chars().take(SAMPLE_CHARS).collect();
    if text.chars().count() > SAMPLE_CHARS {
        sample.push('…');
    }
    format!("{sample:?}")
}

/// An error and its causes, `: `-separated.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Forwards codex's stderr as diag lines and keeps its last lines, for the
/// turn's error message. Owned and polled by the turn itself (a branch of
/// its loop, not a task of its own).
///
/// Bounded in memory whatever codex prints: long lines are cut, and only
/// the last [`STDERR_TAIL_LINES`] are kept.
pub struct StderrForwarder {
    framer: LineFramer<ChunkReader<pipe::Receiver>>,
    id: String,
    redactor: Redactor,
    tail: VecDeque<String>,
    done: bool,
}

impl StderrForwarder {
    /// Forwards `stderr` for run `id`.
    pub fn new(stderr: pipe::Receiver, id: &str, redactor: Redactor) -> StderrForwarder {
        StderrForwarder {
            framer: LineFramer::new(
                ChunkReader::new(stderr, 2 * STDERR_LINE_LIMIT),
                STDERR_LINE_LIMIT,
            )
            .keeping_head(),
            id: id.to_owned(),
            redactor,
            tail: VecDeque::new(),
            done: false,
        }
    }

    /// Whether stderr reached its end (or failed).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Forwards the next line; at the end, marks it [`done`](Self::done).
    /// Cancel-safe: all that follows the one await is synchronous.
    pub async fn forward_next(&mut self) {
        let frame = match self.framer.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => {
                self.done = true;
                return;
            }
        };
        let text = match frame {
            Frame::Line(line) => self
                .redactor
                .redact(String::from_utf8_lossy(&line).trim_end()),
            Frame::TooLong { len } => {
                let head = self.framer.take_head();
                let head = self.redactor.redact_cut(utf8_head(&head).trim_end());
                format!("{head}… [cut: the line had {len} bytes]")
            }
        };
        if text.is_empty() {
            return;
        }
        emit_codex_stderr(&self.id, level_of(&text), &format!("codex: {text}"));
        if self.tail.len() == STDERR_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    /// Forwards lines until the end.
    pub async fn forward_rest(&mut self) {
        while !self.done {
            self.forward_next().await;
        }
    }

    /// The last lines, oldest first.
    pub fn into_tail(self) -> Vec<String> {
        self.tail.into()
    }
}

fn level_of(line: &str) -> DiagLevel {
    let head: String = line
        .chars()
        .take(40)
        .collect::<String>()
        .to_ascii_lowercase();
    if head.contains("error") || head.contains("fatal") {
        DiagLevel::Error
    } else if head.contains("warn") {
        DiagLevel::Warn
    } else {
        DiagLevel::Info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_cut_short_at_the_end_of_a_text_is_redacted() {
        let redactor = Redactor {
            secrets: vec!["s3cretvalue".into()],
        };
        assert_eq!(
            redactor.redact_cut("a s3cretvalue b s3cr"),
            "a [redacted] b [redacted]"
        );
        // Three bytes are too common a prefix to count as a secret.
        assert_eq!(redactor.redact_cut("a s3c"), "a s3c");
        assert_eq!(redactor.redact("a s3cr"), "a s3cr", "whole secrets only");
        assert_eq!(utf8_head("aé".as_bytes()), "aé");
        assert_eq!(utf8_head(&"aé".as_bytes()[..2]), "a", "no half character");
    }

    #[test]
    fn a_password_in_a_server_url_is_redacted() {
        assert_eq!(
            url_password("https://bot:s3cr%40t@h:8/mcp?x=1"),
            Some("s3cr%40t".into())
        );
        assert_eq!(url_password("http://h/a@b:c"), None, "an @ in the path");
        assert_eq!(url_password("http://user@h/"), None);
        assert_eq!(
            codex_error_for("http://bot:hunter22@127.0.0.1:9/mcp"),
            "error sending request for url (http://bot:[redacted]@127.0.0.1:9/mcp)"
        );
    }

    #[test]
    fn the_query_values_of_a_server_url_are_redacted() {
        assert_eq!(
            url_query_values("http://h/mcp?api_key=k3y-value&v=1&flag&sig=#sig=frag"),
            ["k3y-value", "1", "flag"],
            "a part without `=` is a value"
        );
        assert!(url_query_values("http://h/mcp").is_empty());
        assert_eq!(
            codex_error_for("http://127.0.0.1:9/mcp?api_key=sk-query-secret"),
            "error sending request for url (http://127.0.0.1:9/mcp?api_key=[redacted])"
        );
    }

    #[test]
    fn parts_of_a_secret_quoted_alone_are_redacted() {
        let params: RunParams = serde_json::from_value(serde_json::json!({
            "prompt": "x",
            "env": {"KEY": "-----BEGIN KEY-----\r\nline-one-x\nline-two-y\n-----END KEY-----\n"},
            "mcp_servers": {"s": {
                "url": "http://bot:p%3Aword@h/mcp?k=a%26bcd&bare-t0ken",
                "http_headers": {"Authorization": "Bearer tok3n-value"}
            }}
        }))
        .unwrap();
        let redactor = Redactor::for_params(&params);
        // codex's stderr comes a line at a time, so a key's lines come apart.
        assert_eq!(
            redactor.redact("gate line-one-x: no such file"),
            "gate [redacted]: no such file"
        );
        assert_eq!(redactor.redact("line-two-y"), "[redacted]");
        assert_eq!(
            redactor.redact("401: bad token tok3n-value"),
            "401: bad token [redacted]"
        );
        assert_eq!(redactor.redact("Bearer is a word"), "Bearer is a word");
        assert_eq!(
            redactor.redact("user bot, password p:word, k=a&bcd, bare-t0ken"),
            "user bot, password [redacted], k=[redacted], [redacted]"
        );
    }

    #[test]
    fn overlapping_secrets_are_redacted_whole() {
        let redactor = Redactor {
            secrets: vec!["abcSEKRET1".into(), "SEKRET1xyzTAIL".into()],
        };
        assert_eq!(redactor.redact("x abcSEKRET1xyzTAIL y"), "x [redacted] y");
        assert_eq!(
            redactor.redact("abcSEKRET1 and SEKRET1xyzTAIL"),
            "[redacted] and [redacted]"
        );
        assert_eq!(redactor.redact_cut("x SEKRET1xy"), "x [redacted]");
    }

    /// codex's connection error for a request's server at `url`, redacted.
    fn codex_error_for(url: &str) -> String {
        let params: RunParams = serde_json::from_value(serde_json::json!({
            "prompt": "x",
            "mcp_servers": {"s": {"url": url}}
        }))
        .unwrap();
        Redactor::for_params(&params).redact(&format!("error sending request for url ({url})"))
    }
}

use super::*;
use std::os::unix::process::ExitStatusExt;

fn exit(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn end_of(lines: &[&str], status: ExitStatus, tail: &[&str]) -> End {
    let mut state = TurnState::default();
    for line in lines {
        state.observe(line.as_bytes());
    }
    let tail: Vec<String> = tail.iter().map(|s| s.to_string()).collect();
    state.into_end("r", Some(status), None, None, &tail, &Redactor::default())
}

#[test]
fn peeks_thread_once_and_forwards_odd_objects() {
    let mut state = TurnState::default();
    assert_eq!(
        state.observe(br#"{"type":"thread.started","thread_id":"t1"}"#),
        EventPeek::Event {
            thread_started: Some("t1".into())
        }
    );
    assert_eq!(
        state.observe(br#"{"type":"thread.started","thread_id":"t2"}"#),
        EventPeek::Event {
            thread_started: None
        }
    );
    let web = br#"{"type":"item.completed","item":{"id":"item_1","type":"web_search","id":"ws_1","query":"q"}}"#;
    assert_eq!(
        state.observe(web),
        EventPeek::Event {
            thread_started: None
        }
    );
    assert_eq!(
        state.observe(br#"{"type":"a","type":"b"}"#),
        EventPeek::Event {
            thread_started: None
        },
        "a top-level duplicate key is still a JSON object"
    );
    for garbage in [
        &b"not json"[..],
        b"[1,2]",
        b"\"s\"",
        b"",
        b"{\"type\":\"broken\"",
    ] {
        assert_eq!(state.observe(garbage), EventPeek::NotJson, "{garbage:?}");
    }
}

#[test]
fn ok_needs_exit_zero_and_no_turn_failed() {
    let end = end_of(
        &[
            r#"{"type":"thread.started","thread_id":"t"}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":3}}"#,
        ],
        exit(0),
        &[],
    );
    assert_eq!(end.status, EndStatus::Ok);
    assert_eq!(end.thread_id.as_deref(), Some("t"));
    assert_eq!(end.usage, Some(serde_json::json!({"input_tokens": 3})));
    assert_eq!(end.exit_code, Some(0));
}

#[test]
fn failure_messages_say_why() {
    let end = end_of(
        &[r#"{"type":"turn.failed","error":{"message":"model said no"}}"#],
        exit(1),
        &[],
    );
    assert_eq!(
        (end.code.as_deref(), end.error.as_deref()),
        (Some(codes::END_TURN_FAILED), Some("model said no"))
    );
    let end = end_of(
        &[r#"{"type":"error","message":"Reconnecting... 5/5"}"#],
        exit(1),
        &["boom"],
    );
    assert_eq!(
        end.error.as_deref(),
        Some("codex exited with status 1: Reconnecting... 5/5")
    );
    let end = end_of(
        &["junk"],
        exit(3),
        &["a", "", "Error: no rollout found\nfor thread"],
    );
    assert_eq!(end.code.as_deref(), Some(codes::END_CODEX_EXITED));
    assert_eq!(
        end.error.as_deref(),
        Some("codex exited with status 3: Error: no rollout found | for thread (1 non-JSON stdout lines dropped)")
    );
    let end = end_of(&[], ExitStatus::from_raw(libc::SIGABRT), &[]);
    assert_eq!(end.signal, Some(libc::SIGABRT));
    assert_eq!(end.error.as_deref(), Some("codex was killed by signal 6"));
}

#[test]
fn stops_win_and_messages_are_redacted() {
    let state = TurnState::default();
    let end = state.into_end(
        "r",
        Some(exit(1)),
        Some(StopReason::Cancelled),
        None,
        &[],
        &Redactor::default(),
    );
    assert_eq!(end.code.as_deref(), Some(codes::END_CANCELLED));
    assert!(end.error.unwrap().starts_with("cancelled"));
    let state = TurnState::default();
    let end = state.into_end(
        "r",
        Some(exit(1)),
        None,
        Some(Duration::from_millis(1500)),
        &[],
        &Redactor::default(),
    );
    assert_eq!(end.error.as_deref(), Some("timed out after 1.500s"));
    let params: runner_protocol::RunParams = serde_json::from_value(serde_json::json!({
        "prompt": "x", "env": {"TOKEN": "hunter22"}}))
    .unwrap();
    let end = end_of(
        &[r#"{"type":"turn.failed","error":{"message":"bad token hunter22"}}"#],
        exit(1),
        &[],
    );
    assert!(
        end.error.unwrap().contains("hunter22"),
        "default redactor knows no secrets"
    );
    let mut state = TurnState::default();
    state.observe(br#"{"type":"turn.failed","error":{"message":"bad token hunter22"}}"#);
    let end = state.into_end(
        "r",
        Some(exit(1)),
        None,
        None,
        &[],
        &Redactor::for_params(&params),
    );
    assert_eq!(end.error.as_deref(), Some("bad token [redacted]"));
}

#[test]
fn a_failed_wait_reports_no_exit_code() {
    let mut state = TurnState::default();
    state.observe(br#"{"type":"turn.completed","usage":{"input_tokens":1}}"#);
    state.wait_failed("No child processes (os error 10)".into());
    let end = state.into_end("r", None, None, None, &[], &Redactor::default());
    assert_eq!(end.status, EndStatus::Error);
    assert_eq!(end.code.as_deref(), Some(codes::END_IO_ERROR));
    assert_eq!(end.exit_code, None);
    assert_eq!(end.signal, None);
    assert_eq!(
        end.error.as_deref(),
        Some("waiting for codex to exit failed: No child processes (os error 10)")
    );
}

#[test]
fn over_long_lines_fail_an_otherwise_ok_run() {
    let mut state = TurnState::default();
    state.too_long(99);
    let end = state.into_end("r", Some(exit(0)), None, None, &[], &Redactor::default());
    assert_eq!(end.code.as_deref(), Some(codes::END_PROTOCOL_ERROR));
}

#[test]
fn codex_error_line_wins_over_long_log_lines() {
    let log = format!(
        "2026-11-21T07:00:00Z ERROR codex_core::mcp: {}",
        "x".repeat(1500)
    );
    let end = end_of(
        &[],
        exit(1),
        &[
            &log,
            "Error: thread/start: required MCP servers failed to initialize: gone-away",
            &log,
        ],
    );
    assert_eq!(
        end.error.as_deref(),
        Some("codex exited with status 1: Error: thread/start: required MCP servers failed to initialize: gone-away")
    );
    let end = end_of(&[], exit(1), &[&log]);
    assert!(end.error.as_deref().unwrap().len() < 500, "{:?}", end.error);
}

/// What a turn learns from one line, as the observe of before the scanner
/// did it: serde_json only, every line parsed. The scanner must never change
/// what a line is classified as, nor what is learned from it.
#[derive(Debug, PartialEq)]
struct Learned {
    peek: EventPeek,
    thread_id: Option<String>,
    usage: Option<String>,
    turn_failed: Option<String>,
    last_error: Option<String>,
    non_json_lines: u64,
}

fn learned_by_reference(line: &[u8]) -> Learned {
    let mut learned = Learned {
        peek: EventPeek::NotJson,
        thread_id: None,
        usage: None,
        turn_failed: None,
        last_error: None,
        non_json_lines: 1,
    };
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
        || std::str::from_utf8(line).is_err()
    {
        return learned;
    }
    let event = EventPeek::Event {
        thread_started: None,
    };
    let peek = match serde_json::from_slice::<Peek>(line) {
        Ok(peek) => peek,
        Err(_) => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
                learned.peek = event;
                learned.non_json_lines = 0;
            }
            return learned;
        }
    };
    learned.peek = event;
    learned.non_json_lines = 0;
    match peek.kind.as_deref() {
        Some("thread.started") => {
            if let Some(thread) = peek.thread_id {
                learned.thread_id = Some(thread.clone().into_owned());
                learned.peek = EventPeek::Event {
                    thread_started: Some(thread.into_owned()),
                };
            }
        }
        Some("turn.completed") => learned.usage = peek.usage.map(|u| u.get().to_owned()),
        Some("turn.failed") => {
            learned.turn_failed = Some(
                peek.error
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| "turn failed (no message)".to_owned()),
            )
        }
        Some("error") => learned.last_error = peek.message,
        _ => {}
    }
    learned
}

/// What `TurnState::observe` learned from one line.
fn learned_by_observe(line: &[u8]) -> Learned {
    let mut state = TurnState::default();
    let peek = state.observe(line);
    Learned {
        peek,
        thread_id: state.thread_id,
        usage: state.usage.map(|u| u.get().to_owned()),
        turn_failed: state.turn_failed,
        last_error: state.last_error,
        non_json_lines: state.non_json_lines,
    }
}

/// A tiny deterministic PRNG (xorshift), so the fuzz cases are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SAMPLES: &[&str] = &[
    r#"{"type":"thread.started","thread_id":"019a6c2e-5b0e-7c31-9d1e-2f4a8b6c0d11"}"#,
    r#"{"type":"turn.started"}"#,
    r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"lorem ipsum dolor \"sit\" amet\n\u00e9\ud83d\ude00 é"}}"#,
    r#"{"type":"item.completed","item":{"id":"item_1","type":"web_search","id":"ws_1","query":"q"}}"#,
    r#"{"type":"item.updated","item":{"id":"item_2","type":"command_execution","command":"ls -la","aggregated_output":"a\tb\r\n","exit_code":0,"status":"in_progress"}}"#,
    r#"{"type":"turn.completed","usage":{"input_tokens":1204,"cached_input_tokens":0,"output_tokens":88,"reasoning_output_tokens":-1.5e+3}}"#,
    r#"{"type":"turn.failed","error":{"message":"model said no"}}"#,
    r#"{"type":"error","message":"Reconnecting... 1/5"}"#,
    r#"  { "type" : "item.started" , "item" : { "list" : [ 1 , 2.0 , -0 , 1E5 , true , false , null , [ ] , { } ] } }  "#,
    r#"{"typ\u0065":"thread.started","thread_id":"t"}"#,
    r#"{"type":"thr\u0065ad.started","thread_id":"t"}"#,
    r#"{"type":5,"type":"turn.failed","error":{"message":"x"}}"#,
    r#"{"item":{"type":"turn.failed"},"type":"item.completed"}"#,
    r#"{}"#,
];

#[test]
fn the_scanner_agrees_with_serde_json() {
    let check = |line: &[u8]| {
        let reference = learned_by_reference(line);
        let serde_ok = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
        assert_eq!(
            learned_by_observe(line),
            reference,
            "{:?}",
            String::from_utf8_lossy(line)
        );
        let learns = reference.thread_id.is_some()
            || reference.usage.is_some()
            || reference.turn_failed.is_some()
            || reference.last_error.is_some();
        match scan::object(line) {
            scan::Scan::Invalid => assert!(!serde_ok, "{:?}", String::from_utf8_lossy(line)),
            scan::Scan::Valid { kind, non_ascii } => {
                if line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                    assert!(serde_ok, "{:?}", String::from_utf8_lossy(line));
                }
                // What decides whether the line's UTF-8 is checked.
                assert_eq!(non_ascii, !line.is_ascii(), "{line:?}");
                // A line the reference learns from never takes the fast path.
                if learns {
                    assert!(
                        kind.is_some_and(is_learned_from),
                        "{:?}",
                        String::from_utf8_lossy(line)
                    );
                }
            }
            scan::Scan::Unsure => {}
        }
    };
    for sample in SAMPLES {
        check(sample.as_bytes());
    }
    let alphabet = b"{}[]:,\"\\/ \t\r\n\x0c\x01\x7f0123456789-+.eEtruefalsnlxyzu\xc3\xa9\xff";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..60_000 {
        let mut line = SAMPLES[rng.below(SAMPLES.len())].as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(line.len() + 1);
            match rng.below(3) {
                0 if at < line.len() => {
                    line.remove(at);
                }
                1 if at < line.len() => line[at] = alphabet[rng.below(alphabet.len())],
                _ => line.insert(at, alphabet[rng.below(alphabet.len())]),
            }
        }
        check(&line);
    }
    // Nesting around serde_json's limit.
    for depth in 120..135 {
        let line = format!(
            r#"{{"type":"item.completed","x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        check(line.as_bytes());
    }
}

#[test]
fn lines_a_turn_learns_from_are_still_parsed() {
    let mut state = TurnState::default();
    assert_eq!(
        state.observe(br#"{"type":"thread.started","thread_id":"t1"}"#),
        EventPeek::Event {
            thread_started: Some("t1".into())
        }
    );
    assert_eq!(
        state.observe(br#"{"typ\u0065":"thread.started","thread_id":"t2"}"#),
        EventPeek::Event {
            thread_started: None
        },
        "t1 came first"
    );
    let mut state = TurnState::default();
    assert_eq!(
        state.observe(br#"{"typ\u0065":"thread.started","thread_id":"t2"}"#),
        EventPeek::Event {
            thread_started: Some("t2".into())
        },
        "an escaped key is still `type`"
    );
}

#[test]
fn special_bytes_are_found_wherever_they_are() {
    // The first `"`, `\` or control byte at or after `start`, byte by byte.
    let reference = |b: &[u8], start: usize| {
        (start..b.len())
            .find(|&i| matches!(b[i], b'"' | b'\\' | 0..=0x1f))
            .unwrap_or(b.len())
    };
    let plain = b"abcdefghijklmnopqrstuvwxyz0123456789 ~\x7f\x80\xc3\xa9\xff{}:,";
    for len in 0..48 {
        let line: Vec<u8> = (0..len).map(|i| plain[i % plain.len()]).collect();
        for start in [0, 1, 7, 8, 15, 16, 17, 31, 32] {
            let start = start.min(len);
            let mut high = false;
            assert_eq!(
                scan::special(&line, start, &mut high),
                len,
                "none in {len} bytes"
            );
            assert_eq!(high, !line[start..].is_ascii(), "{len} bytes from {start}");
            for at in 0..len {
                for byte in [b'"', b'\\', 0x00, 0x09, 0x1f, 0x20, 0x7f, 0x80, 0xff] {
                    let mut line = line.clone();
                    line[at] = byte;
                    // A second one later must not be found first.
                    if at + 5 < len {
                        line[at + 5] = b'"';
                    }
                    let found = reference(&line, start);
                    let (mut high, mut high_swar) = (false, false);
                    assert_eq!(
                        scan::special(&line, start, &mut high),
                        found,
                        "{byte:#x} at {at} of {len}, from {start}"
                    );
                    assert_eq!(
                        scan::special_swar(&line, start, &mut high_swar),
                        found,
                        "SWAR: {byte:#x} at {at} of {len}, from {start}"
                    );
                    // Set for any high byte before the one found, and never
                    // without one in the rest of the line.
                    for high in [high, high_swar] {
                        if !line[start.min(found)..found].is_ascii() {
                            assert!(high, "{byte:#x} at {at} of {len}, from {start}");
                        }
                        if high {
                            assert!(!line[start..].is_ascii());
                        }
                    }
                }
            }
        }
    }
}

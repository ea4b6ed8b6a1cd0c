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
    state.into_end("r", status, None, None, &tail, &Redactor::default())
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
        exit(1),
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
        exit(1),
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
        exit(1),
        None,
        None,
        &[],
        &Redactor::for_params(&params),
    );
    assert_eq!(end.error.as_deref(), Some("bad token [redacted]"));
}

#[test]
fn over_long_lines_fail_an_otherwise_ok_run() {
    let mut state = TurnState::default();
    state.too_long(99);
    let end = state.into_end("r", exit(0), None, None, &[], &Redactor::default());
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

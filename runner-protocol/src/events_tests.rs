use serde_json::{json, Value};

use super::*;

/// Lines shaped as codex 0.169.0 prints them (shared/codex-facts.md), in
/// codex's key order, so a typed round trip must give the same bytes back.
/// (Inside free-form JSON, such as MCP content and search actions, keys are
/// sorted: that is how a `serde_json::Value` writes them.)
const CODEX_LINES: &[&str] = &[
    r#"{"type":"thread.started","thread_id":"019a6c2e-5b0e-7c31-9d1e-2f4a8b6c0d11"}"#,
    r#"{"type":"turn.started"}"#,
    r#"{"type":"error","message":"Reconnecting... 1/5"}"#,
    r#"{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Planning**"}}"#,
    r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"/bin/bash -lc 'echo hi'","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#,
    r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"/bin/bash -lc 'echo hi'","aggregated_output":"hi\n","exit_code":0,"status":"completed"}}"#,
    r#"{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"src/lib.rs","kind":"update"},{"path":"NOTES.md","kind":"add"}],"status":"completed"}}"#,
    r#"{"type":"item.started","item":{"id":"item_3","type":"mcp_tool_call","server":"probe","tool":"whoami","arguments":{},"result":null,"error":null,"status":"in_progress"}}"#,
    r#"{"type":"item.completed","item":{"id":"item_3","type":"mcp_tool_call","server":"probe","tool":"whoami","arguments":{"a":1},"result":{"content":[{"text":"you","type":"text"}],"structured_content":null,"_meta":{"k":"v"}},"error":null,"status":"failed"}}"#,
    r#"{"type":"item.updated","item":{"id":"item_4","type":"todo_list","items":[{"text":"run a command","completed":true},{"text":"edit a file","completed":false}]}}"#,
    r#"{"type":"item.completed","item":{"id":"item_5","type":"web_search","id":"ws_1","query":"rust","action":{"query":"rust","type":"search"}}}"#,
    r#"{"type":"item.completed","item":{"id":"item_6","type":"collab_tool_call","tool":"spawn_agent","sender_thread_id":"t1","receiver_thread_ids":["t2"],"prompt":"check the tests","agents_states":{"t2":{"status":"running","message":null}},"status":"completed"}}"#,
    r#"{"type":"item.completed","item":{"id":"item_7","type":"error","message":"fake non-fatal error item"}}"#,
    r#"{"type":"item.completed","item":{"id":"item_8","type":"agent_message","text":"Done."}}"#,
    r#"{"type":"turn.completed","usage":{"input_tokens":1204,"cached_input_tokens":0,"cache_write_input_tokens":0,"output_tokens":88,"reasoning_output_tokens":40}}"#,
    r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#,
];

fn parse(line: &str) -> ThreadEvent {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn every_codex_line_is_typed_and_round_trips_byte_for_byte() {
    for line in CODEX_LINES {
        let event = parse(line);
        assert!(!matches!(event, ThreadEvent::Other(_)), "untyped: {line}");
        if let Some(item) = event.item() {
            assert!(
                !matches!(item.details, ItemDetails::Other(_)),
                "untyped item: {line}"
            );
        }
        let back = serde_json::to_string(&event).unwrap();
        assert_eq!(&back, line);
        let kind = serde_json::from_str::<Value>(line).unwrap()["type"].clone();
        assert_eq!(event.kind(), kind);
    }
}

#[test]
fn web_search_keeps_both_duplicate_ids() {
    let line = CODEX_LINES[10];
    // What a derived struct makes of codex's line: the reason for the
    // hand-written Deserialize.
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Derived {
        id: String,
        query: String,
    }
    let item_text = &line[line.find(r#"{"id""#).unwrap()..line.len() - 1];
    let err = serde_json::from_str::<Derived>(item_text).unwrap_err();
    assert!(err.to_string().contains("duplicate field `id`"), "{err}");

    let event = parse(line);
    let item = event.item().unwrap();
    assert_eq!(item.id, "item_5");
    let ItemDetails::WebSearch(search) = &item.details else {
        panic!("{item:?}")
    };
    assert_eq!(search.id, "ws_1");
    assert_eq!(search.query, "rust");
    assert_eq!(search.action, json!({"type": "search", "query": "rust"}));
}

#[test]
fn web_search_through_a_value_keeps_the_last_id() {
    let value: Value = serde_json::from_str(CODEX_LINES[10]).unwrap();
    let event = ThreadEvent::deserialize(&value).unwrap();
    let item = event.item().unwrap();
    assert_eq!(item.id, "ws_1");
    assert!(matches!(&item.details, ItemDetails::WebSearch(s) if s.id == "ws_1"));
}

#[test]
fn unknown_event_and_item_types_are_kept_whole() {
    let line = r#"{"type":"turn.future_thing","x":1,"nested":{"a":[1,2]}}"#;
    let event = parse(line);
    assert_eq!(event.kind(), "turn.future_thing");
    let ThreadEvent::Other(value) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(value, &serde_json::from_str::<Value>(line).unwrap());
    assert_eq!(serde_json::to_value(&event).unwrap(), *value);

    let line = r#"{"type":"item.completed","item":{"id":"item_9","type":"future_item","payload":{"a":[1,2]}}}"#;
    let event = parse(line);
    let item = event.item().unwrap();
    assert_eq!(item.id, "item_9");
    assert_eq!(item.details.kind(), "future_item");
    assert!(matches!(item.details, ItemDetails::Other(_)));
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        serde_json::from_str::<Value>(line).unwrap()
    );
}

#[test]
fn known_types_in_unknown_shapes_are_kept_whole() {
    for line in [
        // A status this version does not know.
        r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"ls","aggregated_output":"","exit_code":null,"status":"paused"}}"#,
        // An item with no id: the whole event is kept.
        r#"{"type":"item.completed","item":{"type":"agent_message","text":"hi"}}"#,
        r#"{"type":"thread.started"}"#,
        r#"{"type":"turn.failed","error":"not an object"}"#,
        r#"{"no_type":true}"#,
    ] {
        let event = parse(line);
        let expected = serde_json::from_str::<Value>(line).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), expected, "{line}");
    }
    let event = parse(r#"{"no_type":true}"#);
    assert_eq!(event.kind(), "");
}

#[test]
fn new_fields_of_known_types_are_ignored_and_missing_counts_are_zero() {
    let event = parse(r#"{"type":"turn.completed","usage":{"input_tokens":5,"new":1}}"#);
    let ThreadEvent::TurnCompleted { usage } = event else {
        panic!("{event:?}")
    };
    assert_eq!(
        usage,
        Usage {
            input_tokens: 5,
            ..Usage::default()
        }
    );
    let event = parse(
        r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"t","extra":1}}"#,
    );
    assert!(matches!(
        event.item().map(|i| &i.details),
        Some(ItemDetails::AgentMessage { text }) if text == "t"
    ));
}

use super::*;
use crate::params::{ContentPart, Input, InputContent};

fn rejected(line: &str) -> Rejection {
    decode_request(line.as_bytes()).expect_err("line should be rejected")
}

fn invalid(line: &str) -> InvalidParams {
    match decode_request(line.as_bytes()) {
        Ok(Request::Run { params: Err(e), .. }) => e,
        other => panic!("expected invalid params, got {other:?}"),
    }
}

#[test]
fn decodes_the_existing_protocol_run() {
    let line = r#"{"type":"run","id":"r1","params":{"model":"gpt-5.5","input":{"content":[{"type":"text","text":"hi"},{"type":"local_image","path":"/a.png"}],"name":"bob"},"effort":"high","web_search_enabled":false,"mcp_servers":{"probe":{"url":"http://127.0.0.1:1/mcp","http_headers":{"Authorization":"Bearer x"}}},"agent_instance_hierarchy":"a/b"}}"#;
    let Ok(Request::Run { id, params: Ok(p) }) = decode_request(line.as_bytes()) else {
        panic!("should decode");
    };
    assert_eq!(id, "r1");
    assert_eq!(p.model.as_deref(), Some("gpt-5.5"));
    assert_eq!(
        p.input,
        Some(Input {
            content: InputContent::Parts(vec![
                ContentPart::Text { text: "hi".into() },
                ContentPart::LocalImage {
                    path: "/a.png".into()
                },
            ]),
            name: Some("bob".into()),
        })
    );
    assert_eq!(p.prompt_text(), "[bob] :\n\nhi");
    assert_eq!(p.images(), vec!["/a.png"]);
    assert_eq!(
        p.mcp_servers["probe"].http_headers.as_ref().unwrap()["Authorization"],
        "Bearer x"
    );
}

#[test]
fn string_content_and_prompt_shorthand() {
    let Ok(Request::Run { params: Ok(p), .. }) =
        decode_request(br#"{"type":"run","id":"a","params":{"input":{"content":"plain"}}}"#)
    else {
        panic!()
    };
    assert_eq!(p.prompt_text(), "plain");
    let Ok(Request::Run { params: Ok(p), .. }) =
        decode_request(br#"{"type":"run","id":"a","params":{"prompt":"short","cwd":null}}"#)
    else {
        panic!()
    };
    assert_eq!(p.prompt_text(), "short");
    assert_eq!(p.cwd, None);
}

#[test]
fn cancel_decodes_and_tolerates_crlf() {
    assert_eq!(
        decode_request(b"{\"type\":\"cancel\",\"id\":\"x\"}\r"),
        Ok(Request::Cancel { id: "x".into() })
    );
}

#[test]
fn envelope_failures_are_rejections_with_codes() {
    assert_eq!(rejected("{nope").code, codes::REJECT_MALFORMED_JSON);
    assert_eq!(rejected("[1,2]").code, codes::REJECT_MALFORMED_JSON);
    assert_eq!(rejected("").code, codes::REJECT_MALFORMED_JSON);
    assert_eq!(rejected(r#"{"id":"a"}"#).code, codes::REJECT_UNKNOWN_TYPE);
    assert_eq!(
        rejected(r#"{"type":7,"id":"a"}"#).code,
        codes::REJECT_UNKNOWN_TYPE
    );
    let r = rejected(r#"{"type":"explode","id":"a"}"#);
    assert_eq!(
        (r.code, r.request_id.as_deref()),
        (codes::REJECT_UNKNOWN_TYPE, Some("a"))
    );
    assert!(r.message.contains("explode"));
    assert_eq!(
        rejected(r#"{"type":"run","params":{}}"#).code,
        codes::REJECT_MISSING_ID
    );
    assert_eq!(
        rejected(r#"{"type":"run","id":""}"#).code,
        codes::REJECT_MISSING_ID
    );
    assert_eq!(
        rejected(r#"{"type":"run","id":5}"#).code,
        codes::REJECT_MISSING_ID
    );
    assert_eq!(
        rejected(r#"{"type":"cancel","id":"a","x":1}"#).code,
        codes::REJECT_INVALID_REQUEST
    );
    let r = decode_request(b"{\"type\":\"run\",\"id\":\"\xff\"}").unwrap_err();
    assert_eq!(r.code, codes::REJECT_INVALID_UTF8);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(rejected(&deep).code, codes::REJECT_MALFORMED_JSON);
}

#[test]
fn params_errors_name_the_field() {
    let e = invalid(
        r#"{"type":"run","id":"a","params":{"prompt":"x","mcp_servers":{"s":{"url":"http://h/","headers":{"a":"b"}}}}}"#,
    );
    assert_eq!(e.field, "params.mcp_servers.s.headers");
    assert!(
        e.message.contains("unknown field `headers`"),
        "{}",
        e.message
    );
    let e = invalid(r#"{"type":"run","id":"a","params":{"prompt":"x","effort":"extreme"}}"#);
    assert_eq!(e.field, "params.effort");
    let e =
        invalid(r#"{"type":"run","id":"a","params":{"prompt":"x","web_search_enabled":"yes"}}"#);
    assert!(
        e.message
            .starts_with("params.web_search_enabled: invalid type"),
        "{}",
        e.message
    );
    let e = invalid(r#"{"type":"run","id":"a","parms":{}}"#);
    assert!(e.message.contains("unknown field `parms`"));
    let e = invalid(r#"{"type":"run","id":"a"}"#);
    assert_eq!(e.message, "missing field `params`");
    let e = invalid(r#"{"type":"run","id":"a","params":[]}"#);
    assert!(e.message.contains("must be an object"));
    let e = invalid(
        r#"{"type":"run","id":"a","params":{"input":{"content":[{"type":"video","url":"x"}]}}}"#,
    );
    assert!(e.field.starts_with("params.input.content"), "{}", e.field);
    let e = invalid(r#"{"type":"run","id":"a","params":{"input":{"content":42}}}"#);
    assert!(
        e.message.contains("a string or an array of content parts"),
        "{}",
        e.message
    );
}

#[test]
fn null_means_absent_for_collections_too() {
    let line = br#"{"type":"run","id":"a","params":{"prompt":"x","mcp_servers":null,"env":null,"config":null,"additional_directories":null,"cwd":null}}"#;
    let Ok(Request::Run { params: Ok(p), .. }) = decode_request(line) else {
        panic!("null must read as absent");
    };
    assert!(p.mcp_servers.is_empty() && p.env.is_empty() && p.config.is_empty());
    assert!(p.additional_directories.is_empty());
}

#[test]
fn status_requests() {
    assert_eq!(
        decode_request(br#"{"type":"status"}"#),
        Ok(Request::Status { request_id: None })
    );
    assert_eq!(
        decode_request(br#"{"type":"status","id":"s1"}"#),
        Ok(Request::Status {
            request_id: Some("s1".into())
        })
    );
    assert_eq!(
        rejected(r#"{"type":"status","id":3}"#).code,
        codes::REJECT_MISSING_ID
    );
    assert_eq!(
        rejected(r#"{"type":"status","verbose":true}"#).code,
        codes::REJECT_INVALID_REQUEST
    );
}

#[test]
fn an_id_codex_could_not_be_given_ends_its_run() {
    // Each reaches codex's environment and HTTP headers: refused as params,
    // so the run still gets its `end`, under the id it was sent with.
    for id in ["a\nb", "a\rb", "a\u{0}b", "tab\there", "del\u{7f}"] {
        let line = serde_json::json!({"type": "run", "id": id, "params": {"prompt": "x"}});
        match decode_request(line.to_string().as_bytes()) {
            Ok(Request::Run {
                id: got,
                params: Err(e),
            }) => {
                assert_eq!(got, id);
                assert_eq!(e.field, "id");
                assert!(e.message.contains("control characters"), "{}", e.message);
            }
            other => panic!("{id:?}: expected invalid params, got {other:?}"),
        }
    }
    let long = "x".repeat(crate::MAX_RUN_ID_BYTES + 1);
    let line = format!(r#"{{"type":"run","id":"{long}","params":{{"prompt":"x"}}}}"#);
    assert!(invalid(&line).message.contains("over the limit of 4096"));
    // At the limit, and beyond ASCII, ids are fine.
    let most = "x".repeat(crate::MAX_RUN_ID_BYTES);
    for id in [most.as_str(), "é\u{2028}日本"] {
        let line = serde_json::json!({"type": "run", "id": id, "params": {"prompt": "x"}});
        assert!(matches!(
            decode_request(line.to_string().as_bytes()),
            Ok(Request::Run { params: Ok(_), .. })
        ));
    }
    // A cancel names a run that cannot exist: left to the dispatcher (unknown_id).
    assert!(matches!(
        decode_request(br#"{"type":"cancel","id":"a\nb"}"#),
        Ok(Request::Cancel { .. })
    ));
}

#[test]
fn a_resume_id_with_a_control_character_is_refused() {
    let e = invalid(r#"{"type":"run","id":"r","params":{"prompt":"x","resume":"t\r\nX-Evil: 1"}}"#);
    assert_eq!(e.field, "params.resume");
    assert!(e.message.contains("not a thread id"), "{}", e.message);
}

#[test]
fn a_key_given_twice_is_refused_not_guessed() {
    // In the envelope: which run, or which request, is ambiguous.
    for line in [
        r#"{"type":"run","id":"a","id":"b","params":{"prompt":"x"}}"#,
        r#"{"type":"cancel","type":"run","id":"c","params":{"prompt":"x"}}"#,
        r#"{"type":"run","id":"d","params":{"prompt":"x"},"params":{"prompt":"y"}}"#,
    ] {
        let r = rejected(line);
        assert_eq!(r.code, codes::REJECT_MALFORMED_JSON, "{line}");
        assert!(r.message.contains("twice"), "{}", r.message);
    }
    // In the params: the run ends, naming the key and its place.
    let Ok(Request::Run { id, params: Err(e) }) = decode_request(
        br#"{"type":"run","id":"e","params":{"prompt":"x","env":{"A":"1","A":"2"}}}"#,
    ) else {
        panic!("expected the run with invalid params");
    };
    assert_eq!(id, "e");
    assert_eq!(e.field, "params.env.A");
    assert_eq!(e.message, r#"params.env: key "A" given twice"#);
    assert_eq!(
        invalid(r#"{"type":"run","id":"f","params":{"prompt":"x","prompt":"y"}}"#).field,
        "params.prompt"
    );
}

#[test]
fn a_byte_order_mark_is_named() {
    let r = rejected("\u{feff}{\"type\":\"status\"}");
    assert_eq!(r.code, codes::REJECT_MALFORMED_JSON);
    assert!(r.message.contains("byte order mark"), "{}", r.message);
}

#[test]
fn an_image_path_with_a_comma_is_refused_as_codex_would_split_it() {
    let e = invalid(
        r#"{"type":"run","id":"r","params":{"input":{"content":[{"type":"text","text":"x"},{"type":"local_image","path":"/up/a.png"},{"type":"local_image","path":"/up/a,b.png"}]}}}"#,
    );
    assert_eq!(e.field, "params.input.content[image 1].path");
    assert!(
        e.message.contains("splits image paths at commas"),
        "{}",
        e.message
    );
}

#[test]
fn a_wrong_type_names_the_kind_not_the_value() {
    // A token sent where a map was due must not come back in the `end`.
    let e = invalid(
        r#"{"type":"run","id":"r","params":{"prompt":"x","mcp_servers":{"s":{"url":"http://127.0.0.1:1/mcp","http_headers":"Bearer sk-secret, expected \"x\""}}}}"#,
    );
    assert_eq!(e.field, "params.mcp_servers.s.http_headers");
    assert!(!e.message.contains("sk-secret"), "{}", e.message);
    assert!(
        e.message.contains("invalid type: a string, expected a map"),
        "{}",
        e.message
    );
    // Other kinds, and what serde says besides, stay as they were.
    let e = invalid(r#"{"type":"run","id":"r","params":{"prompt":"x","timeout_secs":"soon"}}"#);
    assert!(!e.message.contains("soon"), "{}", e.message);
    let e = invalid(r#"{"type":"run","id":"r","params":{"prompt":"x","model":7}}"#);
    assert!(e.message.contains("integer `7`"), "{}", e.message);
}

#[test]
fn resume_is_lower_cased_as_codex_prints_thread_ids() {
    let line = r#"{"type":"run","id":"r","params":{"prompt":"x","resume":"01A20258-9970-7D11-97DA-F3F1BBB388DB"}}"#;
    let Ok(Request::Run { params: Ok(p), .. }) = decode_request(line.as_bytes()) else {
        panic!("should decode");
    };
    assert_eq!(
        p.resume.as_deref(),
        Some("01a20258-9970-7d11-97da-f3f1bbb388db")
    );
}

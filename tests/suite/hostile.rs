//! Hostile input: every bad line gets a precise answer, in order, and the
//! run in flight is never disturbed. Plus a property test of the decoder.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::harness::Daemon;

/// What a line must be answered with.
enum Expect {
    Rejected(&'static str),
    /// An `end` for this id with this code.
    End(&'static str, &'static str),
}
use Expect::*;

fn run_line(id: &str, params: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": "run", "id": id, "params": params})).unwrap();
    line.push(b'\n');
    line
}

fn raw(text: &str) -> Vec<u8> {
    format!("{text}\n").into_bytes()
}

fn table() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let deep = format!(
        r#"{{"type":"run","id":"deep","params":{{"config":{{"x":{}1{}}}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let mut big = br#"{"type":"run","id":"huge","params":{"prompt":""#.to_vec();
    big.extend(vec![b'a'; 100 << 20]);
    big.extend_from_slice(b"\"}}\n");
    vec![
        ("open brace", raw("{"), Rejected("malformed_json")),
        ("close brace", raw("}"), Rejected("malformed_json")),
        ("null", raw("null"), Rejected("malformed_json")),
        (
            "form feeds only",
            raw("\x0c\x0c"),
            Rejected("malformed_json"),
        ),
        ("number", raw("42"), Rejected("malformed_json")),
        ("string", raw(r#""run""#), Rejected("malformed_json")),
        (
            "array of requests",
            raw(r#"[{"type":"run","id":"a"}]"#),
            Rejected("malformed_json"),
        ),
        (
            "truncated",
            raw(r#"{"type":"run","id":"t","params":{"prompt":"a"}"#),
            Rejected("malformed_json"),
        ),
        (
            "trailing garbage",
            raw(r#"{"type":"cancel","id":"live"} trailing"#),
            Rejected("malformed_json"),
        ),
        (
            "raw NUL in a string",
            b"{\"type\":\"run\",\"id\":\"n\0l\",\"params\":{}}\n".to_vec(),
            Rejected("malformed_json"),
        ),
        (
            "invalid UTF-8",
            b"{\"type\":\"run\",\"id\":\"\xc3\x28\",\"params\":{}}\n".to_vec(),
            Rejected("invalid_utf8"),
        ),
        (
            "lone surrogate",
            raw(r#"{"type":"run","id":"\ud800","params":{}}"#),
            Rejected("malformed_json"),
        ),
        (
            "deep nesting",
            deep.into_bytes().into_iter().chain([b'\n']).collect(),
            Rejected("malformed_json"),
        ),
        (
            "huge number",
            raw(r#"{"type":"run","id":1e999999}"#),
            Rejected("malformed_json"),
        ),
        (
            "numeric id",
            raw(r#"{"type":"run","id":5,"params":{"prompt":"x"}}"#),
            Rejected("missing_id"),
        ),
        (
            "empty id",
            raw(r#"{"type":"run","id":"","params":{"prompt":"x"}}"#),
            Rejected("missing_id"),
        ),
        (
            "null id",
            raw(r#"{"type":"run","id":null,"params":{"prompt":"x"}}"#),
            Rejected("missing_id"),
        ),
        (
            "no type",
            raw(r#"{"id":"x","params":{"prompt":"x"}}"#),
            Rejected("unknown_type"),
        ),
        (
            "upper-case type",
            raw(r#"{"type":"RUN","id":"x"}"#),
            Rejected("unknown_type"),
        ),
        (
            "numeric type",
            raw(r#"{"type":1,"id":"x"}"#),
            Rejected("unknown_type"),
        ),
        (
            "cancel of an unknown id",
            raw(r#"{"type":"cancel","id":"ghost"}"#),
            Rejected("unknown_id"),
        ),
        (
            "cancel with extras",
            raw(r#"{"type":"cancel","id":"live","force":true}"#),
            Rejected("invalid_request"),
        ),
        (
            "duplicate of the live run",
            run_line("live", json!({"prompt": "again"})),
            Rejected("duplicate_id"),
        ),
        ("100 MiB line", big, Rejected("line_too_long")),
        (
            "no params",
            raw(r#"{"type":"run","id":"p1"}"#),
            End("p1", "invalid_params"),
        ),
        (
            "params array",
            raw(r#"{"type":"run","id":"p2","params":[]}"#),
            End("p2", "invalid_params"),
        ),
        (
            "unknown param",
            run_line("p3", json!({"prompt": "x", "temprature": 1})),
            End("p3", "invalid_params"),
        ),
        (
            "type given twice",
            raw(r#"{"type":"cancel","type":"run","id":"tt","params":{"prompt":"x"}}"#),
            Rejected("malformed_json"),
        ),
        (
            "id given twice",
            raw(r#"{"type":"run","id":"i1","id":"i2","params":{"prompt":"x"}}"#),
            Rejected("malformed_json"),
        ),
        (
            "a param given twice",
            raw(r#"{"type":"run","id":"twice","params":{"prompt":"x","prompt":"y"}}"#),
            End("twice", "invalid_params"),
        ),
        (
            "id given twice after a param given twice",
            raw(
                r#"{"type":"run","id":"d1","params":{"prompt":"x","env":{"K":"1","K":"2"}},"id":"d2"}"#,
            ),
            Rejected("malformed_json"),
        ),
        (
            "newline in the id (codex gets it in a header)",
            run_line("id\nX-Evil: 1", json!({"prompt": "x"})),
            End("id\nX-Evil: 1", "invalid_params"),
        ),
        (
            "escaped NUL in the id (codex gets it in its environment)",
            raw(r#"{"type":"run","id":"n\u0000l","params":{"prompt":"x"}}"#),
            End("n\0l", "invalid_params"),
        ),
        (
            "an id over 4096 bytes",
            run_line(&"L".repeat(4097), json!({"prompt": "x"})),
            End("L".repeat(4097).leak(), "invalid_params"),
        ),
        (
            "unknown top-level field",
            raw(r#"{"type":"run","id":"p4","params":{"prompt":"x"},"priority":1}"#),
            End("p4", "invalid_params"),
        ),
        (
            "huge timeout",
            run_line("p5", json!({"prompt": "x", "timeout_secs": 1e300})),
            End("p5", "invalid_params"),
        ),
        (
            "negative timeout",
            run_line("p6", json!({"prompt": "x", "timeout_secs": -1})),
            End("p6", "invalid_params"),
        ),
        (
            "string timeout",
            run_line("p7", json!({"prompt": "x", "timeout_secs": "10"})),
            End("p7", "invalid_params"),
        ),
        (
            "unknown effort",
            run_line("p8", json!({"prompt": "x", "effort": "max"})),
            End("p8", "invalid_params"),
        ),
        (
            "input and prompt",
            run_line("p9", json!({"prompt": "x", "input": {"content": "y"}})),
            End("p9", "invalid_params"),
        ),
        (
            "empty content",
            run_line("p10", json!({"input": {"content": []}})),
            End("p10", "invalid_params"),
        ),
        (
            "no prompt at all",
            run_line("p11", json!({"model": "gpt-5.5"})),
            End("p11", "invalid_params"),
        ),
        (
            "server name with a space",
            run_line(
                "p12",
                json!({"prompt": "x", "mcp_servers": {"a b": {"url": "http://h/"}}}),
            ),
            End("p12", "invalid_params"),
        ),
        (
            "server name with TOML brackets",
            run_line(
                "p13",
                json!({"prompt": "x", "mcp_servers": {"a]\n[b": {"url": "http://h/"}}}),
            ),
            End("p13", "invalid_params"),
        ),
        (
            "server name with a quote",
            run_line(
                "p14",
                json!({"prompt": "x", "mcp_servers": {"a\"b": {"url": "http://h/"}}}),
            ),
            End("p14", "invalid_params"),
        ),
        (
            "colliding server names",
            run_line(
                "p15",
                json!({"prompt": "x", "mcp_servers": {"a.b": {"url": "http://h/"}, "a_b": {"url": "http://h/"}}}),
            ),
            End("p15", "invalid_params"),
        ),
        (
            "CR/LF in a header value",
            run_line(
                "p16",
                json!({"prompt": "x", "mcp_servers": {"s": {"url": "http://h/", "http_headers": {"X": "v\r\nInjected: 1"}}}}),
            ),
            End("p16", "invalid_params"),
        ),
        (
            "colon in a header name",
            run_line(
                "p17",
                json!({"prompt": "x", "mcp_servers": {"s": {"url": "http://h/", "http_headers": {"X:Y": "v"}}}}),
            ),
            End("p17", "invalid_params"),
        ),
        (
            "file URL",
            run_line(
                "p18",
                json!({"prompt": "x", "mcp_servers": {"s": {"url": "file:///etc/passwd"}}}),
            ),
            End("p18", "invalid_params"),
        ),
        (
            "javascript URL",
            run_line(
                "p19",
                json!({"prompt": "x", "mcp_servers": {"s": {"url": "javascript:alert(1)"}}}),
            ),
            End("p19", "invalid_params"),
        ),
        (
            "url and command",
            run_line(
                "p20",
                json!({"prompt": "x", "mcp_servers": {"s": {"url": "http://h/", "command": "x"}}}),
            ),
            End("p20", "invalid_params"),
        ),
        (
            "servers as a list",
            run_line(
                "p21",
                json!({"prompt": "x", "mcp_servers": [{"url": "http://h/"}]}),
            ),
            End("p21", "invalid_params"),
        ),
        (
            "env name with =",
            run_line("p22", json!({"prompt": "x", "env": {"A=B": "v"}})),
            End("p22", "invalid_params"),
        ),
        (
            "env overriding CODEX_HOME",
            run_line("p23", json!({"prompt": "x", "env": {"CODEX_HOME": "/"}})),
            End("p23", "invalid_params"),
        ),
        (
            "null in config",
            run_line("p24", json!({"prompt": "x", "config": {"a": null}})),
            End("p24", "invalid_params"),
        ),
        (
            "empty config key segment",
            run_line("p25", json!({"prompt": "x", "config": {"a..b": 1}})),
            End("p25", "invalid_params"),
        ),
        (
            "output_schema as a path",
            run_line(
                "p26",
                json!({"prompt": "x", "output_schema": "../../etc/passwd"}),
            ),
            End("p26", "invalid_params"),
        ),
        (
            "output_schema as an array",
            run_line("p27", json!({"prompt": "x", "output_schema": [1]})),
            End("p27", "invalid_params"),
        ),
        (
            "NUL in cwd",
            run_line("p28", json!({"prompt": "x", "cwd": "/tmp\u{0}/x"})),
            End("p28", "invalid_params"),
        ),
        (
            "cwd that does not exist",
            run_line(
                "p29",
                json!({"prompt": "x", "cwd": "/nonexistent/../../etc/x"}),
            ),
            End("p29", "invalid_params"),
        ),
        (
            "resume that looks like a flag",
            run_line("p30", json!({"prompt": "x", "resume": "--help"})),
            End("p30", "invalid_params"),
        ),
        (
            "profile with a path",
            run_line("p31", json!({"prompt": "x", "profile": "../../x"})),
            End("p31", "invalid_params"),
        ),
        (
            "empty model",
            run_line("p32", json!({"prompt": "x", "model": ""})),
            End("p32", "invalid_params"),
        ),
        (
            "integer over i64 in config",
            run_line(
                "p33",
                json!({"prompt": "x", "config": {"n": 18446744073709551615u64}}),
            ),
            End("p33", "invalid_params"),
        ),
    ]
}

#[tokio::test]
async fn a_table_of_bad_lines_each_gets_a_precise_answer() {
    let mut d = Daemon::start().await;
    let gate = d.run_at_gate("live", "still here").await;

    let table = table();
    assert!(table.len() >= 40);
    for (_, line, _) in &table {
        d.send_raw(line).await;
    }
    // Rejections come in line order; refused runs' ends (some decided only
    // when the turn starts) are matched by id.
    let mut answers = Vec::new();
    while answers.len() < table.len() {
        let line = d.next_line().await;
        if line["id"] == "live" {
            assert_eq!(line["type"], "event", "the live run was disturbed: {line}");
        } else {
            answers.push(line);
        }
    }
    let mut rejected = answers.iter().filter(|a| a["type"] == "rejected");
    for (name, _, expect) in &table {
        let answer = match expect {
            Rejected(code) => {
                let answer = rejected
                    .next()
                    .unwrap_or_else(|| panic!("{name}: no rejection left"));
                assert_eq!(answer["code"], *code, "{name}: {answer}");
                assert!(answer.get("id").is_none());
                answer
            }
            End(id, code) => {
                let answer = answers
                    .iter()
                    .find(|a| a["type"] == "end" && a["id"] == *id)
                    .unwrap_or_else(|| panic!("{name}: no end for {id}"));
                assert_eq!(answer["code"], *code, "{name}: {answer}");
                assert_eq!(answer["status"], "error");
                answer
            }
        };
        let error = answer["error"].as_str().unwrap();
        assert!(
            !error.is_empty() && !error.contains('\n'),
            "{name}: {answer}"
        );
        assert!(
            !error.contains("Injected"),
            "a refused header value is never echoed"
        );
    }

    gate.open().await;
    let live = d.collect_one("live").await;
    live.assert_ok();
    assert_eq!(live.agent_texts(), ["echo: still here (turn 1)"]);
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn toml_special_characters_in_values_are_escaped_not_refused() {
    let mut d = Daemon::start().await;
    let tricky = "v\" ]\n[evil]\\ 'x' \u{1F600}";
    d.run(
        "toml",
        json!({"prompt": tricky, "developer_instructions": tricky,
               "mcp_servers": {"s.v@1:x/y-z": {"url": "http://127.0.0.1:9/?q=\"]", "http_headers": {"X-Odd": "a\" = 1 # ]"}}}}),
    )
    .await;
    d.collect_one("toml").await.assert_ok();
    let record = d.record("toml");
    let config: toml_edit::DocumentMut = record["config_toml"].as_str().unwrap().parse().unwrap();
    assert!(config.get("evil").is_none());
    assert_eq!(config["developer_instructions"].as_str(), Some(tricky));
    let server = &config["mcp_servers"]["s.v@1:x/y-z"];
    assert_eq!(server["url"].as_str(), Some("http://127.0.0.1:9/?q=\"]"));
    assert_eq!(
        server["http_headers"]["X-Odd"].as_str(),
        Some("a\" = 1 # ]")
    );
    assert_eq!(record["stdin"], tricky);
    d.assert_clean_exit().await;
}

/// Arbitrary JSON, biased towards request-shaped objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        // Control characters too, which ids, thread ids and header values
        // must not carry into codex.
        "[ -~\\PC\\x00\\t\\n\\r\\x7f]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("run"),
            Just("cancel"),
            Just("prompt"),
            Just("mcp_servers"),
            Just("url")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            "[a-z_]{1,10}",
            prop_oneof![
                Just("type"),
                Just("id"),
                Just("params"),
                Just("prompt"),
                Just("input"),
                Just("content"),
                Just("mcp_servers"),
                Just("url"),
                Just("http_headers"),
                Just("config"),
                Just("env"),
                Just("resume"),
            ]
            .prop_map(str::to_owned),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    // Bounded so CI stays fast; raise with PROPTEST_CASES for a longer hunt.
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decoder_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = runner_protocol::decode_request(&bytes);
    }

    /// Arbitrary JSON never panics it.
    #[test]
    fn decoder_survives_arbitrary_json(value in json_value()) {
        let line = serde_json::to_vec(&value).unwrap();
        let _ = runner_protocol::decode_request(&line);
    }
}

/// Text with the characters that must not reach codex's argv or headers
/// (CR, LF, NUL, other controls) mixed into plain ones.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9_.-]{1,12}",
        1 => "[ -~\\PC\\x00\\t\\n\\r\\x7f]{0,12}",
        1 => Just("01a20258-9970-7d11-97da-f3f1bbb388db".to_owned()),
    ]
}

/// `run` requests that a client could plausibly send, every field drawn
/// from text that is often fine and sometimes hostile: many are accepted,
/// many refused, so the invariants below are checked on real acceptances.
fn run_request() -> impl Strategy<Value = Value> {
    let header = (tricky_text(), tricky_text());
    let server = (
        prop::option::of(prop_oneof![
            Just("http://127.0.0.1:9/mcp".to_owned()),
            tricky_text().prop_map(|t| format!("http://127.0.0.1:9/{t}")),
            tricky_text(),
        ]),
        prop::option::of(tricky_text()),
        prop::collection::vec(header, 0..3),
    )
        .prop_map(|(url, command, headers)| {
            let mut server = serde_json::Map::new();
            if let Some(url) = url {
                server.insert("url".into(), json!(url));
            }
            if let Some(command) = command {
                server.insert("command".into(), json!(command));
            }
            if !headers.is_empty() {
                let headers: serde_json::Map<String, Value> =
                    headers.into_iter().map(|(k, v)| (k, json!(v))).collect();
                server.insert("http_headers".into(), Value::Object(headers));
            }
            Value::Object(server)
        });
    (
        tricky_text(),
        tricky_text(),
        prop::option::of(tricky_text()),
        prop::collection::btree_map(tricky_text(), server, 0..3),
    )
        .prop_map(|(id, prompt, resume, servers)| {
            let mut params = json!({"prompt": prompt});
            if let Some(resume) = resume {
                params["resume"] = json!(resume);
            }
            if !servers.is_empty() {
                params["mcp_servers"] = json!(servers);
            }
            json!({"type": "run", "id": id, "params": params})
        })
}

/// What the decoder accepts upholds the invariants the daemon relies on
/// before spawning. Counts its acceptances, so that it cannot pass by
/// accepting nothing.
#[test]
fn accepted_requests_uphold_the_invariants() {
    use proptest::test_runner::{Config, TestRunner};
    let accepted = std::cell::Cell::new(0u32);
    let with_servers = std::cell::Cell::new(0u32);
    let cases = 2000;
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&run_request(), |value| {
            let line = serde_json::to_vec(&value).unwrap();
            let Ok(runner_protocol::Request::Run {
                id,
                params: Ok(params),
            }) = runner_protocol::decode_request(&line)
            else {
                return Ok(());
            };
            accepted.set(accepted.get() + 1);
            if !params.mcp_servers.is_empty() {
                with_servers.set(with_servers.get() + 1);
            }
            prop_assert!(!id.is_empty() && id.len() <= runner_protocol::MAX_RUN_ID_BYTES);
            prop_assert!(!id.chars().any(|c| c.is_ascii_control()));
            prop_assert!(!params
                .resume
                .iter()
                .any(|r| r.chars().any(|c| c.is_ascii_control())));
            prop_assert!(!params.prompt_text().trim().is_empty());
            for (name, server) in &params.mcp_servers {
                prop_assert!(name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:@/.-".contains(c)));
                prop_assert!(server.url.is_some() != server.command.is_some());
                for (key, value) in server.http_headers.iter().flatten() {
                    prop_assert!(!key.contains(['\r', '\n', '\0', ':']));
                    prop_assert!(!value.contains(['\r', '\n', '\0']));
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{} of {cases} accepted, {} with MCP servers",
        accepted.get(),
        with_servers.get()
    );
    assert!(
        accepted.get() >= cases / 10,
        "only {} of {cases} requests accepted: the invariants were hardly checked",
        accepted.get()
    );
    assert!(
        with_servers.get() >= cases / 50,
        "only {} accepted requests had MCP servers",
        with_servers.get()
    );
}

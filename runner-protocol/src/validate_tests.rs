use super::*;
use crate::params::{Input, McpServer, RunParams};

fn with_prompt() -> RunParams {
    RunParams {
        prompt: Some("hello".into()),
        ..RunParams::default()
    }
}

fn http(url: &str) -> McpServer {
    McpServer {
        url: Some(url.into()),
        ..McpServer::default()
    }
}

fn check_servers(servers: Vec<(&str, McpServer)>) -> Result<(), InvalidParams> {
    let mut p = with_prompt();
    p.mcp_servers = servers
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
    validate(&p)
}

#[test]
fn namespace_mapping_matches_codex() {
    assert_eq!(tool_namespace("a.b-c@d/e:f"), "mcp__a_b_c_d_e_f");
    assert_eq!(tool_namespace("plain_Name9"), "mcp__plain_Name9");
}

#[test]
fn input_is_required_and_exclusive() {
    assert!(validate(&RunParams::default())
        .unwrap_err()
        .message
        .contains("required"));
    let mut p = with_prompt();
    p.input = Some(Input {
        content: InputContent::Text("x".into()),
        name: None,
    });
    assert!(validate(&p).unwrap_err().message.contains("not both"));
    let p = RunParams {
        prompt: Some("  ".into()),
        ..RunParams::default()
    };
    assert!(validate(&p).unwrap_err().message.contains("no text"));
    let p = RunParams {
        input: Some(Input {
            content: InputContent::Parts(vec![]),
            name: None,
        }),
        ..RunParams::default()
    };
    assert_eq!(validate(&p).unwrap_err().field, "params.input.content");
}

#[test]
fn server_names_and_collisions() {
    assert!(check_servers(vec![("ok.name-1@x/y:z", http("http://h/mcp"))]).is_ok());
    let e = check_servers(vec![("bad name", http("http://h/"))]).unwrap_err();
    assert!(e.message.contains("must match"), "{}", e.message);
    let e = check_servers(vec![("bad]name", http("http://h/"))]).unwrap_err();
    assert!(e.message.contains("must match"));
    let e =
        check_servers(vec![("a.b", http("http://h/")), ("a_b", http("http://h/"))]).unwrap_err();
    assert!(e.message.contains("mcp__a_b"), "{}", e.message);
}

#[test]
fn urls_must_be_http() {
    for bad in [
        "ftp://h/",
        "file:///etc/passwd",
        "http://",
        "http:///x",
        "h",
        "http://a b/",
    ] {
        let e = check_servers(vec![("s", http(bad))]).unwrap_err();
        assert_eq!(e.field, "params.mcp_servers.s.url", "{bad}");
    }
    assert!(check_servers(vec![("s", http("https://example.com:8443/mcp?x=1"))]).is_ok());
    // A refused URL is not quoted: it may hold a password or a token.
    for (bad, why) in [
        (
            "ftp://bot:hunter2@h/",
            "must be an http:// or https:// URL, not ftp://",
        ),
        ("bot:hunter2@h", "must be an http:// or https:// URL"),
        (
            "http://bot:hunter2@h/a b",
            "contains whitespace or control characters",
        ),
        ("http://:hunter2", "has no host"),
    ] {
        let e = check_servers(vec![("s", http(bad))]).unwrap_err();
        assert_eq!(
            e.message,
            format!("params.mcp_servers.s.url: {why}"),
            "{bad}"
        );
    }
}

#[test]
fn header_injection_is_refused_without_echoing_the_value() {
    let mut s = http("http://h/");
    s.http_headers = Some([("X-Ok".to_owned(), "secret\r\nX-Evil: 1".to_owned())].into());
    let e = check_servers(vec![("s", s)]).unwrap_err();
    assert_eq!(e.field, "params.mcp_servers.s.http_headers.X-Ok");
    assert!(!e.message.contains("secret"), "{}", e.message);
    let mut s = http("http://h/");
    s.http_headers = Some([("Bad Name".to_owned(), "v".to_owned())].into());
    assert!(check_servers(vec![("s", s)])
        .unwrap_err()
        .message
        .contains("header name"));
}

#[test]
fn transport_fields_must_match() {
    let both = McpServer {
        url: Some("http://h/".into()),
        command: Some("x".into()),
        ..McpServer::default()
    };
    assert!(check_servers(vec![("s", both)])
        .unwrap_err()
        .message
        .contains("not both"));
    assert!(check_servers(vec![("s", McpServer::default())])
        .unwrap_err()
        .message
        .contains("needs"));
    let mut s = http("http://h/");
    s.args = Some(vec![]);
    assert_eq!(
        check_servers(vec![("s", s)]).unwrap_err().field,
        "params.mcp_servers.s.args"
    );
    let stdio = McpServer {
        command: Some("srv".into()),
        http_headers: Some(Default::default()),
        ..McpServer::default()
    };
    assert_eq!(
        check_servers(vec![("s", stdio)]).unwrap_err().field,
        "params.mcp_servers.s.http_headers"
    );
}

#[test]
fn no_string_codex_passes_to_the_os_may_hold_nul() {
    let stdio = |f: fn(&mut McpServer)| {
        let mut s = McpServer {
            command: Some("srv".into()),
            ..McpServer::default()
        };
        f(&mut s);
        check_servers(vec![("s", s)]).map_err(|e| e.field)
    };
    assert_eq!(stdio(|_| {}), Ok(()));
    assert_eq!(
        stdio(|s| s.args = Some(vec!["".into()])),
        Ok(()),
        "an empty arg is an arg"
    );
    for (f, field) in [
        (
            (|s: &mut McpServer| s.args = Some(vec!["a".into(), "b\0".into()]))
                as fn(&mut McpServer),
            "params.mcp_servers.s.args[1]",
        ),
        (
            |s| s.env_vars = Some(vec!["V\0".into()]),
            "params.mcp_servers.s.env_vars[0]",
        ),
        (
            |s| s.cwd = Some("/t\0mp".into()),
            "params.mcp_servers.s.cwd",
        ),
    ] {
        assert_eq!(stdio(f), Err(field.to_owned()));
    }
    let mut s = http("http://h/");
    s.bearer_token_env_var = Some("T\0K".into());
    assert_eq!(
        check_servers(vec![("s", s)]).unwrap_err().field,
        "params.mcp_servers.s.bearer_token_env_var"
    );
}

#[test]
fn argv_values_env_and_config() {
    let mut p = with_prompt();
    p.resume = Some("--help".into());
    assert_eq!(validate(&p).unwrap_err().field, "params.resume");
    let mut p = with_prompt();
    p.cwd = Some("a\0b".into());
    assert_eq!(validate(&p).unwrap_err().field, "params.cwd");
    let mut p = with_prompt();
    p.profile = Some("../etc".into());
    assert_eq!(validate(&p).unwrap_err().field, "params.profile");
    let mut p = with_prompt();
    p.env = [("CODEX_HOME".to_owned(), "/x".to_owned())].into();
    assert!(validate(&p).unwrap_err().message.contains("CODEX_HOME"));
    let mut p = with_prompt();
    p.env = [("A=B".to_owned(), "v".to_owned())].into();
    assert_eq!(validate(&p).unwrap_err().field, "params.env");
    let mut p = with_prompt();
    p.config = [("a..b".to_owned(), serde_json::json!(1))].into();
    assert_eq!(validate(&p).unwrap_err().field, "params.config");
    let mut p = with_prompt();
    p.config = [("a.b".to_owned(), serde_json::json!([1, null]))].into();
    assert!(validate(&p).unwrap_err().message.contains("null"));
    // Refused at once, not when the turn starts (as a config_error).
    p.config = [(
        "n".to_owned(),
        serde_json::json!({"deep": [9223372036854775808u64]}),
    )]
    .into();
    assert_eq!(
        validate(&p).unwrap_err().message,
        "params.config.n: an integer above 2^63-1 has no TOML equivalent"
    );
    p.config = [("n".to_owned(), serde_json::json!(9223372036854775807u64))].into();
    assert!(validate(&p).is_ok());
    let mut p = with_prompt();
    p.timeout_secs = Some(0.0);
    assert_eq!(validate(&p).unwrap_err().field, "params.timeout_secs");
    // A time a clock reading can hold, and the message says how much.
    p.timeout_secs = Some(crate::MAX_SECONDS);
    assert!(validate(&p).is_ok());
    p.timeout_secs = Some(2e9);
    assert!(validate(&p)
        .unwrap_err()
        .message
        .ends_with("at most 1e9, got 2000000000"));
    let mut p = with_prompt();
    p.agent_instance_hierarchy = Some("a\0b".into());
    assert_eq!(
        validate(&p).unwrap_err().field,
        "params.agent_instance_hierarchy"
    );
    let mut p = with_prompt();
    p.resume = Some("t\r\nX-Evil: 1".into());
    let e = validate(&p).unwrap_err();
    assert!(e.message.contains("not a thread id"), "{}", e.message);
    assert!(!e.message.contains('\r'), "the value is quoted escaped");
}

#[test]
fn resume_takes_a_thread_id_and_profile_a_name_codex_takes() {
    let id = "01a20258-9970-7d11-97da-f3f1bbb388db";
    for ok in [id.to_owned(), id.to_uppercase()] {
        let mut p = with_prompt();
        p.resume = Some(ok.clone());
        assert!(validate(&p).is_ok(), "{ok}");
    }
    // A name, a stray space, a cut id, a brace form: codex would look each up
    // as a thread name and start a new thread.
    for bad in [
        "my-thread",
        &format!(" {id}"),
        &id[..35],
        &format!("{{{id}}}"),
        &id.replace('-', ""),
        &id.replacen('0', "g", 1),
    ] {
        let mut p = with_prompt();
        p.resume = Some(bad.to_owned());
        let e = validate(&p).unwrap_err();
        assert_eq!(e.field, "params.resume", "{bad}");
        assert!(
            e.message.contains("codex would start a new thread"),
            "{}",
            e.message
        );
    }
    for ok in ["work", "team_b-2"] {
        let mut p = with_prompt();
        p.profile = Some(ok.into());
        assert!(validate(&p).is_ok(), "{ok}");
    }
    // codex 0.169.0 refuses these with a usage error.
    for bad in ["a.b", "a b", "", "x/y"] {
        let mut p = with_prompt();
        p.profile = Some(bad.into());
        let e = validate(&p).unwrap_err();
        assert_eq!(e.field, "params.profile", "{bad}");
    }
}

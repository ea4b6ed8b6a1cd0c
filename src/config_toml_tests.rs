use super::*;
use runner_protocol::RunParams;
use serde_json::json;

const BASE: &str = r#"# my codex config
model = "gpt-5.5"   # keep me
model_provider = "mock"

[model_providers.mock]
name = "Mock"
base_url = "http://127.0.0.1:9/v1"

[mcp_servers.base_http]
url = "http://127.0.0.1:1/mcp"
http_headers = { "Authorization" = "Bearer base" }

[mcp_servers.base_stdio]
command = "srv"

[mcp_servers.replaced]
url = "http://old/"

[features]
plugins = false
"#;

fn params(v: serde_json::Value) -> RunParams {
    serde_json::from_value(v).unwrap()
}

fn synth(base: &str, p: &RunParams) -> String {
    let mut doc = parse_base(Some(base)).unwrap();
    synthesize(&mut doc, "run-1", p).unwrap();
    doc.to_string()
}

fn parsed(text: &str) -> toml_edit::DocumentMut {
    text.parse().unwrap()
}

#[test]
fn base_config_survives_with_comments_and_keys() {
    let out = synth(BASE, &params(json!({"prompt": "x"})));
    assert!(
        out.starts_with("# my codex config\nmodel = \"gpt-5.5\"   # keep me\n"),
        "{out}"
    );
    let doc = parsed(&out);
    assert_eq!(
        doc["model_providers"]["mock"]["base_url"].as_str(),
        Some("http://127.0.0.1:9/v1")
    );
    assert_eq!(doc["features"]["plugins"].as_bool(), Some(false));
    assert_eq!(
        doc["mcp_servers"]["base_stdio"]["command"].as_str(),
        Some("srv")
    );
    assert!(doc["mcp_servers"]["base_stdio"]
        .get("http_headers")
        .is_none());
    assert_eq!(
        doc["mcp_servers"]["base_http"]["http_headers"]["Authorization"].as_str(),
        Some("Bearer base")
    );
    assert_eq!(
        doc["mcp_servers"]["base_http"]["http_headers"][RUN_ID_HEADER].as_str(),
        Some("run-1")
    );
}

#[test]
fn request_servers_get_defaults_headers_and_replace_base_ones() {
    let p = params(json!({"prompt": "x", "resume": "thread-9", "mcp_servers": {
        "replaced": {"url": "http://new/mcp", "http_headers": {"Authorization": "Bearer t", "x-codex-runner-run-id": "mine"}},
        "a.b/c@d": {"url": "https://h/", "required": false, "tools_approval": "prompt", "startup_timeout_sec": 2.5,
                   "enabled_tools": ["x"], "tool_timeout_sec": 9},
        "local": {"command": "srv", "args": ["--flag", "v"], "env": {"K": "V"}, "cwd": "/tmp"}
    }}));
    let doc = parsed(&synth(BASE, &p));
    let s = &doc["mcp_servers"];
    assert_eq!(s["replaced"]["url"].as_str(), Some("http://new/mcp"));
    assert_eq!(s["replaced"]["required"].as_bool(), Some(true));
    assert_eq!(
        s["replaced"]["default_tools_approval_mode"].as_str(),
        Some("approve")
    );
    let h = s["replaced"]["http_headers"].as_inline_table().unwrap();
    assert_eq!(
        h.get("x-codex-runner-run-id").and_then(|v| v.as_str()),
        Some("mine")
    );
    assert!(
        h.get(RUN_ID_HEADER).is_none(),
        "the request's own header wins"
    );
    assert_eq!(
        h.get(THREAD_ID_HEADER).and_then(|v| v.as_str()),
        Some("thread-9")
    );
    let odd = &s["a.b/c@d"];
    assert_eq!(odd["required"].as_bool(), Some(false));
    assert_eq!(odd["default_tools_approval_mode"].as_str(), Some("prompt"));
    assert_eq!(odd["startup_timeout_sec"].as_float(), Some(2.5));
    assert_eq!(odd["tool_timeout_sec"].as_float(), Some(9.0));
    assert_eq!(odd["http_headers"][RUN_ID_HEADER].as_str(), Some("run-1"));
    let local = &s["local"];
    assert_eq!(local["args"].as_array().unwrap().len(), 2);
    assert_eq!(local["env"]["K"].as_str(), Some("V"));
    assert!(
        local.get("http_headers").is_none(),
        "stdio servers take no headers"
    );
    assert_eq!(
        s["base_http"]["http_headers"][THREAD_ID_HEADER].as_str(),
        Some("thread-9")
    );
}

#[test]
fn servers_added_through_config_get_the_turn_headers_too() {
    let p = params(json!({
        "prompt": "x",
        "resume": "t-1",
        "config": {"mcp_servers.extra": {"url": "http://h/", "http_headers": {"A": "b"}}},
    }));
    let doc = parsed(&synth("", &p));
    let headers = &doc["mcp_servers"]["extra"]["http_headers"];
    assert_eq!(headers["A"].as_str(), Some("b"));
    assert_eq!(headers[RUN_ID_HEADER].as_str(), Some("run-1"));
    assert_eq!(headers[THREAD_ID_HEADER].as_str(), Some("t-1"));
}

#[test]
fn mapped_params_and_overrides() {
    let p = params(
        json!({"prompt": "x", "effort": "xhigh", "web_search_enabled": true,
        "approval_policy": "on-request", "network_access_enabled": true,
        "base_instructions": "be brief", "developer_instructions": "dev", "compact_prompt": "cp",
        "config": {"features": {"web_search_request": true}, "model_providers.mock.name": "Other",
                   "tui.theme": "dark", "list": [1, 2.5, "x"], "big": 9007199254740993i64}}),
    );
    let doc = parsed(&synth(BASE, &p));
    assert_eq!(doc["model_reasoning_effort"].as_str(), Some("xhigh"));
    assert_eq!(doc["web_search"].as_str(), Some("live"));
    assert_eq!(doc["approval_policy"].as_str(), Some("on-request"));
    assert_eq!(
        doc["sandbox_workspace_write"]["network_access"].as_bool(),
        Some(true)
    );
    assert_eq!(doc["instructions"].as_str(), Some("be brief"));
    assert_eq!(doc["developer_instructions"].as_str(), Some("dev"));
    assert_eq!(doc["compact_prompt"].as_str(), Some("cp"));
    assert_eq!(
        doc["features"]["plugins"].as_bool(),
        Some(false),
        "objects merge"
    );
    assert_eq!(doc["features"]["web_search_request"].as_bool(), Some(true));
    assert_eq!(
        doc["model_providers"]["mock"]["name"].as_str(),
        Some("Other")
    );
    assert_eq!(
        doc["model_providers"]["mock"]["base_url"].as_str(),
        Some("http://127.0.0.1:9/v1")
    );
    assert_eq!(doc["tui"]["theme"].as_str(), Some("dark"));
    assert_eq!(doc["list"].as_array().unwrap().len(), 3);
    assert_eq!(doc["big"].as_integer(), Some(9007199254740993));
}

#[test]
fn toml_special_characters_are_escaped() {
    let p = params(json!({"prompt": "x", "mcp_servers": {
        "we\"ird": {"url": "http://h/"}}}));
    // The name is refused by validation before synthesis; synthesis itself
    // must still never produce invalid TOML from odd strings.
    let mut doc = parse_base(None).unwrap();
    synthesize(&mut doc, "id\"]\n[evil]", &p).unwrap();
    let out = doc.to_string();
    let reparsed = parsed(&out);
    assert!(reparsed.get("evil").is_none(), "{out}");
    assert_eq!(
        reparsed["mcp_servers"]["we\"ird"]["http_headers"][RUN_ID_HEADER].as_str(),
        Some("id\"]\n[evil]")
    );
}

#[test]
fn invalid_base_and_out_of_range_numbers_are_errors() {
    assert!(matches!(
        parse_base(Some("x = = 1")),
        Err(ConfigError::BaseInvalid(_))
    ));
    // Where and why, on one line, without the line's text (a secret).
    let base = "model = \"m\"\n[mcp_servers.m]\nhttp_headers = { A = \"Bearer sk-SECRET\"\n";
    let error = parse_base(Some(base)).unwrap_err().to_string();
    assert_eq!(
        error,
        "base config.toml is not valid TOML: line 3, column 40: unclosed inline table, expected `}`"
    );
    assert!(std::error::Error::source(&parse_base(Some(base)).unwrap_err()).is_none());
    let mut doc = parse_base(Some("mcp_servers = 5")).unwrap();
    let p = params(json!({"prompt": "x"}));
    assert!(matches!(
        synthesize(&mut doc, "r", &p),
        Err(ConfigError::NotATable(_))
    ));
    let mut doc = parse_base(None).unwrap();
    let p = params(json!({"prompt": "x", "config": {"n": 18446744073709551615u64}}));
    assert!(matches!(
        synthesize(&mut doc, "r", &p),
        Err(ConfigError::Number(_))
    ));
}

#[test]
fn a_request_server_sharing_a_base_servers_tool_namespace_is_an_error() {
    let base = "[mcp_servers.a_b]\nurl = \"http://127.0.0.1:1/mcp\"\n";
    let mut doc = parse_base(Some(base)).unwrap();
    let p =
        params(json!({"prompt": "x", "mcp_servers": {"a.b": {"url": "http://127.0.0.1:2/mcp"}}}));
    let error = synthesize(&mut doc, "r", &p).unwrap_err();
    assert!(
        matches!(&error, ConfigError::NamespaceClash { ours, theirs, namespace }
            if ours == "a.b" && theirs == "a_b" && namespace == "mcp__a_b"),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("params.mcp_servers.a.b: "),
        "{error}"
    );
    // The same name replaces the base server, as before.
    let mut doc = parse_base(Some(base)).unwrap();
    let p =
        params(json!({"prompt": "x", "mcp_servers": {"a_b": {"url": "http://127.0.0.1:2/mcp"}}}));
    synthesize(&mut doc, "r", &p).unwrap();
    assert_eq!(
        doc["mcp_servers"]["a_b"]["url"].as_str(),
        Some("http://127.0.0.1:2/mcp")
    );
}

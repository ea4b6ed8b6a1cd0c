//! The support crate against the REAL codex 0.169.0, without the daemon:
//! proves the mock model and the MCP probes speak what codex speaks, and pins
//! the CLI behaviours the daemon relies on.
//!
//! Skipped (loudly) when codex is not installed and `CI` is unset; run
//! `scripts/install-codex` first.

mod common;

use std::time::Duration;

use codex_runner_test_support::{
    codex_config_toml, McpHttpServer, MockModel, Reply, Script, INPUT_TOKENS,
};
use common::{real_codex, toml_str, Codex};
use serde_json::{json, Value};

macro_rules! codex_or_skip {
    () => {
        match real_codex() {
            Some(bin) => bin,
            None => return,
        }
    };
}

/// `[mcp_servers.probe]` for the HTTP probe, with the headers of the brief.
fn probe_toml(url: &str, approval: &str) -> String {
    format!(
        r#"
[mcp_servers.probe]
url = {url}
http_headers = {{ "Authorization" = "Bearer t0ken", "X-Custom" = "v" }}
default_tools_approval_mode = "{approval}"
required = true
"#,
        url = toml_str(url)
    )
}

#[tokio::test]
async fn plain_message_turn() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::queue([Reply::message("hello from the mock")]));
    let codex = Codex::new(bin, &codex_config_toml(&model.base_url()));

    let run = codex.exec(&["-"], "say hello").await;

    run.assert_ok();
    let types = run.types();
    assert_eq!(types.first(), Some(&"thread.started"), "{run}");
    assert_eq!(run.item("agent_message")["text"], "hello from the mock");
    let usage = &run.events.last().unwrap()["usage"];
    assert_eq!(usage["input_tokens"], INPUT_TOKENS, "{run}");
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].prompt(), Some("say hello"));
    assert_eq!(requests[0].header("authorization"), Some("Bearer test-key"));
    assert_eq!(requests[0].header("thread-id"), Some(run.thread_id()));
}

#[tokio::test]
async fn http_mcp_tool_gets_the_configured_headers() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mcp = McpHttpServer::start();
    let config = codex_config_toml(&model.base_url()) + &probe_toml(&mcp.url(), "approve");
    let codex = Codex::new(bin, &config);

    let run = codex.exec(&["-"], "call whoami on probe").await;

    run.assert_ok();
    let item = run.item("mcp_tool_call");
    assert_eq!(
        (&item["server"], &item["tool"], &item["status"]),
        (&json!("probe"), &json!("whoami"), &json!("completed")),
        "{run}"
    );
    let calls = mcp.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].headers.get("authorization").map(String::as_str),
        Some("Bearer t0ken")
    );
    assert_eq!(
        calls[0].headers.get("x-custom").map(String::as_str),
        Some("v")
    );
    assert!(
        calls[0].headers.contains_key("mcp-session-id"),
        "{:?}",
        calls[0].headers
    );
    let turn_meta = &calls[0].meta["x-codex-turn-metadata"];
    assert_eq!(turn_meta["thread_id"], run.thread_id(), "{}", calls[0].meta);
    // whoami's answer reached the model, quoted by the mock's final message.
    let requests = model.requests();
    assert_eq!(
        requests.len(),
        3,
        "prompt, tool_search_output, function_call_output"
    );
    assert_eq!(
        requests[1].last_input().unwrap()["type"],
        "tool_search_output"
    );
    assert!(requests[2].input_contains("t0ken"));
    let text = run.item("agent_message")["text"].as_str().unwrap();
    assert!(
        text.starts_with("tool whoami returned: ") && text.contains("x-custom"),
        "{text}"
    );
}

#[tokio::test]
async fn mutating_tool_runs_only_when_approved_in_config() {
    let bin = codex_or_skip!();
    let reply = || Reply::mcp_tool("probe", "write_note", json!({"text": "hi"}));

    let model = MockModel::start(Script::queue([reply()]));
    let mcp = McpHttpServer::start();
    let approved = Codex::new(
        bin.clone(),
        &(codex_config_toml(&model.base_url()) + &probe_toml(&mcp.url(), "approve")),
    );
    let run = approved.exec(&["-"], "note it").await;
    run.assert_ok();
    let item = run.item("mcp_tool_call");
    assert_eq!(item["status"], "completed", "{run}");
    assert_eq!(item["result"]["content"][0]["text"], "noted: hi", "{run}");
    assert_eq!(mcp.calls().len(), 1);

    let model = MockModel::start(Script::queue([reply()]));
    let mcp = McpHttpServer::start();
    let prompted = Codex::new(
        bin,
        &(codex_config_toml(&model.base_url()) + &probe_toml(&mcp.url(), "prompt")),
    );
    let run = prompted.exec(&["-"], "note it").await;
    run.assert_ok();
    let item = run.item("mcp_tool_call");
    assert_eq!(item["status"], "failed", "{run}");
    let error = item["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("approval"), "{run}");
    assert!(
        mcp.calls().is_empty(),
        "the server must not see an unapproved call"
    );
}

#[tokio::test]
async fn resume_sends_the_thread_history() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let codex = Codex::new(bin, &codex_config_toml(&model.base_url()));
    let first = codex.exec(&["-"], "first prompt 7f3a").await;
    first.assert_ok();
    let id = first.thread_id().to_owned();

    let second = codex.exec(&["resume", &id, "-"], "second prompt").await;

    second.assert_ok();
    assert_eq!(second.thread_id(), id);
    let request = &model.requests()[1];
    assert_eq!(request.prompt(), Some("second prompt"));
    assert!(request
        .texts_of_role("user")
        .iter()
        .any(|t| t.contains("first prompt 7f3a")));
    assert!(request
        .texts_of_role("assistant")
        .contains(&"ok: first prompt 7f3a"));
    // usage is cumulative over the thread
    assert_eq!(
        second.events.last().unwrap()["usage"]["input_tokens"],
        2 * INPUT_TOKENS
    );
}

/// Where flags go with `resume`: exec's own flags BEFORE `resume` apply to
/// the resumed turn (`-C` exists only there), except that exec's `-i` is
/// variadic and swallows `resume ID -` (use `--image=FILE`, or `-i` after
/// `resume`, where it takes one file).
#[tokio::test]
async fn flags_before_resume_apply_to_the_resumed_turn() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let codex = Codex::new(bin, &codex_config_toml(&model.base_url()));
    let id = codex.exec(&["-"], "start").await.thread_id().to_owned();
    let work = codex.work.path();
    std::fs::write(work.join("red.png"), RED_PNG).unwrap();
    std::fs::create_dir(work.join("elsewhere")).unwrap();
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
    std::fs::write(work.join("schema.json"), schema.to_string()).unwrap();

    let flags = [
        "-m",
        "gpt-5.4",
        "--image=red.png",
        "-C",
        "elsewhere",
        "--output-schema",
        "schema.json",
    ];
    let run = codex
        .exec(&[&flags[..], &["resume", &id, "-"]].concat(), "resumed")
        .await;

    run.assert_ok();
    assert_eq!(run.thread_id(), id);
    let request = model.requests().pop().unwrap();
    assert_eq!(request.body["model"], "gpt-5.4");
    assert!(
        request
            .input()
            .iter()
            .any(|i| i.to_string().contains("input_image")),
        "image attached"
    );
    let elsewhere = std::fs::canonicalize(work.join("elsewhere")).unwrap();
    assert!(request.input_contains(&format!("<cwd>{}</cwd>", elsewhere.display())));
    assert_eq!(request.body["text"]["format"]["schema"], schema);

    // `resume` has no -C of its own ...
    let run = codex
        .exec(&["resume", "-C", "elsewhere", &id, "-"], "x")
        .await;
    assert_eq!(run.code, Some(2), "{run}");
    // ... and exec's variadic -i eats `resume ID -`: a NEW thread starts.
    let run = codex
        .exec(&["-i", "red.png", "resume", &id, "-"], "x")
        .await;
    assert_ne!(run.thread_id(), id, "{run}");
}

/// `instructions` replaces the base instructions (sent as the first
/// developer message: gpt-5.5 requests have no top-level `instructions`),
/// `developer_instructions` leads the second developer message, and
/// `web_search = "live"` flips the web_search tool's `external_web_access`.
#[tokio::test]
async fn instruction_and_web_search_config_keys() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let base = codex_config_toml(&model.base_url());
    let config = format!("instructions = \"BASE-7c1\"\ndeveloper_instructions = \"DEV-9d2\"\nweb_search = \"live\"\n{base}");
    let codex = Codex::new(bin, &config);

    codex.exec(&["-"], "hi").await.assert_ok();

    let request = model.requests().pop().unwrap();
    assert_eq!(request.body.get("instructions"), None);
    let developer: Vec<&Value> = request
        .input()
        .iter()
        .filter(|i| i["role"] == "developer")
        .collect();
    assert_eq!(
        developer[0]["content"][0]["text"], "BASE-7c1",
        "{}",
        request.body
    );
    assert_eq!(
        developer[1]["content"][0]["text"], "DEV-9d2",
        "{}",
        request.body
    );
    assert_eq!(
        request.tool("web_search").unwrap()["external_web_access"],
        true
    );
}

#[tokio::test]
async fn stdio_mcp_tool_runs_and_the_server_stops_with_codex() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let codex = Codex::new(bin, "");
    let pidfile = codex.work.path().join("stdio.pid");
    let config = codex_config_toml(&model.base_url())
        + &format!(
            "\n[mcp_servers.stdio]\ncommand = {}\nenv = {{ MCP_STDIO_PIDFILE = {} }}\nrequired = true\n",
            toml_str(env!("CARGO_BIN_EXE_mcp-stdio-probe")),
            toml_str(pidfile.to_str().unwrap())
        );
    std::fs::write(codex.home.path().join("config.toml"), config).unwrap();

    let run = codex
        .exec(&["-"], r#"call echo on stdio with {"text": "hello"}"#)
        .await;

    run.assert_ok();
    let item = run.item("mcp_tool_call");
    assert_eq!(item["status"], "completed", "{run}");
    assert_eq!(item["result"]["content"][0]["text"], "echo: hello");
    let pid = std::fs::read_to_string(&pidfile).expect("the probe wrote its pid");
    // Codex stops its stdio servers as it exits.
    codex_runner_test_support::wait_gone(pid.trim().parse().unwrap(), Duration::from_secs(5)).await;
}

/// Each failure reply, repeated, fails the turn after codex's one retry
/// (`stream_max_retries = 1` in the base config); the retry notice is a
/// non-fatal `error` event. Codex replaces a 500's message with its own.
#[tokio::test]
async fn failure_replies_fail_the_turn_after_one_retry() {
    let bin = codex_or_skip!();
    let cases = [
        (
            Reply::failed("boom"),
            "stream disconnected before completion: boom",
        ),
        (
            Reply::http_401(),
            "unexpected status 401 Unauthorized: mock: invalid api key",
        ),
        (Reply::http_500(), "experiencing high demand"),
    ];
    let runs = cases.map(|(reply, want)| {
        let bin = bin.clone();
        async move {
            let model = MockModel::start(Script::from_fn(move |_| reply.clone()));
            let run = Codex::new(bin, &codex_config_toml(&model.base_url()))
                .exec(&["-"], "hi")
                .await;
            (run, model.requests().len(), want)
        }
    });
    for (run, requests, want) in futures::future::join_all(runs).await {
        assert_eq!(run.code, Some(1), "{run}");
        assert_eq!(requests, 2, "{run}");
        assert_eq!(run.types()[2..], ["error", "error", "turn.failed"], "{run}");
        assert!(
            run.events[2]["message"]
                .as_str()
                .unwrap()
                .starts_with("Reconnecting... 1/1"),
            "{run}"
        );
        let message = run.events.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains(want), "{run}");
    }
}

/// A failure followed by a good reply: the retry succeeds and the turn
/// completes, with the retry notice still reported as an `error` event.
#[tokio::test]
async fn one_failure_is_retried() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::queue([
        Reply::failed("blip"),
        Reply::message("recovered"),
    ]));
    let run = Codex::new(bin, &codex_config_toml(&model.base_url()))
        .exec(&["-"], "hi")
        .await;
    run.assert_ok();
    assert_eq!(
        run.types(),
        [
            "thread.started",
            "turn.started",
            "error",
            "item.completed",
            "turn.completed"
        ],
        "{run}"
    );
    assert_eq!(run.item("agent_message")["text"], "recovered");
}

/// A stalled response keeps codex waiting (its stream idle timeout is
/// minutes), so only the caller's timeout or cancel ends the turn.
#[tokio::test]
async fn stalled_model_keeps_codex_waiting() {
    let bin = codex_or_skip!();
    let model = MockModel::start(Script::queue([Reply::Stall]));
    let codex = Codex::new(bin, &codex_config_toml(&model.base_url()));
    let mut child = codex.spawn(&["-"], "hi").await;
    model.wait_for_requests(1, common::EXEC_TIMEOUT).await;
    let waited = tokio::time::timeout(Duration::from_millis(700), child.wait()).await;
    assert!(waited.is_err(), "codex exited during a stall: {waited:?}");
    child.kill().await.unwrap();
}

/// A 1x1 red PNG.
const RED_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0xc9, 0xfe, 0x92, 0xef, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

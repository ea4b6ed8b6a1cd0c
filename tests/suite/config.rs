//! Config synthesis as codex sees it: the fake codex records its argv, env,
//! stdin and the CODEX_HOME config.toml of each turn.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use super::harness::{files_but_links, Daemon};

const BASE_CONFIG: &str = r#"# the user's own config: comments survive
model = "gpt-5.5"
model_provider = "mock"

[model_providers.mock]
name = "Mock" # inline comment
base_url = "http://127.0.0.1:9/v1"
wire_api = "responses"

[mcp_servers.base_server]
url = "http://127.0.0.1:9/base"

[mcp_servers.shadowed]
url = "http://127.0.0.1:9/old"
"#;

fn argv(record: &Value) -> Vec<String> {
    record["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn base_config_is_kept_and_request_servers_layered_over_it() {
    let mut d = Daemon::builder().base_config(BASE_CONFIG).start().await;
    d.run(
        "cfg",
        json!({
            "prompt": "x",
            "effort": "high",
            "web_search_enabled": true,
            "mcp_servers": {
                "probe": {"url": "http://127.0.0.1:9/mcp", "http_headers": {"Authorization": "Bearer tok-secret-1"}},
                "shadowed": {"url": "http://127.0.0.1:9/new", "required": false, "tools_approval": "prompt"},
                "local": {"command": "my-mcp", "args": ["--port", "0"], "env": {"API_KEY": "stdio-secret-2"}}
            },
            "config": {"features": {"plugins": false}}
        }),
    )
    .await;
    let run = d.collect_one("cfg").await;
    run.assert_ok();
    let record = d.record("cfg");
    let text = record["config_toml"].as_str().unwrap();
    assert!(
        text.starts_with("# the user's own config: comments survive\n"),
        "{text}"
    );
    assert!(text.contains("name = \"Mock\" # inline comment"));
    let config: toml_edit::DocumentMut = text.parse().unwrap();
    assert_eq!(config["model_provider"].as_str(), Some("mock"));
    assert_eq!(config["model_reasoning_effort"].as_str(), Some("high"));
    assert_eq!(config["web_search"].as_str(), Some("live"));
    assert_eq!(config["features"]["plugins"].as_bool(), Some(false));
    let servers = &config["mcp_servers"];
    assert_eq!(
        servers["base_server"]["url"].as_str(),
        Some("http://127.0.0.1:9/base")
    );
    assert_eq!(
        servers["base_server"]["http_headers"]["X-Codex-Runner-Run-Id"].as_str(),
        Some("cfg")
    );
    let probe = &servers["probe"];
    assert_eq!(probe["required"].as_bool(), Some(true));
    assert_eq!(
        probe["default_tools_approval_mode"].as_str(),
        Some("approve")
    );
    assert_eq!(
        probe["http_headers"]["Authorization"].as_str(),
        Some("Bearer tok-secret-1")
    );
    assert_eq!(
        probe["http_headers"]["X-Codex-Runner-Run-Id"].as_str(),
        Some("cfg")
    );
    assert!(
        probe["http_headers"]
            .get("X-Codex-Runner-Thread-Id")
            .is_none(),
        "not resuming"
    );
    let shadowed = &servers["shadowed"];
    assert_eq!(shadowed["url"].as_str(), Some("http://127.0.0.1:9/new"));
    assert_eq!(shadowed["required"].as_bool(), Some(false));
    assert_eq!(
        shadowed["default_tools_approval_mode"].as_str(),
        Some("prompt")
    );
    assert_eq!(servers["local"]["command"].as_str(), Some("my-mcp"));
    assert_eq!(
        servers["local"]["env"]["API_KEY"].as_str(),
        Some("stdio-secret-2")
    );

    // Private while it existed, emptied after (its config.toml held
    // secrets): a home kept for a later turn holds only links.
    assert_eq!(record["codex_home_mode"].as_u64().unwrap() & 0o777, 0o700);
    assert_eq!(record["config_toml_mode"].as_u64().unwrap() & 0o777, 0o600);
    let home = record["codex_home"].as_str().unwrap();
    let left = files_but_links(std::path::Path::new(home));
    assert!(left.is_empty(), "the turn's files outlived it: {left:?}");
    assert!(d.leftover_turn_files().is_empty());
    let root_mode = std::fs::metadata(d.turn_root.path().join("turns"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(root_mode & 0o777, 0o700);
    // The base config itself is untouched.
    assert_eq!(
        std::fs::read_to_string(d.base_home().join("config.toml")).unwrap(),
        BASE_CONFIG
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn argv_carries_flags_and_never_secrets() {
    let mut d = Daemon::builder().env("RUST_LOG", "trace").start().await;
    let workdir = tempfile::tempdir().unwrap();
    let cwd = workdir.path().to_str().unwrap();
    let image = workdir.path().join("a.png");
    std::fs::write(&image, b"\x89PNG").unwrap();
    let image = image.to_str().unwrap();
    d.run(
        "flags",
        json!({
            "model": "gpt-5.5",
            "sandbox": "workspace-write",
            "cwd": cwd,
            "additional_directories": ["/tmp"],
            "output_schema": {"type": "object", "properties": {"answer": {"type": "string"}}},
            "input": {"content": [{"type": "text", "text": "look"}, {"type": "local_image", "path": image}]},
            "env": {"MY_TOKEN": "env-secret-3"},
            "mcp_servers": {"probe": {"url": "http://127.0.0.1:9/mcp", "http_headers": {"Authorization": "Bearer hdr-secret-4"}}}
        }),
    )
    .await;
    d.collect_one("flags").await.assert_ok();
    let record = d.record("flags");
    let argv = argv(&record);
    let home = record["codex_home"].as_str().unwrap();
    assert_eq!(
        argv,
        [
            "exec".to_owned(),
            "--json".into(),
            "--skip-git-repo-check".into(),
            "--model=gpt-5.5".into(),
            "--sandbox=workspace-write".into(),
            format!("--cd={cwd}"),
            "--add-dir=/tmp".into(),
            format!("--output-schema={home}/output-schema.json"),
            format!("--image={image}"),
            "-".into(),
        ]
    );
    assert_eq!(record["stdin"], "look");
    assert_eq!(
        record["output_schema"]["properties"]["answer"]["type"],
        "string"
    );
    assert_eq!(record["env"]["MY_TOKEN"], "env-secret-3");
    assert_eq!(record["env"]["RUST_BACKTRACE"], "0");
    assert_eq!(record["env"]["CODEX_RUNNER_RUN_ID"], "flags");
    assert_eq!(record["env"]["CODEX_HOME"], home);
    // After the exit, when the whole log has been read.
    d.assert_clean_exit().await;
    for secret in ["env-secret-3", "hdr-secret-4"] {
        assert!(argv.iter().all(|a| !a.contains(secret)), "{secret} in argv");
        assert!(
            !d.stderr().contains(secret),
            "{secret} in the daemon's trace log"
        );
    }
}

/// Codex runs the model's shell commands, which inherit what codex holds: a
/// descriptor the orchestrator left open on the daemon (a socket, a log)
/// must not reach them. Codex gets its three pipes and nothing else.
#[tokio::test]
async fn codex_inherits_only_its_stdio() {
    const LEAKED: i32 = 77;
    let mut d = Daemon::builder().inherited_fd(LEAKED).start().await;
    // The daemon really holds it (else this test checks nothing).
    let held = std::fs::read_link(format!("/proc/{}/fd/{LEAKED}", d.pid())).unwrap();
    assert_eq!(held, std::path::Path::new("/dev/null"));
    d.run("fds", json!({"prompt": "hi"})).await;
    d.collect_one("fds").await.assert_ok();
    let fds = d.record("fds")["fds"].as_object().unwrap().clone();
    let mut numbers: Vec<&str> = fds.keys().map(String::as_str).collect();
    numbers.sort();
    assert_eq!(numbers, ["0", "1", "2"], "codex was handed {fds:?}");
    for fd in ["0", "1", "2"] {
        let target = fds[fd].as_str().unwrap();
        assert!(target.starts_with("pipe:"), "fd {fd} is {target}");
    }
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn resume_lands_on_the_shared_sessions_dir() {
    let mut d = Daemon::start().await;
    d.run(
        "t1",
        json!({"prompt": "first", "mcp_servers": {"probe": {"url": "http://127.0.0.1:9/mcp"}}}),
    )
    .await;
    let first = d.collect_one("t1").await;
    first.assert_ok();
    let thread = first.end["thread_id"].as_str().unwrap().to_owned();

    d.run("t2", json!({"prompt": "second", "resume": thread, "mcp_servers": {"probe": {"url": "http://127.0.0.1:9/mcp"}}})).await;
    let second = d.collect_one("t2").await;
    second.assert_ok();
    assert_eq!(second.end["thread_id"], thread.as_str());
    assert_eq!(second.agent_texts(), ["echo: second (turn 2)"]);

    let record = d.record("t2");
    let argv = argv(&record);
    assert_eq!(&argv[argv.len() - 3..], ["resume", thread.as_str(), "-"]);
    let sessions = &record["codex_home_entries"]["sessions"];
    assert_eq!(sessions["kind"], "symlink");
    assert_eq!(
        sessions["target"],
        d.base_home().join("sessions").to_str().unwrap()
    );
    assert_eq!(
        record["codex_home_entries"]["thread-writer-locks"]["kind"],
        "symlink"
    );
    let config: toml_edit::DocumentMut = record["config_toml"].as_str().unwrap().parse().unwrap();
    let headers = &config["mcp_servers"]["probe"]["http_headers"];
    assert_eq!(headers["X-Codex-Runner-Run-Id"].as_str(), Some("t2"));
    assert_eq!(
        headers["X-Codex-Runner-Thread-Id"].as_str(),
        Some(thread.as_str())
    );

    // The rollout lives in the base home and holds both turns.
    let rollout = find_rollout(&d.base_home().join("sessions"), &thread).expect("a rollout file");
    assert_eq!(std::fs::read_to_string(rollout).unwrap().lines().count(), 2);

    d.run(
        "t3",
        json!({"prompt": "x", "resume": "01a1fce7-0000-7000-8000-000000000000"}),
    )
    .await;
    let unknown = d.collect_one("t3").await;
    assert_eq!(unknown.code(), Some("codex_exited"));
    assert!(
        unknown.error().contains("no rollout found"),
        "{}",
        unknown.end
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn relative_home_and_turn_dir_are_taken_from_the_daemons_cwd() {
    // Before, a turn's links pointed at `<relative base>/sessions` read from
    // the turn's own dir: nothing there, so no rollout could be written.
    let mut d = Daemon::builder().relative_paths().start().await;
    d.run("t1", json!({"prompt": "first"})).await;
    let first = d.collect_one("t1").await;
    first.assert_ok();
    let thread = first.end["thread_id"].as_str().unwrap().to_owned();
    d.run("t2", json!({"prompt": "second", "resume": thread}))
        .await;
    let second = d.collect_one("t2").await;
    second.assert_ok();
    assert_eq!(second.agent_texts(), ["echo: second (turn 2)"]);

    let record = d.record("t2");
    let home = record["codex_home"].as_str().unwrap();
    assert!(
        home.starts_with(d.turn_root.path().to_str().unwrap()),
        "{home}"
    );
    assert_eq!(
        record["codex_home_entries"]["sessions"]["target"],
        d.base_home().join("sessions").to_str().unwrap()
    );
    let rollout = find_rollout(&d.base_home().join("sessions"), &thread).expect("a rollout file");
    assert_eq!(std::fs::read_to_string(rollout).unwrap().lines().count(), 2);
    d.assert_clean_exit().await;
}

fn find_rollout(dir: &std::path::Path, thread: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_rollout(&path, thread) {
                return Some(found);
            }
        } else if path.file_name()?.to_str()?.contains(thread) {
            return Some(path);
        }
    }
    None
}

#[tokio::test]
async fn a_prompt_larger_than_the_pipe_reaches_codex_whole() {
    // A pipe holds 64 KiB: the rest is written as codex reads.
    let prompt: String = (0..300_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut d = Daemon::start().await;
    d.run("big", json!({ "prompt": prompt })).await;
    d.collect_one("big").await.assert_ok();
    let record = d.record("big");
    let got = record["stdin"].as_str().unwrap();
    assert_eq!(got.len(), prompt.len());
    assert!(got == prompt, "the prompt arrived altered");
    d.assert_clean_exit().await;
}
